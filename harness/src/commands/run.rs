//! `crusades run SUBMISSION`: one run of a submission in the sandbox, through a worker process,
//! with its outputs, its timing and its per-op profile. A debugging and profiling tool; the
//! score comes from `crusades bench`.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crusades_sandbox::accounting::Profile;
use crusades_sandbox::worker::{self, Job, Program, Report};
use crusades_sandbox::Limits;

use super::workload::{self, WorkloadArgs};
use crate::report;

#[derive(Args)]
pub struct RunArgs {
    /// A submission: a component (.wasm) or a crate directory, which is built first.
    pub submission: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads in the worker (default: libtorch's choice, all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override a limit, e.g. --limit timeout_s=600 --limit tensor_bytes=8G (repeatable).
    /// Keys: fuel, timeout_s, guest_memory_bytes, tensor_bytes, max_ops, max_handles.
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    pub limits: Vec<String>,
    /// Write the uploads, final weights, report.json and the worker's log here (default: a
    /// temporary directory, removed afterwards).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Where prepared workloads are cached (default: $CRUSADES_CACHE or ~/.cache/crusades).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Also run the native reference through the same worker path, and report the sandbox's
    /// time ratio and whether the outputs are bit-identical to the reference's.
    #[arg(long)]
    pub vs_reference: bool,
    /// Ops shown in the profile table (all with --json).
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Print a JSON report instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct RunReport<'a> {
    ok: bool,
    submission: PathBuf,
    #[serde(flatten)]
    report: &'a Report,
    /// The parent's wall clock around the worker process, a cross-check of `timing.run_s`.
    worker_wall_s: f64,
    tokens_per_s: Option<f64>,
    out: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_reference: Option<VsReference>,
}

/// The submission against the native reference, both timed in a worker the same way.
#[derive(Serialize)]
struct VsReference {
    reference_run_s: f64,
    reference_worker_wall_s: f64,
    /// Submission run time / reference run time: the sandbox overhead for the baseline.
    time_ratio: f64,
    losses_identical: bool,
    /// Every upload tensor and every final weight equal, bit for bit.
    outputs_identical: bool,
    /// The first output that differs, when one does.
    first_difference: Option<String>,
}

/// Exit status of a run that the submission failed (as opposed to bad input, 2, or a harness
/// failure, 1).
pub const SUBMISSION_FAILED: u8 = 3;

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut limits = Limits::default();
    for l in &args.limits {
        limits
            .set(l)
            .map_err(|e| anyhow::Error::new(crate::InputError(format!("--limit {e}"))))?;
    }
    let (config, _) = args.workload.resolve()?;
    super::setup_device(&args.device, None)?;
    let component = super::build::resolve_submission(&args.submission, !args.json)?;
    let exe = std::env::current_exe()?;
    let cache = workload::cache_dir(args.cache.as_deref());
    let workload_dir = workload::prepare(
        &exe,
        &cache,
        &config,
        &args.workload,
        &args.device,
        args.threads,
        !args.json,
    )?;
    let (out, _temp) = match &args.out {
        Some(dir) => (dir.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("crusades-run-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let job = Job {
        program: Program::Wasm {
            path: component.canonicalize()?,
            precompiled: None,
        },
        config: config.clone(),
        corpus_file: args
            .workload
            .corpus
            .as_ref()
            .map(|p| p.canonicalize())
            .transpose()?,
        token_dtype: args.workload.token_dtype.clone(),
        workload_dir,
        device: args.device.clone(),
        limits,
        threads: args.threads,
        grace_s: worker::DEFAULT_GRACE_S,
        snapshots: false,
    };
    let spinner = report::spinner(&format!("running {} in the sandbox", component.display()));
    let result = workload::run_worker(&exe, &job, &out);
    spinner.finish_and_clear();
    let (report, wall_s) = result?;
    let ok = report.failure.is_none();
    let vs_reference = if ok && args.vs_reference {
        Some(compare_with_reference(&exe, &job, &out, &report)?)
    } else {
        None
    };
    let doc = RunReport {
        ok,
        submission: component.clone(),
        report: &report,
        worker_wall_s: wall_s,
        tokens_per_s: ok.then(|| report.tokens as f64 / report.timing.run_s),
        out: args.out.clone(),
        vs_reference,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_human(&doc, args.top);
    }
    Ok(if ok { 0 } else { SUBMISSION_FAILED })
}

fn compare_with_reference(
    exe: &std::path::Path,
    job: &Job,
    out: &std::path::Path,
    report: &Report,
) -> anyhow::Result<VsReference> {
    let ref_out = out.join("reference");
    let ref_job = Job {
        program: Program::Reference,
        ..job.clone()
    };
    let spinner = report::spinner("running the native reference through the same worker path");
    let result = worker::spawn(exe, &ref_job, &ref_out);
    spinner.finish_and_clear();
    let reference = result.map_err(workload::failure_error)?;
    if let Some(f) = reference.report.failure {
        return Err(workload::failure_error(f).context("the native reference run"));
    }
    let first_difference =
        super::compare::first_difference(out, &ref_out, job.config.windows as usize)?;
    Ok(VsReference {
        reference_run_s: reference.report.timing.run_s,
        reference_worker_wall_s: reference.wall_s,
        time_ratio: report.timing.run_s / reference.report.timing.run_s,
        losses_identical: report.losses == reference.report.losses,
        outputs_identical: first_difference.is_none(),
        first_difference,
    })
}

fn print_human(doc: &RunReport, top: usize) {
    let r = doc.report;
    println!("submission {}", doc.submission.display());
    if let Some(sha) = &r.sha256 {
        println!("sha256     {sha}");
    }
    println!(
        "workload   {}  ·  {}  ·  contract {}",
        &r.workload_hash[..16.min(r.workload_hash.len())],
        r.device,
        r.contract_version
    );
    if let Some(f) = &r.failure {
        println!("\nFAILED     {}\n           {}", f.code.as_str(), f.message);
        return;
    }
    let t = &r.timing;
    println!(
        "\nrun        {}  ({} tokens/s)  ·  worker wall {}  ·  compile {}  ·  instantiate {}  ·  setup {}",
        report::duration(t.run_s),
        report::count(doc.tokens_per_s.unwrap_or(0.0)),
        report::duration(doc.worker_wall_s),
        report::duration(t.compile_s),
        report::duration(t.instantiate_s),
        report::duration(t.setup_s),
    );
    if let Some(device_s) = t.device_s {
        println!("           CUDA events {}", report::duration(device_s));
    }
    let losses: Vec<String> = r.losses.iter().map(|l| format!("{l:.4}")).collect();
    println!("losses     {}", losses.join("  "));
    println!(
        "memory     peak live tensors {}  ·  peak handles {}",
        report::bytes(r.peak_tensor_bytes as f64),
        report::count(r.peak_handles as f64)
    );
    if let Some(p) = &r.profile {
        print_profile(p, top);
    }
    if let Some(v) = &doc.vs_reference {
        println!(
            "\nreference  {} (worker wall {})  ·  sandbox / native {:.3}×  ·  outputs {}",
            report::duration(v.reference_run_s),
            report::duration(v.reference_worker_wall_s),
            v.time_ratio,
            match &v.first_difference {
                None => "bit-identical".to_string(),
                Some(d) => format!("differ (first: {d})"),
            }
        );
    }
    if let Some(out) = &doc.out {
        println!("\noutputs    {}", out.display());
    }
}

fn print_profile(p: &Profile, top: usize) {
    if let Some(w) = &p.windows {
        println!(
            "windows    {} · p50 {} · p90 {} · p99 {} · max {}",
            w.count,
            report::duration(w.p50_s),
            report::duration(w.p90_s),
            report::duration(w.p99_s),
            report::duration(w.max_s)
        );
    }
    let lines = p.ops.iter().map(|o| report::OpLine {
        op: &o.op,
        calls: o.calls,
        seconds: o.seconds,
        flops: o.flops,
    });
    report::print_op_table("op", lines, p.total_seconds, top);
    println!(
        "{:<30} {:>9} {:>10} {:>7} {:>12}",
        "total",
        report::count(p.total_calls as f64),
        report::duration(p.total_seconds),
        "",
        report::si(p.total_flops)
    );
}
