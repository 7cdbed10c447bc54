//! `crusades corpus`: every known way to cheat an MFU harness, each run through the whole
//! `bench` pipeline, each expected to end a known way.
//!
//! A case is a directory in the corpus (submissions/exploits) with a `case.toml` that names its
//! attack, its class and how it must end: `rejected` with a gate or run-failure code (and
//! optionally the stage that stops it, words its detail must contain, and the seconds within
//! which the verdict must come), or, for an attack whose precondition can never occur (a run
//! that tells the warm-up from a timed run), `accepted`. The submission is the directory's guest
//! crate, or its `case.wat`: a component in the WebAssembly text format, for what a Rust guest
//! cannot express (arbitrary imports, a core module). Every case runs in
//! this one process, one after another, and the baseline runs last as a control: the harness
//! must come out of the whole corpus healthy and still accept an honest submission.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser};
use serde::{Deserialize, Serialize};

use crusades_results::record::{Record, Verdict};

use super::bench::{self, BenchArgs};
use crate::report;

#[derive(Args)]
pub struct CorpusArgs {
    /// The corpus: a directory of case crates, each with a case.toml.
    #[arg(long, default_value = "submissions/exploits")]
    pub dir: PathBuf,
    /// Only the cases whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Timed runs per case (after one warm-up): two, so that a case that behaves differently
    /// in a later run is seen doing it.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// The workload preset every case runs on.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The bench cache (workload, reference, compiled components).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Skip the control run of the baseline (../baseline next to the corpus) at the end.
    #[arg(long)]
    pub no_control: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The classes of attack (issue 6; README, "Security").
pub const CLASSES: [&str; 10] = [
    "partial-work",
    "early-return",
    "copying",
    "precision",
    "output-forgery",
    "run-dependent",
    "forged-handles",
    "reaching-outside",
    "resource-exhaustion",
    "numeric-plausibility",
];

/// Where a run can be stopped: loading the component, the warm-up, a timed run, or the
/// verification of the timed runs' outputs.
pub const STAGES: [&str; 4] = ["compile", "warm-up", "run", "verification"];

/// A case's case.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The attack, in one sentence.
    pub attack: String,
    pub class: String,
    /// `rejected`, or `accepted` for an attack that can never trigger.
    pub expected: String,
    /// The record's `error_code` a rejection must carry.
    #[serde(default)]
    pub code: Option<String>,
    /// The stage that must stop it.
    #[serde(default)]
    pub stage: Option<String>,
    /// Words the failure's or the failed gate's detail must contain (the import it names, the
    /// limit it hit).
    #[serde(default)]
    pub detail: Vec<String>,
    /// Limit overrides for this case, as `bench --limit KEY=VALUE`: a resource-exhaustion case
    /// hits a limit set low enough for CI rather than the validator's default.
    #[serde(default)]
    pub limits: Vec<String>,
    /// The documented bound: the verdict must come within this many seconds (build excluded).
    #[serde(default)]
    pub within_s: Option<f64>,
    /// `bench --peak-tflops` for this case: a stated peak below what the machine does makes an
    /// honest run claim more than is physically possible.
    #[serde(default)]
    pub peak_tflops: Option<f64>,
}

impl Manifest {
    fn check(&self) -> Result<(), String> {
        if !CLASSES.contains(&self.class.as_str()) {
            return Err(format!(
                "class {:?} is not one of {}",
                self.class,
                CLASSES.join(", ")
            ));
        }
        match (self.expected.as_str(), &self.code) {
            ("rejected", Some(_)) | ("accepted", None) => {}
            ("rejected", None) => return Err("expected = \"rejected\" needs a code".into()),
            ("accepted", Some(_)) => {
                return Err("expected = \"accepted\" takes no code".into());
            }
            (other, _) => {
                return Err(format!(
                    "expected must be \"rejected\" or \"accepted\", not {other:?}"
                ))
            }
        }
        if let Some(stage) = &self.stage {
            if !STAGES.contains(&stage.as_str()) {
                return Err(format!(
                    "stage {stage:?} is not one of {}",
                    STAGES.join(", ")
                ));
            }
        }
        let mut limits = crusades_sandbox::Limits::default();
        for l in &self.limits {
            limits.set(l).map_err(|e| format!("limits: {e}"))?;
        }
        if let Some(s) = self.within_s {
            if !(s.is_finite() && s > 0.0) {
                return Err(format!(
                    "within_s must be a positive number of seconds, not {s}"
                ));
            }
        }
        if let Some(p) = self.peak_tflops {
            if !(p.is_finite() && p > 0.0) {
                return Err(format!("peak_tflops must be a positive number, not {p}"));
            }
        }
        Ok(())
    }
}

/// One case found in the corpus directory.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// A case's submission in the WebAssembly text format, instead of a guest crate.
pub const WAT_FILE: &str = "case.wat";

impl Case {
    fn wat(&self) -> Option<PathBuf> {
        let path = self.dir.join(WAT_FILE);
        path.is_file().then_some(path)
    }
}

/// The cases under `dir`, by name: every subdirectory with a case.toml and either a guest crate
/// (Cargo.toml) or a `case.wat`. A malformed manifest is an input error that names the file.
pub fn discover(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        crate::InputError(format!(
            "{}: {e}; run from the repository root or pass --dir with the corpus directory",
            dir.display()
        ))
    })?;
    let mut cases = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let manifest_path = path.join("case.toml");
        if !manifest_path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest_path)?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| crate::InputError(format!("{}: {e}", manifest_path.display())))?;
        manifest
            .check()
            .map_err(|e| crate::InputError(format!("{}: {e}", manifest_path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (has_crate, has_wat) = (
            path.join("Cargo.toml").is_file(),
            path.join(WAT_FILE).is_file(),
        );
        if has_crate == has_wat {
            crate::bail_input!(
                "{}: a case is either a guest crate (Cargo.toml) or a {WAT_FILE}, {}",
                path.display(),
                if has_crate {
                    "not both"
                } else {
                    "and this has neither"
                }
            );
        }
        cases.push(Case {
            name,
            dir: path,
            manifest,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// How one case ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub case: String,
    pub class: String,
    pub attack: String,
    pub expected: String,
    /// `rejected (CODE at STAGE)`, `accepted`, or how the harness failed.
    pub got: String,
    pub verdict: Option<Verdict>,
    pub code: Option<String>,
    pub stage: Option<String>,
    /// The failed gate's or the run failure's detail.
    pub detail: String,
    pub as_expected: bool,
    /// The harness itself failed on this case (an error, not a verdict): never acceptable.
    pub harness_error: bool,
    /// Build and verdict.
    pub seconds: f64,
    /// From the built submission to the verdict: what `within_s` bounds.
    pub verdict_seconds: f64,
    /// The case's `within_s`.
    pub within_s: Option<f64>,
}

#[derive(Serialize)]
struct Summary {
    cases: usize,
    as_expected: usize,
    unexpected: Vec<String>,
    harness_errors: usize,
    slowest_case: Option<String>,
    slowest_seconds: f64,
    seconds: f64,
}

#[derive(Serialize)]
struct Report {
    outcomes: Vec<Outcome>,
    summary: Summary,
}

/// Exit status when a case did not end as its manifest says.
pub const UNEXPECTED: u8 = 3;

pub fn run(args: CorpusArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut cases = discover(&args.dir)?;
    if let Some(f) = &args.filter {
        cases.retain(|c| c.name.contains(f.as_str()));
    }
    if cases.is_empty() {
        crate::bail_input!("no case in {} matches", args.dir.display());
    }
    if !args.no_control {
        let baseline = args.dir.join("../baseline");
        if baseline.join("Cargo.toml").is_file() {
            cases.push(Case {
                name: "control: baseline".into(),
                dir: baseline,
                manifest: Manifest {
                    attack: "The honest baseline, after every case: the harness is still healthy."
                        .into(),
                    class: "control".into(),
                    expected: "accepted".into(),
                    code: None,
                    stage: None,
                    detail: Vec::new(),
                    limits: Vec::new(),
                    within_s: None,
                    peak_tflops: None,
                },
            });
        }
    }
    // The peak, the workload and the reference are cached before the first case, so that each
    // case's time to verdict is its own.
    let spinner = report::spinner("preparing the workload and the reference (cached afterwards)");
    let prepared =
        bench_args(common_bench_argv(&args.dir, &args)).and_then(|b| bench::prepare_caches(&b));
    spinner.finish_and_clear();
    prepared?;
    let bar = report::progress(cases.len() as u64, "corpus");
    report::set_quiet(true);
    let mut outcomes = Vec::with_capacity(cases.len());
    for case in &cases {
        bar.set_message(case.name.clone());
        outcomes.push(run_case(case, &args));
        bar.inc(1);
    }
    report::set_quiet(false);
    bar.finish_and_clear();

    // Time to verdict: a case's build is cargo's time, not the harness's.
    let slowest = outcomes
        .iter()
        .max_by(|a, b| a.verdict_seconds.total_cmp(&b.verdict_seconds));
    let summary = Summary {
        cases: outcomes.len(),
        as_expected: outcomes.iter().filter(|o| o.as_expected).count(),
        unexpected: outcomes
            .iter()
            .filter(|o| !o.as_expected)
            .map(|o| o.case.clone())
            .collect(),
        harness_errors: outcomes.iter().filter(|o| o.harness_error).count(),
        slowest_case: slowest.map(|o| o.case.clone()),
        slowest_seconds: slowest.map_or(0.0, |o| o.verdict_seconds),
        seconds: started.elapsed().as_secs_f64(),
    };
    let ok = summary.unexpected.is_empty();
    let report = Report { outcomes, summary };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if ok { 0 } else { UNEXPECTED })
}

/// Builds and benches one case, and compares how it ended with its manifest.
fn run_case(case: &Case, args: &CorpusArgs) -> Outcome {
    let started = Instant::now();
    let m = &case.manifest;
    let expected = match (&m.code, &m.stage) {
        (Some(code), Some(stage)) => format!("{} ({code} at {stage})", m.expected),
        (Some(code), None) => format!("{} ({code})", m.expected),
        _ => m.expected.clone(),
    };
    let mut outcome = Outcome {
        case: case.name.clone(),
        class: m.class.clone(),
        attack: m.attack.clone(),
        expected,
        got: String::new(),
        verdict: None,
        code: None,
        stage: None,
        detail: String::new(),
        as_expected: false,
        harness_error: false,
        seconds: 0.0,
        verdict_seconds: 0.0,
        within_s: m.within_s,
    };
    match bench_case(case, args) {
        Ok((record, verdict_s)) => {
            let (code, stage, detail) = how_it_ended(&record);
            outcome.got = match (&record.verdict, &code, &stage) {
                (Verdict::Accepted, _, _) => "accepted".into(),
                (Verdict::Rejected, Some(c), Some(s)) => format!("rejected ({c} at {s})"),
                (Verdict::Rejected, _, _) => "rejected".into(),
            };
            let verdict_ok = matches!(
                (&record.verdict, m.expected.as_str()),
                (Verdict::Accepted, "accepted") | (Verdict::Rejected, "rejected")
            );
            let code_ok = m.code.is_none() || m.code == code;
            let stage_ok = m.stage.is_none() || m.stage == stage;
            let missing: Vec<&str> = m
                .detail
                .iter()
                .filter(|w| !detail.contains(w.as_str()))
                .map(String::as_str)
                .collect();
            let late = m.within_s.filter(|bound| verdict_s > *bound);
            outcome.as_expected =
                verdict_ok && code_ok && stage_ok && missing.is_empty() && late.is_none();
            outcome.verdict = Some(record.verdict);
            outcome.code = code;
            outcome.stage = stage;
            outcome.verdict_seconds = verdict_s;
            outcome.detail = detail;
            if !missing.is_empty() {
                outcome.detail = format!(
                    "the detail does not name {}: {}",
                    missing.join(", "),
                    outcome.detail
                );
            }
            if let Some(bound) = late {
                outcome.detail = format!(
                    "the verdict took {verdict_s:.1} s, past the case's bound of {bound} s; {}",
                    outcome.detail
                );
            }
        }
        Err(e) => {
            outcome.got = "harness error".into();
            outcome.detail = format!("{e:#}");
            outcome.harness_error = true;
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// Builds the case's submission and benches it; returns the record and the seconds from the
/// built submission to the verdict.
fn bench_case(case: &Case, args: &CorpusArgs) -> anyhow::Result<(Record, f64)> {
    let built = tempfile::Builder::new()
        .prefix("crusades-case-")
        .tempdir()?;
    let component = match case.wat() {
        Some(wat) => assemble(&wat, built.path())?,
        None => super::build::build(&case.dir, None, false)?.component,
    };
    let m = &case.manifest;
    let mut argv = common_bench_argv(&component, args);
    for l in &m.limits {
        argv.extend(["--limit".into(), l.clone()]);
    }
    if let Some(p) = m.peak_tflops {
        argv.extend(["--peak-tflops".into(), p.to_string()]);
    }
    let started = Instant::now();
    let record = bench::evaluate(&bench_args(argv)?)?;
    Ok((record, started.elapsed().as_secs_f64()))
}

/// `bench SUBMISSION` with the corpus's preset, device, runs and cache.
fn common_bench_argv(submission: &Path, args: &CorpusArgs) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "bench".into(),
        submission.display().to_string(),
        "--preset".into(),
        args.preset.clone(),
        "--device".into(),
        args.device.clone(),
        "--runs".into(),
        args.runs.to_string(),
        "--warmup".into(),
        "1".into(),
        "--json".into(),
    ];
    if let Some(cache) = &args.cache {
        argv.extend(["--cache".into(), cache.display().to_string()]);
    }
    argv
}

/// Parses `argv` with bench's own flag parser, so that a case runs with exactly bench's
/// defaults.
fn bench_args(argv: Vec<String>) -> anyhow::Result<BenchArgs> {
    #[derive(Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }
    Bench::try_parse_from(&argv)
        .map(|b| b.args)
        .map_err(|e| anyhow::anyhow!("internal: the corpus's bench flags: {e}"))
}

/// `case.wat` → a binary in `dir`. The text may spell a component or a core module: the
/// sandbox, not the assembler, decides what it accepts.
fn assemble(wat: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let bytes =
        wat::parse_file(wat).map_err(|e| crate::InputError(format!("{}: {e}", wat.display())))?;
    let path = dir.join("case.wasm");
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// The record's error code, the stage that stopped the submission, and the detail.
fn how_it_ended(r: &Record) -> (Option<String>, Option<String>, String) {
    if let Some(f) = &r.failure {
        let stage = if f.run == "compile" {
            "compile"
        } else if f.run.starts_with("warm-up") {
            "warm-up"
        } else {
            "run"
        };
        return (Some(f.code.clone()), Some(stage.into()), f.message.clone());
    }
    match crate::gates::first_failure(&r.gates) {
        Some(g) => (
            Some(g.code.as_str().into()),
            Some("verification".into()),
            g.detail.clone(),
        ),
        None => (None, None, String::new()),
    }
}

fn print_table(r: &Report) {
    let widest = |f: fn(&Outcome) -> &str, min: usize| {
        r.outcomes
            .iter()
            .map(|o| f(o).chars().count())
            .max()
            .unwrap_or(0)
            .max(min)
    };
    let (cw, kw, ew, gw) = (
        widest(|o| &o.case, 4),
        widest(|o| &o.class, 5),
        widest(|o| &o.expected, 8),
        widest(|o| &o.got, 3),
    );
    println!(
        "  {:<cw$}  {:<kw$}  {:<ew$}  {:<gw$}  {:>9}  {:>9}",
        "case", "class", "expected", "got", "verdict", "bound"
    );
    for o in &r.outcomes {
        println!(
            "{} {:<cw$}  {:<kw$}  {:<ew$}  {:<gw$}  {:>9}  {:>9}",
            if o.as_expected { "✓" } else { "✗" },
            o.case,
            o.class,
            o.expected,
            o.got,
            report::duration(o.verdict_seconds),
            o.within_s.map(report::duration).unwrap_or_default()
        );
        if !o.as_expected && !o.detail.is_empty() {
            println!("    {}", o.detail);
        }
    }
    let s = &r.summary;
    println!(
        "\n{} of {} cases ended as expected · {} harness errors · slowest verdict {} ({}) · {} in all, builds included",
        s.as_expected,
        s.cases,
        s.harness_errors,
        s.slowest_case.as_deref().unwrap_or("-"),
        report::duration(s.slowest_seconds),
        report::duration(s.seconds)
    );
    if !s.unexpected.is_empty() {
        println!("not as expected: {}", s.unexpected.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        m.check().map(|()| m)
    }

    #[test]
    fn manifests_are_checked_for_class_expectation_and_stage() {
        let ok = manifest(
            "attack = \"x\"\nclass = \"partial-work\"\nexpected = \"rejected\"\ncode = \"token-count\"\n",
        )
        .unwrap();
        assert_eq!(ok.code.as_deref(), Some("token-count"));
        assert!(
            manifest("attack = \"x\"\nclass = \"run-dependent\"\nexpected = \"accepted\"\n")
                .is_ok()
        );
        for (bad, why) in [
            ("attack = \"x\"\nclass = \"vibes\"\nexpected = \"rejected\"\ncode = \"a\"\n", "class"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\n", "needs a code"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"accepted\"\ncode = \"a\"\n", "no code"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"maybe\"\n", "expected"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\ncode = \"a\"\nstage = \"later\"\n", "stage"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\ncode = \"a\"\nnote = 1\n", "unknown field"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\ncode = \"a\"\nlimits = [\"memory=1\"]\n", "unknown limit 'memory'"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\ncode = \"a\"\nwithin_s = -1\n", "within_s"),
            ("attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\ncode = \"a\"\npeak_tflops = 0\n", "peak_tflops"),
        ] {
            let e = manifest(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_committed_corpus_is_well_formed_and_covers_every_class() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../submissions/exploits");
        let cases = discover(&dir).unwrap();
        let members = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        for c in &cases {
            let listed = members.contains(&format!("\"{}\"", c.name));
            assert_eq!(
                listed,
                c.wat().is_none(),
                "{}: a guest crate is a member of the corpus workspace, a case.wat is not",
                c.name
            );
        }
        for class in CLASSES {
            assert!(
                cases.iter().any(|c| c.manifest.class == class),
                "no case of class {class}"
            );
        }
        for c in cases
            .iter()
            .filter(|c| c.manifest.class == "resource-exhaustion")
        {
            assert!(
                c.manifest.within_s.is_some() && !c.manifest.detail.is_empty(),
                "{}: a resource-exhaustion case documents its bound (within_s) and the limit it hits (detail)",
                c.name
            );
        }
    }

    #[test]
    fn a_case_is_a_crate_or_a_wat_file_never_both_or_neither() {
        let root = tempfile::tempdir().unwrap();
        let case = root.path().join("c");
        std::fs::create_dir(&case).unwrap();
        std::fs::write(
            case.join("case.toml"),
            "attack = \"x\"\nclass = \"copying\"\nexpected = \"rejected\"\ncode = \"a\"\n",
        )
        .unwrap();
        let e = discover(root.path()).unwrap_err().to_string();
        assert!(e.contains("neither"), "{e}");
        std::fs::write(case.join(WAT_FILE), "(component)").unwrap();
        assert_eq!(discover(root.path()).unwrap().len(), 1);
        std::fs::write(case.join("Cargo.toml"), "").unwrap();
        let e = discover(root.path()).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn wat_cases_assemble_and_bad_text_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.wat");
        std::fs::write(&good, "(component (import \"a:b/c\" (instance)))").unwrap();
        let bytes = std::fs::read(assemble(&good, dir.path()).unwrap()).unwrap();
        assert_eq!(&bytes[..4], b"\0asm");
        let bad = dir.path().join("bad.wat");
        std::fs::write(&bad, "(component (oops))").unwrap();
        let e = assemble(&bad, dir.path()).unwrap_err().to_string();
        assert!(e.contains("bad.wat"), "{e}");
    }
}
