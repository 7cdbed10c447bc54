//! `crusades reproduce RECORD.json`: re-run the evaluation a record describes and compare.
//!
//! The record names everything the evaluation depended on: the submission by sha256 (rebuilt
//! from its source, which must hash the same), the workload by its full configuration (checked
//! against its hash), the device, the number of warm-up and timed runs, and the gate thresholds.
//! The reproduction runs `bench`'s own evaluation with those, then compares:
//!
//! - the verdict and the error code, exactly;
//! - every window's loss, within the record's `loss_abs` gate threshold: the math is
//!   deterministic, so on one machine the losses agree to the bit, and across machines to float
//!   rounding, far below the threshold;
//! - the score (the median MFU) within [`tolerance`], on the same hardware only. On other
//!   hardware the score is shown, not compared: that is not a divergence.
//!
//! On the same hardware the MFU is computed with the record's peak, so that the comparison is
//! one of time only, not of two CPU calibrations.

use std::path::{Path, PathBuf};

use clap::{Args, Parser};
use serde::Serialize;

use crusades_reference::config::{CorpusSpec, WorkloadConfig};
use crusades_results::record::{self, Record, Verdict};
use crusades_sandbox::runner::sha256_hex;

use super::bench::{self, BenchArgs};
use super::workload;
use crate::{bail_input, gates, hardware, report};

#[derive(Args)]
#[command(after_help = AFTER_HELP)]
pub struct ReproduceArgs {
    /// A record written by `crusades bench --out` (e.g. results/records/*.json).
    pub record: PathBuf,
    /// Timed runs (default: as many as the record has).
    #[arg(long)]
    pub runs: Option<usize>,
    /// The submission: a crate directory (rebuilt) or a component. Default: the record's
    /// `submission.source`, found relative to the current directory, the record's directory and
    /// its parents, or this checkout.
    #[arg(long)]
    pub submission: Option<PathBuf>,
    /// The token file, for a record that trained on one (its sha256 is checked).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// libtorch intra-op threads in the workers (default: libtorch's choice, all cores, as
    /// `bench` by default).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The peak in TFLOP/s. Default: the record's on the same hardware, so that the scores
    /// compare time only; elsewhere, this machine's (as `bench` finds it).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// The largest |ln(MFU now / MFU recorded)| that still counts as the same score, instead of
    /// the one computed from the two records' spreads (see below).
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// The bench cache (default: $CRUSADES_CACHE or ~/.cache/crusades).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Write the reproduction's own record (JSON) to this file.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print a JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Outcome: REPRODUCED (exit 0) when the verdict and error code match, every window's loss is within \
the record's loss_abs gate, and, on the same hardware (CPU model, logical CPUs and libtorch \
threads; on CUDA the GPU's name), the median MFU is within the tolerance. DIVERGED (exit 3) \
otherwise, or when the submission rebuilt from its source does not hash to the record's sha256, \
or the record's workload does not hash to its workload hash here. Exit 2: a malformed record or \
a missing submission; 1: the harness failed.

Tolerance: |ln(MFU now / MFU recorded)| <= clamp(3 x sqrt(se1^2 + se2^2), 0.25, 0.69), where \
se = 1.2533 x cv / sqrt(runs) is the standard error of a median of `runs` timings with \
coefficient of variation cv, taken from each record. The floor (about ±25%) covers the spread \
of medians between separate invocations measured on the 2-core CI machine; the cap (a factor of \
2) keeps a noisy record from accepting any score. results/records/README.md has the figures.";

/// The standard error of the median of n normal samples is √(π/2)·σ/√n.
const MEDIAN_SE: f64 = 1.253_314;
/// Standard errors of the difference allowed: about a 0.3 % false alarm for normal noise.
const K: f64 = 3.0;
/// The smallest tolerance on |ln(now/recorded)|: +28 % / −22 %. Measured on the 2-core CI
/// machine (Intel Xeon, 2 libtorch threads; results/records/README.md has every figure), the
/// medians of separate `bench` invocations spread further than each one's cv predicts, and a
/// record of one run has cv 0: the baseline on tiny, 9 benches and 2 reproductions, medians
/// 4.50–5.57 % MFU (sd of ln 0.063, worst pair 0.213, taken while another build ran); on small
/// 14.45–14.72 % quiet and 12.20 % beside a build (0.188); fast 0.059 (tiny) and 0.058 (small).
/// 0.25 clears the worst pair with a margin and is 4 sd of the tiny baseline's spread.
pub const TOLERANCE_FLOOR: f64 = 0.25;
/// The largest: a factor of 2 (ln 2). A record with a large cv would otherwise accept anything,
/// and no quiet measurement above came near it. A busy machine does (libtorch's threads spin:
/// tiny's median fell 5–35× beside two compilers), which no tolerance should absorb; the report
/// shows the load average for that reason.
pub const TOLERANCE_CAP: f64 = std::f64::consts::LN_2;

/// How far apart, as |ln(now/recorded)|, two median MFUs may be and still be the same score.
pub fn tolerance(recorded_cv: f64, recorded_runs: u64, now_cv: f64, now_runs: u64) -> f64 {
    let se = |cv: f64, runs: u64| {
        let cv = if cv.is_finite() { cv.max(0.0) } else { 0.0 };
        MEDIAN_SE * cv / (runs.max(1) as f64).sqrt()
    };
    let combined = se(recorded_cv, recorded_runs).hypot(se(now_cv, now_runs));
    (K * combined).clamp(TOLERANCE_FLOOR, TOLERANCE_CAP)
}

/// Exit status when the reproduction diverged.
pub const DIVERGED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Reproduced,
    Diverged,
}

/// Why a reproduction diverged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// submission, workload, verdict, error-code, losses or score.
    pub code: &'static str,
    pub message: String,
}

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub verdict: Verdict,
    pub error_code: Option<String>,
    pub mfu: Option<f64>,
    pub mfu_cv: Option<f64>,
    pub runs: u64,
    pub tokens_per_s: Option<f64>,
    pub wall_s: Option<f64>,
    pub hardware: String,
    pub peak_flops_per_s: f64,
}

impl Side {
    fn of(r: &Record) -> Self {
        let s = r.score.as_ref();
        Side {
            verdict: r.verdict,
            error_code: r.error_code.clone(),
            mfu: s.map(|s| s.mfu),
            mfu_cv: s.map(|s| s.mfu_cv),
            runs: r.runs.len() as u64,
            tokens_per_s: s.map(|s| s.tokens_per_s),
            wall_s: s.map(|s| s.wall_s),
            hardware: describe_hardware(&r.hardware, &r.workload.device),
            peak_flops_per_s: r.peak.flops_per_s,
        }
    }
}

/// The score comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreCheck {
    /// False on other hardware (the score is shown, not compared).
    pub compared: bool,
    /// now / recorded − 1.
    pub relative_delta: f64,
    /// ln(now / recorded).
    pub log_ratio: f64,
    /// The bound on |log_ratio|.
    pub tolerance: f64,
    /// How the tolerance was set: `spread` (the formula) or `--tolerance`.
    pub tolerance_source: &'static str,
    pub within: bool,
}

/// The per-window loss comparison, over every pair of recorded and reproduced runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossCheck {
    pub max_abs_delta: f64,
    pub windows: usize,
    /// The record's loss_abs gate threshold.
    pub threshold: f64,
    pub within: bool,
}

/// Everything compared, and the outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
    pub hardware_match: bool,
    /// "recorded on X, here Y" when the hardware differs.
    pub hardware_mismatch: Option<String>,
    pub score: Option<ScoreCheck>,
    pub losses: Option<LossCheck>,
}

/// Compares a reproduction with its record. `tolerance_override` replaces [`tolerance`].
pub fn compare(recorded: &Record, now: &Record, tolerance_override: Option<f64>) -> Comparison {
    let mut reasons = Vec::new();
    let device = &recorded.workload.device;
    let hardware_mismatch = hardware_difference(&recorded.hardware, &now.hardware, device);
    let hardware_match = hardware_mismatch.is_none();
    if recorded.verdict != now.verdict {
        reasons.push(Reason {
            code: "verdict",
            message: format!(
                "the verdict is {} now, {} in the record",
                verdict_word(now.verdict),
                verdict_word(recorded.verdict)
            ),
        });
    }
    if recorded.error_code != now.error_code {
        reasons.push(Reason {
            code: "error-code",
            message: format!(
                "the error code is {} now, {} in the record",
                code_word(&now.error_code),
                code_word(&recorded.error_code)
            ),
        });
    }
    let losses = if recorded.runs.is_empty() || now.runs.is_empty() {
        None
    } else {
        let threshold = recorded
            .evaluation
            .thresholds
            .get("loss_abs")
            .copied()
            .unwrap_or_else(|| gates::Thresholds::default().loss_abs);
        match max_loss_delta(&recorded.runs, &now.runs) {
            Ok((delta, windows)) => {
                let within = delta <= threshold;
                if !within {
                    reasons.push(Reason {
                        code: "losses",
                        message: format!(
                            "a window's loss differs from the record's by {delta:.3e}, beyond the \
                             loss_abs gate's {threshold}"
                        ),
                    });
                }
                Some(LossCheck {
                    max_abs_delta: delta,
                    windows,
                    threshold,
                    within,
                })
            }
            Err(message) => {
                reasons.push(Reason {
                    code: "losses",
                    message,
                });
                None
            }
        }
    };
    let both_accepted = recorded.verdict == Verdict::Accepted && now.verdict == Verdict::Accepted;
    let score = match (&recorded.score, &now.score) {
        (Some(a), Some(b)) if a.mfu > 0.0 && b.mfu > 0.0 && both_accepted => {
            let (tol, source) = match tolerance_override {
                Some(t) => (t, "--tolerance"),
                None => (tolerance(a.mfu_cv, a.runs, b.mfu_cv, b.runs), "spread"),
            };
            let log_ratio = (b.mfu / a.mfu).ln();
            let within = log_ratio.abs() <= tol;
            if hardware_match && !within {
                reasons.push(Reason {
                    code: "score",
                    message: format!(
                        "the MFU is {} now, {} in the record ({:+.1}%), beyond the tolerance \
                         (|ln ratio| {:.3} > {:.3}, ±{})",
                        report::percent(b.mfu),
                        report::percent(a.mfu),
                        (b.mfu / a.mfu - 1.0) * 100.0,
                        log_ratio.abs(),
                        tol,
                        tolerance_words(tol)
                    ),
                });
            }
            Some(ScoreCheck {
                compared: hardware_match,
                relative_delta: b.mfu / a.mfu - 1.0,
                log_ratio,
                tolerance: tol,
                tolerance_source: source,
                within,
            })
        }
        _ => None,
    };
    Comparison {
        outcome: if reasons.is_empty() {
            Outcome::Reproduced
        } else {
            Outcome::Diverged
        },
        reasons,
        hardware_match,
        hardware_mismatch,
        score,
        losses,
    }
}

/// The largest |loss now − loss recorded| over every pair of runs and every window, and the
/// number of windows; an error when the runs have different numbers of windows. Two NaNs agree
/// (the nan-inf gate judges them); a NaN against a number is an infinite difference.
pub fn max_loss_delta(
    recorded: &[record::Run],
    now: &[record::Run],
) -> Result<(f64, usize), String> {
    let windows = recorded.first().map_or(0, |r| r.losses.len());
    let mut worst: f64 = 0.0;
    for a in recorded {
        for b in now {
            if a.losses.len() != b.losses.len() || a.losses.len() != windows {
                return Err(format!(
                    "a run has {} windows' losses now, {} in the record",
                    b.losses.len(),
                    a.losses.len()
                ));
            }
            for (x, y) in a.losses.iter().zip(&b.losses) {
                let d = match (x.is_nan(), y.is_nan()) {
                    (true, true) => 0.0,
                    (false, false) if x == y => 0.0,
                    (false, false) => (x - y).abs(),
                    _ => f64::INFINITY,
                };
                worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
            }
        }
    }
    Ok((worst, windows))
}

/// Why two machines count as different hardware for the score, or None when they are the same.
/// On CUDA the GPU's name decides; on CPU its model, the CPUs the process may use and
/// libtorch's thread count, which together set the CPU's GEMM rate.
pub fn hardware_difference(
    recorded: &record::Hardware,
    here: &record::Hardware,
    device: &str,
) -> Option<String> {
    let same = if device.starts_with("cuda") {
        recorded.gpu.as_ref().map(|g| &g.name) == here.gpu.as_ref().map(|g| &g.name)
    } else {
        recorded.cpu == here.cpu
    };
    (!same).then(|| {
        format!(
            "recorded on {}, here {}",
            describe_hardware(recorded, device),
            describe_hardware(here, device)
        )
    })
}

pub fn describe_hardware(hw: &record::Hardware, device: &str) -> String {
    if device.starts_with("cuda") {
        if let Some(g) = &hw.gpu {
            return g.name.clone();
        }
        return "no GPU".into();
    }
    format!(
        "{} ({} logical CPUs, {} libtorch threads)",
        hw.cpu.model, hw.cpu.logical_cpus, hw.cpu.torch_threads
    )
}

/// `±25.0%` / `−20.0%`: the tolerance on the log ratio as the relative bounds it allows.
fn tolerance_words(tol: f64) -> String {
    let up = tol.exp() - 1.0;
    let down = 1.0 - (-tol).exp();
    format!("+{:.1}% / −{:.1}%", up * 100.0, down * 100.0)
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Accepted => "ACCEPTED",
        Verdict::Rejected => "REJECTED",
    }
}

fn code_word(c: &Option<String>) -> String {
    c.clone().unwrap_or_else(|| "none".into())
}

/// The `--set` overrides that rebuild `config` from its preset: every settable field, so that
/// nothing depends on the preset table being what it was when the record was made.
pub fn overrides(config: &WorkloadConfig) -> Vec<String> {
    let m = &config.model;
    let h = &config.hparams;
    let mut out = vec![
        format!("vocab={}", m.vocab),
        format!("d_model={}", m.d_model),
        format!("layers={}", m.layers),
        format!("heads={}", m.heads),
        format!("kv_heads={}", m.kv_heads),
        format!("ffn={}", m.ffn),
        format!("seq_len={}", m.seq_len),
        format!("seqs_per_window={}", config.seqs_per_window),
        format!("windows={}", config.windows),
        format!("peers={}", config.peers),
        format!("uid={}", config.uid),
        format!("seed={}", config.seed),
        // Rust prints the shortest decimal that parses back to the same f64.
        format!("lr={}", h.lr),
        format!("weight_decay={}", h.weight_decay),
        format!("momentum_decay={}", h.momentum_decay),
        format!("chunk={}", h.chunk),
        format!("topk={}", h.topk),
        format!("bins={}", h.bins),
        format!("quant_range_sigmas={}", h.quant_range_sigmas),
        format!("eval_lr_factor={}", h.eval_lr_factor),
    ];
    if let CorpusSpec::Synthetic { seed, pages } = &config.corpus {
        out.push(format!("corpus_seed={seed}"));
        out.push(format!("corpus_pages={pages}"));
    }
    out
}

/// What the report says about the submission.
#[derive(Debug, Clone, Serialize)]
struct SubmissionCheck {
    /// What was rebuilt or read.
    source: String,
    component: String,
    recorded_sha256: String,
    sha256: String,
    matches: bool,
    /// `rustc --version` here, when a crate was rebuilt.
    rustc: Option<String>,
    /// The build's warnings about where its sha256 may come from.
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    outcome: Outcome,
    reasons: &'a [Reason],
    record: String,
    submission: &'a SubmissionCheck,
    workload: WorkloadLine<'a>,
    recorded: Side,
    now: Option<Side>,
    hardware_match: Option<bool>,
    hardware_mismatch: Option<&'a str>,
    score: Option<&'a ScoreCheck>,
    losses: Option<&'a LossCheck>,
    /// Where the peak used now came from: `record` or `here`.
    peak_from: Option<&'static str>,
    /// The 1-minute load average before and after the runs (a busy machine slows every run).
    load_average: Option<[f64; 2]>,
    harness: HarnessLine<'a>,
}

#[derive(Serialize)]
struct WorkloadLine<'a> {
    preset: &'a str,
    hash: &'a str,
    device: &'a str,
    windows: u64,
    tokens_per_window: u64,
}

#[derive(Serialize)]
struct HarnessLine<'a> {
    recorded: &'a str,
    here: String,
    recorded_contract: &'a str,
    contract: &'static str,
}

pub fn run(args: ReproduceArgs) -> anyhow::Result<u8> {
    let recorded = super::results::read_record(&args.record)?;
    if args.runs == Some(0) {
        bail_input!("--runs must be at least 1");
    }
    if let Some(t) = args.tolerance {
        if !(t.is_finite() && t >= 0.0) {
            bail_input!("--tolerance must be a non-negative number (a bound on |ln ratio|)");
        }
    }
    let config: WorkloadConfig = match serde_json::from_value(recorded.workload.config.clone()) {
        Ok(c) => c,
        Err(e) => bail_input!(
            "{}: workload.config is not a workload this harness knows: {e}",
            args.record.display()
        ),
    };

    // 1. The submission: rebuilt from its source, and it must be the recorded bytes.
    let submission = check_submission(&args, &recorded)?;
    let workload_line = WorkloadLine {
        preset: &recorded.workload.preset,
        hash: &recorded.workload.hash,
        device: &recorded.workload.device,
        windows: recorded.workload.windows,
        tokens_per_window: recorded.workload.tokens_per_window,
    };
    let harness_line = HarnessLine {
        recorded: &recorded.harness.version,
        here: env!("CARGO_PKG_VERSION").into(),
        recorded_contract: &recorded.harness.contract_version,
        contract: crusades_sandbox::CONTRACT_VERSION,
    };
    let mut report = Report {
        outcome: Outcome::Diverged,
        reasons: &[],
        record: args.record.display().to_string(),
        submission: &submission,
        workload: workload_line,
        recorded: Side::of(&recorded),
        now: None,
        hardware_match: None,
        hardware_mismatch: None,
        score: None,
        losses: None,
        peak_from: None,
        load_average: None,
        harness: harness_line,
    };
    if !submission.matches {
        let reasons = [Reason {
            code: "submission",
            message: format!(
                "{} hashes to sha256 {} here, not the record's {}: its sources changed, or {}",
                submission.source,
                submission.sha256,
                submission.recorded_sha256,
                match &submission.rustc {
                    Some(v) => format!("another toolchain built the record's ({v} here)"),
                    None => "it is another file".into(),
                }
            ),
        }];
        report.reasons = &reasons;
        print_report(&report, &args)?;
        return Ok(DIVERGED);
    }

    // 2. The workload, from the record's configuration; it must hash as recorded.
    let workload_args = workload_args(&config, &args)?;
    let (resolved, _) = workload_args.resolve()?;
    if resolved != config {
        if let (CorpusSpec::File { sha256: want, .. }, CorpusSpec::File { sha256: got, .. }) =
            (&config.corpus, &resolved.corpus)
        {
            if want != got {
                bail_input!("--corpus: the token file's sha256 is {got}, the record's is {want}");
            }
        }
        anyhow::bail!(
            "internal: the record's workload could not be rebuilt from its settings \
             ({config:?} became {resolved:?})"
        );
    }
    if resolved.workload_hash() != recorded.workload.hash {
        let reasons = [Reason {
            code: "workload",
            message: format!(
                "the record's workload configuration hashes to {} here, not to its workload hash \
                 {}: the workload format changed (harness {} recorded it, this is {})",
                resolved.workload_hash(),
                recorded.workload.hash,
                recorded.harness.version,
                env!("CARGO_PKG_VERSION")
            ),
        }];
        report.reasons = &reasons;
        print_report(&report, &args)?;
        return Ok(DIVERGED);
    }

    // 3. The same evaluation: bench's, with the record's runs, warm-ups, gates and device. On
    // the same hardware, with the record's peak.
    let device = crate::commands::setup_device(&recorded.workload.device, None)?;
    let here = bench::hardware_info(&hardware::detect(device));
    let same_hardware =
        hardware_difference(&recorded.hardware, &here, &recorded.workload.device).is_none();
    let peak_tflops = args.peak_tflops.or(if same_hardware {
        Some(recorded.peak.flops_per_s / 1e12)
    } else {
        None
    });
    let bench_args = bench_args(&args, &recorded, &submission, workload_args, peak_tflops)?;
    let load_before = load_average();
    let now = bench::evaluate(&bench_args)?;
    let load_after = load_average();
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&now)?;
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write the record to {}: {e}", path.display()))?;
    }

    // 4. The comparison.
    let comparison = compare(&recorded, &now, args.tolerance);
    report.outcome = comparison.outcome;
    report.reasons = &comparison.reasons;
    report.now = Some(Side::of(&now));
    report.hardware_match = Some(comparison.hardware_match);
    report.hardware_mismatch = comparison.hardware_mismatch.as_deref();
    report.score = comparison.score.as_ref();
    report.losses = comparison.losses.as_ref();
    report.peak_from = Some(if peak_tflops.is_some() && args.peak_tflops.is_none() {
        "record"
    } else if args.peak_tflops.is_some() {
        "--peak-tflops"
    } else {
        "here"
    });
    report.load_average = load_before.zip(load_after).map(|(a, b)| [a, b]);
    print_report(&report, &args)?;
    Ok(match comparison.outcome {
        Outcome::Reproduced => 0,
        Outcome::Diverged => DIVERGED,
    })
}

/// Finds the submission, rebuilds a crate, and hashes the component.
fn check_submission(args: &ReproduceArgs, recorded: &Record) -> anyhow::Result<SubmissionCheck> {
    let path = match &args.submission {
        Some(p) => p.clone(),
        None => match locate(&recorded.submission.source, &args.record) {
            Some(p) => p,
            None => bail_input!(
                "the record's submission source {:?} is not here (looked relative to the current \
                 directory, the record's directory and its parents, and this checkout); pass \
                 --submission PATH: a crate directory or a component whose sha256 is {}",
                recorded.submission.source,
                recorded.submission.sha256
            ),
        },
    };
    let (component, rustc, warnings) = if path.is_dir() {
        let built = super::build::build(&path, None, !args.json)?;
        (built.component, rustc_version(), built.warnings)
    } else {
        (
            super::build::resolve_submission(&path, !args.json)?,
            None,
            Vec::new(),
        )
    };
    let bytes = std::fs::read(&component)
        .map_err(|e| crate::InputError(format!("cannot read {}: {e}", component.display())))?;
    let sha256 = sha256_hex(&bytes);
    Ok(SubmissionCheck {
        source: path.display().to_string(),
        component: component.display().to_string(),
        matches: sha256 == recorded.submission.sha256,
        recorded_sha256: recorded.submission.sha256.clone(),
        sha256,
        rustc,
        warnings,
    })
}

/// The record's `submission.source` as a path that exists: absolute, or relative to the
/// current directory, to the record's directory or one of its parents (a published record's
/// source is relative to the repository root), or to this checkout.
pub fn locate(source: &str, record: &Path) -> Option<PathBuf> {
    let source = Path::new(source);
    if source.as_os_str().is_empty() {
        return None;
    }
    if source.is_absolute() {
        return source.exists().then(|| source.to_path_buf());
    }
    // The empty base: relative to the current directory, and shown as the record says.
    let mut bases = vec![PathBuf::new()];
    if let Ok(dir) = record
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .canonicalize()
    {
        bases.extend(dir.ancestors().map(Path::to_path_buf));
    }
    if let Some(checkout) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        bases.push(checkout.to_path_buf());
    }
    bases
        .into_iter()
        .map(|b| b.join(source))
        .find(|p| p.exists())
}

fn rustc_version() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn workload_args(
    config: &WorkloadConfig,
    args: &ReproduceArgs,
) -> anyhow::Result<workload::WorkloadArgs> {
    let (corpus, token_dtype) = match (&config.corpus, &args.corpus) {
        (CorpusSpec::Synthetic { .. }, None) => (None, None),
        (CorpusSpec::Synthetic { .. }, Some(_)) => {
            bail_input!("--corpus: the record trained on the synthetic corpus, not a token file")
        }
        (CorpusSpec::File { dtype, .. }, Some(path)) => (Some(path.clone()), Some(dtype.clone())),
        (CorpusSpec::File { sha256, tokens, .. }, None) => bail_input!(
            "the record trained on a token file ({tokens} tokens, sha256 {sha256}); pass it with \
             --corpus FILE"
        ),
    };
    Ok(workload::WorkloadArgs {
        preset: config.preset.clone(),
        windows: None,
        uid: None,
        seed: None,
        peers: None,
        overrides: overrides(config),
        corpus,
        token_dtype,
    })
}

/// bench's arguments for the record's evaluation, through bench's own parser so that whatever
/// the record does not fix (the limits) takes exactly bench's defaults.
fn bench_args(
    args: &ReproduceArgs,
    recorded: &Record,
    submission: &SubmissionCheck,
    workload: workload::WorkloadArgs,
    peak_tflops: Option<f64>,
) -> anyhow::Result<BenchArgs> {
    let runs = args
        .runs
        .unwrap_or_else(|| (recorded.evaluation.timed_runs as usize).max(1));
    let mut argv: Vec<String> = vec![
        "bench".into(),
        submission.component.clone(),
        "--device".into(),
        recorded.workload.device.clone(),
        "--runs".into(),
        runs.to_string(),
        "--warmup".into(),
        recorded.evaluation.warmup_runs.to_string(),
    ];
    if args.json {
        argv.push("--json".into());
    }
    if let Some(t) = args.threads {
        argv.extend(["--threads".into(), t.to_string()]);
    }
    if let Some(p) = peak_tflops {
        argv.extend(["--peak-tflops".into(), p.to_string()]);
    }
    if let Some(c) = &args.cache {
        argv.extend(["--cache".into(), c.display().to_string()]);
    }
    let known = gates::Thresholds::default().as_map();
    for (key, value) in &recorded.evaluation.thresholds {
        if !known.contains_key(key) {
            bail_input!(
                "{}: the record's gate threshold {key:?} is not one this harness has (it has {})",
                args.record.display(),
                known.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        argv.extend(["--gate".into(), format!("{key}={value}")]);
    }
    #[derive(Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }
    let mut bench = Bench::try_parse_from(&argv)
        .map(|b| b.args)
        .map_err(|e| anyhow::anyhow!("internal: reproduce's bench flags: {e}"))?;
    bench.workload = workload;
    Ok(bench)
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn print_report(report: &Report, args: &ReproduceArgs) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let w = &report.workload;
    let s = report.submission;
    println!("Reproduce  {}", report.record);
    println!(
        "           {} → sha256 {}  ({})",
        s.source,
        s.sha256,
        match (s.matches, &s.rustc) {
            (true, Some(_)) => "rebuilt; the record's",
            (true, None) => "the record's",
            (false, _) => "NOT the record's",
        }
    );
    println!(
        "           {} · {} windows × {} tokens · {} · workload {}",
        w.preset,
        w.windows,
        report::count(w.tokens_per_window as f64),
        w.device,
        &w.hash[..16.min(w.hash.len())],
    );
    for warning in &s.warnings {
        println!("           warning: {warning}");
    }
    if let Some(now) = &report.now {
        let r = &report.recorded;
        let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "—".into());
        let row = |label: &str, a: String, b: String, note: String| {
            println!("  {label:<12} {a:<28} {b:<28} {note}");
        };
        println!();
        row("", "recorded".into(), "now".into(), String::new());
        row(
            "Verdict",
            verdict_word(r.verdict).into(),
            verdict_word(now.verdict).into(),
            mark(r.verdict == now.verdict),
        );
        row(
            "Error code",
            code_word(&r.error_code),
            code_word(&now.error_code),
            mark(r.error_code == now.error_code),
        );
        let mfu = |x: &Side| match (x.mfu, x.mfu_cv) {
            (Some(m), Some(cv)) => format!(
                "{}  (cv {}, {} runs)",
                report::percent(m),
                report::percent(cv),
                x.runs
            ),
            _ => "—".into(),
        };
        let score_note = match report.score {
            Some(c) => format!(
                "{}{:+.1}%, tolerance {}{}",
                if c.compared {
                    mark(c.within) + " "
                } else {
                    String::new()
                },
                c.relative_delta * 100.0,
                tolerance_words(c.tolerance),
                if c.compared { "" } else { " (not compared)" }
            ),
            None => String::new(),
        };
        row("MFU", mfu(r), mfu(now), score_note);
        row(
            "Tokens/s",
            opt(r.tokens_per_s, report::count),
            opt(now.tokens_per_s, report::count),
            String::new(),
        );
        row(
            "Wall",
            opt(r.wall_s, report::duration),
            opt(now.wall_s, report::duration),
            "median timed run".into(),
        );
        row(
            "Peak",
            format!("{}FLOP/s", report::si(r.peak_flops_per_s)),
            format!("{}FLOP/s", report::si(now.peak_flops_per_s)),
            match report.peak_from {
                Some("record") => "the record's, so MFU compares time".into(),
                Some("--peak-tflops") => "--peak-tflops".into(),
                _ => "this machine's".into(),
            },
        );
        if let Some(l) = report.losses {
            row(
                "Losses",
                format!("{} windows", l.windows),
                if l.max_abs_delta == 0.0 {
                    "max |Δ| 0 (bit for bit)".into()
                } else {
                    format!("max |Δ| {:.2e}", l.max_abs_delta)
                },
                format!("{} ≤ {} (loss_abs)", mark(l.within), l.threshold),
            );
        }
        println!("  {:<12} {}", "Hardware", r.hardware);
        if report.hardware_match == Some(true) {
            println!("  {:<12} the same here", "");
        } else {
            println!("  {:<12} here: {}", "", now.hardware);
        }
        if let Some([a, b]) = report.load_average {
            println!("  {:<12} {a:.2} → {b:.2} (1-minute load average)", "Load");
        }
        if let Some(m) = report.hardware_mismatch {
            println!("\nHARDWARE MISMATCH: {m}; the score is shown but not compared");
        }
    }
    println!();
    match report.outcome {
        Outcome::Reproduced => println!("REPRODUCED"),
        Outcome::Diverged => {
            let reasons: Vec<String> = report
                .reasons
                .iter()
                .map(|r| format!("{}: {}", r.code, r.message))
                .collect();
            println!("DIVERGED: {}", reasons.join("; "));
        }
    }
    if let Some(out) = &args.out {
        println!("Record     {}", out.display());
    }
    Ok(())
}

fn mark(ok: bool) -> String {
    if ok { "✓" } else { "✗" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published record: the baseline on tiny, accepted.
    fn published() -> Record {
        Record::from_json(include_bytes!(
            "../../../results/records/cpu-tiny-baseline.json"
        ))
        .expect("the published record parses")
    }

    fn with_mfu(mut r: Record, factor: f64) -> Record {
        let s = r.score.as_mut().unwrap();
        s.mfu *= factor;
        r
    }

    fn codes(c: &Comparison) -> Vec<&'static str> {
        c.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn the_tolerance_is_the_floor_for_steady_runs_and_grows_with_their_spread() {
        assert_eq!(tolerance(0.0, 1, 0.0, 1), TOLERANCE_FLOOR);
        assert_eq!(tolerance(0.01, 3, 0.01, 3), TOLERANCE_FLOOR);
        // cv 12 % over 3 runs on both sides: 3 · √2 · 1.2533 · 0.12 / √3 = 0.368.
        let t = tolerance(0.12, 3, 0.12, 3);
        assert!((t - 3.0 * 2f64.sqrt() * MEDIAN_SE * 0.12 / 3f64.sqrt()).abs() < 1e-12);
        assert!(t > TOLERANCE_FLOOR && t < TOLERANCE_CAP, "{t}");
        // More runs, a tighter bound.
        assert!(tolerance(0.12, 12, 0.12, 12) < t);
        // A wild record cannot accept anything.
        assert_eq!(tolerance(3.0, 3, 0.1, 3), TOLERANCE_CAP);
        assert_eq!(tolerance(f64::NAN, 3, 0.0, 0), TOLERANCE_FLOOR);
    }

    #[test]
    fn a_record_compared_with_itself_reproduces() {
        let r = published();
        let c = compare(&r, &r, None);
        assert_eq!(c.outcome, Outcome::Reproduced, "{c:?}");
        assert!(c.hardware_match && c.hardware_mismatch.is_none());
        let s = c.score.unwrap();
        assert!(s.compared && s.within && s.relative_delta == 0.0);
        let l = c.losses.unwrap();
        assert_eq!(
            (l.max_abs_delta, l.windows),
            (0.0, r.workload.windows as usize)
        );
    }

    #[test]
    fn a_score_beyond_the_tolerance_diverges_within_it_does_not() {
        let r = published();
        let t = tolerance(
            r.score.as_ref().unwrap().mfu_cv,
            r.score.as_ref().unwrap().runs,
            r.score.as_ref().unwrap().mfu_cv,
            r.score.as_ref().unwrap().runs,
        );
        let inside = with_mfu(r.clone(), (0.9 * t).exp());
        assert_eq!(compare(&r, &inside, None).outcome, Outcome::Reproduced);
        let outside = with_mfu(r.clone(), (-1.1 * t).exp());
        let c = compare(&r, &outside, None);
        assert_eq!(codes(&c), ["score"]);
        assert!(c.reasons[0].message.contains("beyond the tolerance"));
        // --tolerance replaces the formula.
        let c = compare(&r, &outside, Some(2.0 * t));
        assert_eq!(c.outcome, Outcome::Reproduced);
        assert_eq!(c.score.unwrap().tolerance_source, "--tolerance");
        // Three times the score is beyond any tolerance.
        assert_eq!(
            codes(&compare(&r, &with_mfu(r.clone(), 3.0), None)),
            ["score"]
        );
    }

    #[test]
    fn on_other_hardware_the_score_is_shown_not_compared() {
        let r = published();
        let mut elsewhere = with_mfu(r.clone(), 3.0);
        elsewhere.hardware.cpu.model = "Another CPU".into();
        let c = compare(&r, &elsewhere, None);
        assert_eq!(c.outcome, Outcome::Reproduced, "{c:?}");
        assert!(!c.hardware_match);
        let m = c.hardware_mismatch.unwrap();
        assert!(m.contains("here Another CPU"), "{m}");
        let s = c.score.unwrap();
        assert!(!s.compared && !s.within);
        // The thread count sets a CPU's speed too.
        let mut threads = r.clone();
        threads.hardware.cpu.torch_threads += 1;
        assert!(!compare(&r, &threads, None).hardware_match);
        // On CUDA only the GPU counts.
        let gpu = crusades_results::testing::gpu;
        let (mut a, mut b) = (r.hardware.clone(), r.hardware.clone());
        a.gpu = Some(gpu("NVIDIA H100 80GB HBM3"));
        b.gpu = Some(gpu("NVIDIA H100 80GB HBM3"));
        b.cpu.model = "Another CPU".into();
        assert_eq!(hardware_difference(&a, &b, "cuda:0"), None);
        b.gpu = Some(gpu("NVIDIA H200"));
        let d = hardware_difference(&a, &b, "cuda").unwrap();
        assert_eq!(d, "recorded on NVIDIA H100 80GB HBM3, here NVIDIA H200");
    }

    #[test]
    fn a_verdict_or_code_that_differs_diverges_whatever_the_hardware() {
        let r = published();
        let mut rejected = r.clone();
        rejected.verdict = Verdict::Rejected;
        rejected.error_code = Some("loss-mismatch".into());
        rejected.hardware.cpu.model = "Another CPU".into();
        let c = compare(&r, &rejected, None);
        assert_eq!(codes(&c), ["verdict", "error-code"]);
        assert!(c.score.is_none(), "a rejected run's score is not compared");
        assert_eq!(
            c.reasons[0].message,
            "the verdict is REJECTED now, ACCEPTED in the record"
        );
    }

    #[test]
    fn losses_within_the_gate_agree_beyond_it_diverge() {
        let r = published();
        let mut close = r.clone();
        close.runs[0].losses[1] += 1e-6;
        let c = compare(&r, &close, None);
        assert_eq!(c.outcome, Outcome::Reproduced);
        assert!((c.losses.unwrap().max_abs_delta - 1e-6).abs() < 1e-9);
        let mut far = r.clone();
        far.runs[0].losses[1] += 0.02;
        assert_eq!(codes(&compare(&r, &far, None)), ["losses"]);
        let mut short = r.clone();
        short.runs[0].losses.pop();
        let c = compare(&r, &short, None);
        assert_eq!(codes(&c), ["losses"]);
        assert!(c.reasons[0].message.contains("windows"));
    }

    #[test]
    fn nan_losses_agree_with_nan_only() {
        let r = published();
        let mut a = r.runs[..1].to_vec();
        let mut b = a.clone();
        a[0].losses[0] = f64::NAN;
        assert_eq!(max_loss_delta(&a, &b).unwrap().0, f64::INFINITY);
        b[0].losses[0] = f64::NAN;
        assert_eq!(max_loss_delta(&a, &b).unwrap().0, 0.0);
    }

    #[test]
    fn the_overrides_rebuild_any_configuration_from_its_preset() {
        for preset in ["tiny", "small", "150m", "1b"] {
            let mut config = WorkloadConfig::from_preset(preset).unwrap();
            config
                .apply_overrides(&[
                    "lr=0.000123",
                    "seed=7",
                    "windows=2",
                    "uid=5",
                    "corpus_seed=9",
                ])
                .unwrap();
            let list = overrides(&config);
            for key in WorkloadConfig::SETTABLE {
                assert!(
                    list.iter().any(|o| o.starts_with(&format!("{key}="))),
                    "{key} is settable but not rebuilt"
                );
            }
            let mut rebuilt = WorkloadConfig::from_preset(preset).unwrap();
            rebuilt.apply_overrides(&list).unwrap();
            assert_eq!(rebuilt, config);
            assert_eq!(rebuilt.workload_hash(), config.workload_hash());
        }
    }

    #[test]
    fn a_published_source_is_found_from_the_record_s_directory() {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let record = checkout.join("results/records/cpu-tiny-baseline.json");
        let found = locate("submissions/baseline", &record).unwrap();
        assert_eq!(
            found.canonicalize().unwrap(),
            checkout
                .join("submissions/baseline")
                .canonicalize()
                .unwrap()
        );
        assert_eq!(locate("no/such/crate", &record), None);
        assert_eq!(locate("", &record), None);
        assert_eq!(published().submission.source, "submissions/baseline");
    }

    #[test]
    fn every_published_record_parses_and_names_a_crate_of_this_checkout() {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = checkout.join("results/records");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let r = Record::from_json(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let source = Path::new(&r.submission.source);
            assert!(source.is_relative(), "{}: {source:?}", path.display());
            let found = locate(&r.submission.source, &path).unwrap();
            assert!(found.join("Cargo.toml").is_file(), "{}", path.display());
            let config: WorkloadConfig = serde_json::from_value(r.workload.config.clone()).unwrap();
            assert_eq!(
                config.workload_hash(),
                r.workload.hash,
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(
            seen >= 4,
            "the published records are gone from {}",
            dir.display()
        );
    }
}
