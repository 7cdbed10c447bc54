//! `crusades bench SUBMISSION`: the whole evaluation, exactly as a validator runs it
//! (../shared/DESIGN.md, "One evaluation"). Hash and compile the submission (compile cached by
//! hash), prepare the workload and the reference outputs (cached by workload hash), calibrate
//! or look up the peak, run one warm-up and N timed runs (each a fresh worker, instance and
//! θ0), verify every timed run against the reference, and score the median MFU. The result is
//! one record (`crusades-results`), printed for people or as JSON.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use clap::Args;

use crusades_gpu::sampler::Sampler;
use crusades_gpu::telemetry::{self, Sample, Window};
use crusades_reference::config::WorkloadConfig;
use crusades_reference::device::device_name;
use crusades_results::record::{self, Record, Verdict};
use crusades_sandbox::runner::{sha256_hex, Sandbox};
use crusades_sandbox::worker::{self, Job, Program, Report};
use crusades_sandbox::Limits;

use super::workload::{self, WorkloadArgs};
use crate::flops::{self, FlopModel};
use crate::gates::{self, Thresholds};
use crate::verify::Verifier;
use crate::{hardware, peak, report};

#[derive(Args)]
pub struct BenchArgs {
    /// A submission: a component (.wasm) or a crate directory, which is built first.
    pub submission: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Timed runs; the score is their median MFU.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Warm-up runs before the timed ones (the same call, not scored).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// libtorch intra-op threads in the workers (default: libtorch's choice, all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The peak in TFLOP/s, instead of the GPU table or the CPU calibration.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Measure the CPU peak again instead of using the cached calibration.
    #[arg(long)]
    pub recalibrate: bool,
    /// Override a limit, e.g. --limit timeout_s=600 (repeatable; see `crusades run --help`).
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    pub limits: Vec<String>,
    /// Override a gate threshold, e.g. --gate loss_abs=0.1 (repeatable). The record keeps the
    /// thresholds in force; a validator uses the defaults.
    #[arg(long = "gate", value_name = "KEY=VALUE")]
    pub gates: Vec<String>,
    /// Where compiled submissions, workloads, reference outputs and the CPU calibration are
    /// cached (default: $CRUSADES_CACHE or ~/.cache/crusades).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Keep every run's outputs (uploads, weights, report, worker log) under this directory.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Write the record (JSON) to this file as well.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Ops shown in the profile table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print the record as JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// Exit status when the verdict is `rejected`.
pub const REJECTED: u8 = 3;

const COMPLETE: &str = "complete";

pub fn run(args: BenchArgs) -> anyhow::Result<u8> {
    let record = evaluate(&args)?;
    let json = serde_json::to_string_pretty(&record)?;
    if let Some(path) = &args.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write the record to {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_human(&record, args.top, args.out.as_deref());
    }
    Ok(match record.verdict {
        Verdict::Accepted => 0,
        Verdict::Rejected => REJECTED,
    })
}

/// The whole evaluation, as one record; prints nothing but its progress (none with `json`).
/// A rejected submission is a record, not an error: an error is bad input or a harness failure.
pub fn evaluate(args: &BenchArgs) -> anyhow::Result<Record> {
    let started = Instant::now();
    if args.runs == 0 {
        crate::bail_input!("--runs must be at least 1");
    }
    let mut limits = Limits::default();
    for l in &args.limits {
        limits
            .set(l)
            .map_err(|e| anyhow::Error::new(crate::InputError(format!("--limit {e}"))))?;
    }
    let mut thresholds = Thresholds::default();
    for g in &args.gates {
        thresholds
            .set(g)
            .map_err(|e| anyhow::Error::new(crate::InputError(format!("--gate {e}"))))?;
    }
    let device = crate::commands::setup_device(&args.device, None)?;
    let (config, corpus) = args.workload.resolve()?;
    let component = super::build::resolve_submission(&args.submission, !args.json)?;
    let bytes = std::fs::read(&component)
        .map_err(|e| crate::InputError(format!("cannot read {}: {e}", component.display())))?;
    let sha256 = sha256_hex(&bytes);
    let exe = std::env::current_exe()?;
    let cache = workload::cache_dir(args.cache.as_deref());
    let kind = workload::device_kind(&args.device);

    let mut record = Record {
        schema: record::SCHEMA.into(),
        created_at: String::new(),
        harness: harness_info(),
        submission: record::Submission {
            sha256: sha256.clone(),
            bytes: bytes.len() as u64,
            source: component.display().to_string(),
        },
        workload: workload_info(&config.preset, &config, &device_name(device))?,
        hardware: record::Hardware {
            cpu: record::Cpu {
                model: String::new(),
                logical_cpus: 0,
                torch_threads: 0,
            },
            gpu: None,
        },
        peak: record::Peak {
            flops_per_s: 0.0,
            source: String::new(),
            dtype: String::new(),
            detail: String::new(),
            table_flops_per_s: None,
            clock_derived: None,
        },
        flops: flops_info(&config),
        warmup: None,
        runs: Vec::new(),
        score: None,
        gates: Vec::new(),
        verdict: Verdict::Rejected,
        error_code: None,
        failure: None,
        profile: None,
        evaluation: record::Evaluation {
            wall_s: 0.0,
            timed_s: 0.0,
            overhead: 0.0,
            warmup_runs: args.warmup as u64,
            timed_runs: args.runs as u64,
            compile_cached: false,
            reference_cached: false,
            workload_cached: false,
            thresholds: thresholds.as_map(),
        },
    };

    // The peak, and the machine it is for. First, while this process has done no heavy work of
    // its own: a CPU calibration right after preparing the workload would measure a loaded
    // machine (and the calibration declines to cache a measurement taken on a busy one).
    let hw = hardware::detect(device);
    record.hardware = hardware_info(&hw);
    let spinner =
        report::spinner("finding the peak FLOP/s (a CPU is calibrated once, then cached)");
    let peak = peak::resolve(device, &hw, args.peak_tflops, &cache, args.recalibrate);
    spinner.finish_and_clear();
    let peak = peak?;
    record.peak = peak_info(&peak);

    // 1. Compile, cached by hash. A submission that fails a load-time check is rejected here.
    let precompiled = match compile_cached(&cache, &sha256, &bytes) {
        Ok((path, cached)) => {
            record.evaluation.compile_cached = cached;
            path
        }
        Err(f) if f.code.is_submission_fault() => {
            record.failure = Some(record::RunFailure {
                code: f.code.as_str().to_string(),
                message: f.message.clone(),
                run: "compile".into(),
            });
            return Ok(finish(record, started));
        }
        Err(f) => return Err(workload::failure_error(f)),
    };

    // 2–3. The workload and the reference outputs, each cached by workload hash.
    record.evaluation.workload_cached = workload::is_prepared(&cache, &config, &args.device);
    let program = Program::Wasm {
        path: component.canonicalize()?,
        precompiled: Some(precompiled),
    };
    let job = prepared_job(args, &exe, &cache, &config, program, limits)?;
    let (reference_dir, reference_report, cached) = reference_outputs(&exe, &cache, &job, kind)?;
    record.evaluation.reference_cached = cached;

    // 4. One warm-up, then the timed runs: each in a fresh worker.
    let (outputs, _temp) = match &args.keep {
        Some(dir) => (dir.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("crusades-bench-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let model = FlopModel::new(&config.model);
    let telemetry = TelemetryPlan::new(device, &hw);
    let total = args.warmup + args.runs;
    let bar = report::progress(total as u64, "runs");
    let mut timed = Vec::with_capacity(args.runs);
    for i in 0..total {
        let (label, dir) = if i < args.warmup {
            (
                "warm-up".to_string(),
                outputs.join(format!("warmup-{}", i + 1)),
            )
        } else {
            let n = i - args.warmup + 1;
            (format!("run {n}"), outputs.join(format!("run-{n}")))
        };
        bar.set_message(format!("{label} of {}", component.display()));
        let sampler = telemetry.start();
        let result = workload::run_worker(&exe, &job, &dir);
        let samples = sampler.map(|s| s.map(Sampler::stop));
        bar.inc(1);
        let (report, wall_s) = match result {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e.context(label));
            }
        };
        if let Some(f) = &report.failure {
            bar.finish_and_clear();
            record.failure = Some(record::RunFailure {
                code: f.code.as_str().to_string(),
                message: f.message.clone(),
                run: label,
            });
            return Ok(finish(record, started));
        }
        let mut run = run_record(&report, wall_s, &model, &config, peak.flops_per_s);
        run.telemetry = telemetry.summarize(samples, &report, run.tokens);
        if i < args.warmup {
            record.warmup = Some(run);
        } else {
            record.runs.push(run);
            timed.push((dir, report));
        }
    }
    bar.finish_and_clear();

    // 5–6. Verification against the reference, for every timed run.
    let spinner = report::spinner("verifying every timed run against the reference");
    let measured = (|| -> anyhow::Result<_> {
        let mut verifier = Verifier::new(&config, &corpus, device)?;
        let reference = verifier.reference(&reference_dir, reference_report.losses.clone())?;
        let measured = timed
            .iter()
            .map(|(dir, r)| verifier.measure(dir, &r.losses, &r.window_tokens, &reference))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((reference, measured))
    })();
    spinner.finish_and_clear();
    let (reference, measured) = measured?;
    record.gates = gates::evaluate(
        &measured,
        &record.runs,
        &reference,
        config.tokens_per_window() as u64,
        record.hardware.gpu.as_ref().and_then(|g| g.sm_count),
        &thresholds,
    );

    // 7. The score: the median run.
    let (score, median) = score(&record.runs);
    record.score = Some(score);
    record.profile = timed[median].1.profile.as_ref().map(profile_info);
    Ok(finish(record, started))
}

/// What `evaluate` caches before any submission runs: the CPU peak calibration, the workload and
/// the reference outputs. Run first, it makes every later evaluation's time its submission's
/// own (the corpus bounds each case's time to verdict).
pub fn prepare_caches(args: &BenchArgs) -> anyhow::Result<()> {
    let device = crate::commands::setup_device(&args.device, None)?;
    let (config, _) = args.workload.resolve()?;
    let exe = std::env::current_exe()?;
    let cache = workload::cache_dir(args.cache.as_deref());
    let hw = hardware::detect(device);
    peak::resolve(device, &hw, args.peak_tflops, &cache, args.recalibrate)?;
    let job = prepared_job(
        args,
        &exe,
        &cache,
        &config,
        Program::Reference,
        Limits::default(),
    )?;
    reference_outputs(&exe, &cache, &job, workload::device_kind(&args.device))?;
    Ok(())
}

/// Prepares the workload of `args` (cached by hash) and the job that runs `program` on it.
fn prepared_job(
    args: &BenchArgs,
    exe: &Path,
    cache: &Path,
    config: &WorkloadConfig,
    program: Program,
    limits: Limits,
) -> anyhow::Result<Job> {
    let workload_dir = workload::prepare(
        exe,
        cache,
        config,
        &args.workload,
        &args.device,
        args.threads,
        !args.json,
    )?;
    Ok(Job {
        program,
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
    })
}

/// Fills in the verdict and the evaluation's cost.
fn finish(mut record: Record, started: Instant) -> Record {
    let failed_gate = gates::first_failure(&record.gates).map(|g| g.code.as_str().to_string());
    record.error_code = match (&record.failure, failed_gate) {
        (Some(f), _) => Some(f.code.clone()),
        (None, gate) => gate,
    };
    record.verdict = if record.error_code.is_none() && !record.runs.is_empty() {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    };
    record.created_at = crusades_results::time::rfc3339(SystemTime::now());
    let e = &mut record.evaluation;
    e.wall_s = started.elapsed().as_secs_f64();
    e.timed_s = record.runs.iter().map(|r| r.wall_s).sum();
    e.overhead = if e.timed_s > 0.0 {
        e.wall_s / e.timed_s
    } else {
        0.0
    };
    record
}

/// The precompiled component in the cache (made now if missing). Its key holds the engine's
/// compatibility hash, so a different wasmtime or configuration never loads a stale one.
fn compile_cached(
    cache: &Path,
    sha256: &str,
    bytes: &[u8],
) -> Result<(PathBuf, bool), crusades_sandbox::Failure> {
    let sandbox = Sandbox::new()?;
    let dir = cache.join("compiled");
    let path = dir.join(format!("{sha256}-{}.cwasm", sandbox.precompile_key()));
    if path.is_file() {
        return Ok((path, true));
    }
    let spinner = report::spinner("compiling the submission (cached by sha256 afterwards)");
    let artifact = sandbox.precompile(bytes);
    spinner.finish_and_clear();
    let artifact = artifact?;
    let io = |e: std::io::Error| {
        crusades_sandbox::Failure::internal(format!("the compile cache {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let staging = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&staging, artifact).map_err(io)?;
    std::fs::rename(&staging, &path).map_err(io)?;
    Ok((path, false))
}

/// The reference run's outputs (with θ snapshots) for this workload and device kind, made in
/// a worker the first time and cached by workload hash.
fn reference_outputs(
    exe: &Path,
    cache: &Path,
    job: &Job,
    kind: &str,
) -> anyhow::Result<(PathBuf, Report, bool)> {
    let hash = job.config.workload_hash();
    let name = format!("{}-{kind}", &hash[..16]);
    let dir = cache.join("references").join(&name);
    let read = |dir: &Path| -> anyhow::Result<Report> {
        Ok(serde_json::from_slice(&std::fs::read(
            dir.join(worker::REPORT_FILE),
        )?)?)
    };
    if dir.join(COMPLETE).is_file() {
        if let Ok(report) = read(&dir) {
            return Ok((dir, report, true));
        }
    }
    let staging = cache
        .join("references")
        .join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let ref_job = Job {
        program: Program::Reference,
        snapshots: true,
        ..job.clone()
    };
    let spinner = report::spinner(&format!(
        "running the reference on workload {} (cached afterwards)",
        &hash[..16]
    ));
    let result = worker::spawn(exe, &ref_job, &staging);
    spinner.finish_and_clear();
    let result = result.map_err(workload::failure_error)?;
    if let Some(f) = result.report.failure {
        return Err(workload::failure_error(f).context("the reference run"));
    }
    std::fs::write(staging.join(COMPLETE), hash.as_bytes())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)?;
    Ok((dir, result.report, false))
}

fn run_record(
    report: &Report,
    worker_wall_s: f64,
    model: &FlopModel,
    config: &WorkloadConfig,
    peak: f64,
) -> record::Run {
    let tokens = (config.tokens_per_window() as u64) * config.windows;
    let wall = report.timing.run_s;
    let model_flops = model.model_flops(tokens);
    let profile = report.profile.clone().unwrap_or_default();
    let hardware_flops = profile.total_flops;
    let p = &profile.phases;
    record::Run {
        wall_s: wall,
        worker_wall_s,
        setup_s: report.timing.setup_s,
        compile_s: report.timing.compile_s,
        instantiate_s: report.timing.instantiate_s,
        tokens,
        tokens_per_s: tokens as f64 / wall,
        model_flops,
        hardware_flops,
        mfu: flops::mfu(model_flops, wall, peak),
        mfu_crusades: flops::mfu(model.crusades_flops(tokens), wall, peak),
        hfu: flops::hfu(hardware_flops, wall, peak),
        step_latency: profile.windows.as_ref().map(|w| record::Latency {
            count: w.count,
            mean_s: w.mean_s,
            p50_s: w.p50_s,
            p90_s: w.p90_s,
            p99_s: w.p99_s,
            max_s: w.max_s,
        }),
        phases: record::Phases {
            train_s: p.train_s,
            compress_s: p.compress_s,
            aggregate_s: p.aggregate_s,
            other_s: p.other_s,
        },
        losses: report.losses.clone(),
        window_tokens: report.window_tokens.clone(),
        op_calls: profile.total_calls,
        peak_tensor_bytes: report.peak_tensor_bytes,
        peak_handles: report.peak_handles,
        device_s: report.timing.device_s,
        telemetry: record::Telemetry::not_recorded(),
    }
}

/// The telemetry block's reason on a CPU run.
pub const CPU_RUN_TELEMETRY: &str = "a CPU run: GPU telemetry (NVML) is recorded for CUDA runs";

/// Which GPU, if any, each run's NVML sampler watches, and how its samples become the record's
/// telemetry block.
enum TelemetryPlan {
    Sample {
        uuid: String,
        /// SMs × the architecture's tensor FLOPs per clock per SM, for the GPM bound.
        tensor_flops_per_clock: Option<f64>,
    },
    Unavailable(String),
}

impl TelemetryPlan {
    fn new(device: tch::Device, hw: &hardware::Hardware) -> Self {
        match (device, &hw.gpu) {
            (tch::Device::Cuda(_), Some(gpu)) => TelemetryPlan::Sample {
                uuid: gpu.uuid.clone(),
                tensor_flops_per_clock: peak::tensor_flops_per_clock(gpu),
            },
            (tch::Device::Cuda(i), None) => TelemetryPlan::Unavailable(format!(
                "cuda:{i} could not be described: {}",
                hw.gpu_unavailable.as_deref().unwrap_or("unknown reason")
            )),
            _ => TelemetryPlan::Unavailable(CPU_RUN_TELEMETRY.into()),
        }
    }

    /// A sampler for the next run; a sampler that cannot start is reported by `summarize`.
    fn start(&self) -> Option<Result<Sampler, String>> {
        match self {
            TelemetryPlan::Sample { uuid, .. } => Some(Sampler::start(
                uuid,
                crusades_gpu::sampler::DEFAULT_INTERVAL,
            )),
            TelemetryPlan::Unavailable(_) => None,
        }
    }

    fn summarize(
        &self,
        samples: Option<Result<Vec<Sample>, String>>,
        report: &Report,
        tokens: u64,
    ) -> record::Telemetry {
        let (uuid, per_clock) = match self {
            TelemetryPlan::Sample {
                uuid,
                tensor_flops_per_clock,
            } => (uuid, *tensor_flops_per_clock),
            TelemetryPlan::Unavailable(reason) => {
                return record::Telemetry::Unavailable {
                    reason: reason.clone(),
                }
            }
        };
        match samples {
            Some(Ok(samples)) => record::Telemetry::Measured(Box::new(telemetry::summarize(
                uuid,
                &samples,
                Window {
                    start_ns: report.timing.clock_start_ns,
                    end_ns: report.timing.clock_end_ns,
                },
                tokens,
                per_clock,
            ))),
            Some(Err(reason)) => record::Telemetry::Unavailable { reason },
            None => record::Telemetry::not_recorded(),
        }
    }
}

/// The run whose MFU is nearest `median`: the one the profile and the GPU lines show.
fn median_run(runs: &[record::Run], median: f64) -> usize {
    (0..runs.len())
        .min_by(|&a, &b| {
            (runs[a].mfu - median)
                .abs()
                .total_cmp(&(runs[b].mfu - median).abs())
        })
        .unwrap_or(0)
}

/// The median MFU over the runs and its spread, and the index of the median run.
pub fn score(runs: &[record::Run]) -> (record::Score, usize) {
    let mfus: Vec<f64> = runs.iter().map(|r| r.mfu).collect();
    let stats = report::Stats::new(&mfus);
    let median_of = |f: fn(&record::Run) -> f64| {
        report::Stats::new(&runs.iter().map(f).collect::<Vec<_>>()).median
    };
    let closest = median_run(runs, stats.median);
    let m = &runs[closest];
    let share = |s: f64| if m.wall_s > 0.0 { s / m.wall_s } else { 0.0 };
    (
        record::Score {
            mfu: stats.median,
            mfu_crusades: median_of(|r| r.mfu_crusades),
            hfu: median_of(|r| r.hfu),
            tokens_per_s: median_of(|r| r.tokens_per_s),
            wall_s: median_of(|r| r.wall_s),
            mfu_min: stats.min,
            mfu_max: stats.max,
            mfu_cv: if stats.mean > 0.0 {
                stats.stddev / stats.mean
            } else {
                0.0
            },
            compress_share: share(m.phases.compress_s),
            aggregate_share: share(m.phases.aggregate_s),
            runs: runs.len() as u64,
        },
        closest,
    )
}

fn harness_info() -> record::Harness {
    record::Harness {
        version: env!("CARGO_PKG_VERSION").into(),
        git_revision: option_env!("CRUSADES_GIT_REVISION")
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        contract_version: crusades_sandbox::CONTRACT_VERSION.into(),
        libtorch: peak::libtorch_version(),
    }
}

fn workload_info(
    preset: &str,
    config: &WorkloadConfig,
    device: &str,
) -> anyhow::Result<record::Workload> {
    let per_window = config.tokens_per_window() as u64;
    Ok(record::Workload {
        preset: preset.into(),
        hash: config.workload_hash(),
        config: serde_json::to_value(config)?,
        seed: config.seed,
        uid: config.uid,
        windows: config.windows,
        peers: config.peers,
        tokens_per_window: per_window,
        tokens: per_window * config.windows,
        device: device.into(),
    })
}

fn flops_info(config: &WorkloadConfig) -> record::FlopsSummary {
    let model = FlopModel::new(&config.model);
    let tokens = config.tokens_per_window() as u64 * config.windows;
    record::FlopsSummary {
        convention: flops::CONVENTION.into(),
        model_per_token: model.model_per_token(),
        crusades_per_token: model.crusades_per_token(),
        params_total: model.params_total,
        params_embedding: model.params_embedding,
        model_total: model.model_flops(tokens),
        crusades_total: model.crusades_flops(tokens),
    }
}

pub fn hardware_info(hw: &hardware::Hardware) -> record::Hardware {
    record::Hardware {
        cpu: record::Cpu {
            model: hw.cpu.model.clone(),
            logical_cpus: hw.cpu.logical_cpus as u64,
            torch_threads: hw.cpu.torch_threads as u64,
        },
        gpu: hw.gpu.as_ref().map(|g| record::Gpu {
            name: g.name.clone(),
            uuid: Some(g.uuid.clone()),
            driver: g.driver_version.clone(),
            memory_bytes: g.memory_bytes,
            sm_count: g.sm_count.map(u64::from),
            sm_clock_max_mhz: g.max_sm_clock_mhz.map(u64::from),
            power_limit_w: g.power_limit_w,
            compute_capability: g.compute_capability.map(|(a, b)| format!("{a}.{b}")),
            cuda_driver: g.cuda_driver.clone(),
            nvrtc: g.nvrtc.clone(),
        }),
    }
}

pub fn peak_info(peak: &peak::Peak) -> record::Peak {
    record::Peak {
        flops_per_s: peak.flops_per_s,
        source: peak.source.as_str().into(),
        dtype: peak.dtype.clone(),
        detail: peak.detail.clone(),
        table_flops_per_s: peak.table_flops_per_s,
        clock_derived: peak.clock_derived.clone(),
    }
}

fn profile_info(p: &crusades_sandbox::accounting::Profile) -> record::Profile {
    record::Profile {
        total_calls: p.total_calls,
        total_seconds: p.total_seconds,
        total_flops: p.total_flops,
        ops: p
            .ops
            .iter()
            .map(|o| record::OpRow {
                op: o.op.clone(),
                calls: o.calls,
                seconds: o.seconds,
                flops: o.flops,
                bytes: o.bytes,
            })
            .collect(),
    }
}

/// The CUDA clock cross-check and the NVML telemetry of the median run, with any warning of
/// any run.
fn print_gpu_lines(r: &Record) {
    let Some(median) = r
        .score
        .as_ref()
        .and_then(|s| r.runs.get(median_run(&r.runs, s.mfu)))
    else {
        return;
    };
    if let Some(device_s) = median.device_s {
        println!(
            "  CUDA events   {}  (wall {}; median run)",
            report::duration(device_s),
            report::duration(median.wall_s)
        );
    }
    match &median.telemetry {
        record::Telemetry::Measured(t) => {
            let opt = |v: Option<f64>, unit: &str, digits: usize| {
                v.map(|v| format!("{v:.digits$} {unit}"))
                    .unwrap_or_else(|| "n/a".into())
            };
            println!(
                "  GPU           SM clock {} (min {}) · power {} · {} ({}) · util {}",
                opt(t.sm_clock_mean_mhz, "MHz", 0),
                opt(t.sm_clock_min_mhz, "MHz", 0),
                opt(t.power_mean_w, "W", 0),
                opt(t.j_per_token, "J/token", 4),
                opt(t.energy_j, "J", 1),
                t.gpu_util_mean
                    .map(report::percent)
                    .unwrap_or_else(|| "n/a".into()),
            );
            let reasons = if t.clock_event_reason_names.is_empty() {
                "none".to_string()
            } else {
                t.clock_event_reason_names.join(", ")
            };
            let tensor = t
                .tensor_active
                .map(|a| format!(" · tensor pipes active {}", report::percent(a)))
                .unwrap_or_default();
            println!(
                "                clock events: {reasons} · throttled {} · idle {}{tensor}  ({} samples)",
                report::percent(t.throttled_share),
                report::percent(t.idle_share),
                t.samples
            );
        }
        record::Telemetry::Unavailable { reason } if r.workload.device.starts_with("cuda") => {
            println!("  GPU           telemetry unavailable: {reason}");
        }
        record::Telemetry::Unavailable { .. } => {}
    }
    let mut warned = std::collections::BTreeSet::new();
    for (i, run) in r.runs.iter().enumerate() {
        if let Some(t) = run.telemetry.measured() {
            for w in &t.warnings {
                if warned.insert(w.clone()) {
                    println!("  warning       run {}: {w}", i + 1);
                }
            }
        }
    }
}

/// The human report of one record (`bench`, and `results show`).
pub fn print_human(r: &Record, top: usize, out: Option<&Path>) {
    let w = &r.workload;
    println!(
        "Benchmark  {}\n           sha256 {}  ·  {} bytes",
        r.submission.source, r.submission.sha256, r.submission.bytes
    );
    println!(
        "           {} · {} windows × {} tokens · {} · workload {} · contract {}",
        w.preset,
        w.windows,
        report::count(w.tokens_per_window as f64),
        w.device,
        &w.hash[..16.min(w.hash.len())],
        r.harness.contract_version
    );
    if let Some(s) = &r.score {
        println!(
            "\n  MFU           {}  (median of {}; min {} … max {}, cv {})",
            report::percent(s.mfu),
            s.runs,
            report::percent(s.mfu_min),
            report::percent(s.mfu_max),
            report::percent(s.mfu_cv)
        );
        println!(
            "  MFU Crusades  {}  (6·N_all per token)   HFU {}",
            report::percent(s.mfu_crusades),
            report::percent(s.hfu)
        );
        let times: Vec<f64> = r.runs.iter().map(|x| x.wall_s).collect();
        println!("  Time          {}", report::Stats::new(&times).display());
        println!("  Throughput    {} tokens/s", report::count(s.tokens_per_s));
        if let Some(l) = r.runs.iter().filter_map(|x| x.step_latency.as_ref()).next() {
            println!(
                "  Window        p50 {} · p90 {} · p99 {} · max {}  (run 1)",
                report::duration(l.p50_s),
                report::duration(l.p90_s),
                report::duration(l.p99_s),
                report::duration(l.max_s)
            );
        }
        let other = 1.0 - s.compress_share - s.aggregate_share;
        println!(
            "  Phases        compress {} · aggregate {} · train and other {}  (guest-marked)",
            report::percent(s.compress_share),
            report::percent(s.aggregate_share),
            report::percent(other.max(0.0))
        );
    }
    print_gpu_lines(r);
    println!(
        "  Peak          {}FLOP/s  ({}, {}: {})",
        report::si(r.peak.flops_per_s),
        r.peak.source,
        r.peak.dtype,
        r.peak.detail
    );
    // A clock-derived peak is already the headline figure; beside a table one it is context.
    let from_table = r.peak.source == peak::PeakSource::CudaTable.as_str();
    if let (Some(d), true) = (&r.peak.clock_derived, from_table) {
        println!(
            "                clock-derived {}FLOP/s ({} SMs × {} MHz × {} per clock, {})",
            report::si(d.flops_per_s),
            d.sm_count,
            d.sm_clock_mhz,
            d.flops_per_clock_per_sm,
            d.architecture
        );
    }
    println!(
        "  Model FLOPs   {}/token ({})  ·  Crusades {}/token  ·  {} per run",
        report::si(r.flops.model_per_token),
        r.flops.convention,
        report::si(r.flops.crusades_per_token),
        report::si(r.flops.model_total)
    );

    if let Some(f) = &r.failure {
        println!("\n  {} FAILED: {}\n  {}", f.run, f.code, f.message);
    }
    if !r.gates.is_empty() {
        println!("\nVerification");
        for g in &r.gates {
            let value = g
                .value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "n/a".into());
            println!(
                "  {} {:<22} {:>10} {} {:<8} {}",
                if g.passed { "✓" } else { "✗" },
                g.code.as_str(),
                value,
                g.comparison.symbol(),
                g.threshold,
                if g.passed {
                    g.measure.clone()
                } else {
                    format!("{} — {}", g.measure, g.detail)
                }
            );
        }
    }
    match (&r.verdict, &r.error_code) {
        (Verdict::Accepted, _) => println!("\nVerdict    ACCEPTED"),
        (Verdict::Rejected, Some(code)) => println!("\nVerdict    REJECTED ({code})"),
        (Verdict::Rejected, None) => println!("\nVerdict    REJECTED"),
    }

    if let Some(p) = &r.profile {
        let lines = p.ops.iter().map(|o| report::OpLine {
            op: &o.op,
            calls: o.calls,
            seconds: o.seconds,
            flops: o.flops,
        });
        report::print_op_table("op (median run)", lines, p.total_seconds, top);
    }
    let e = &r.evaluation;
    println!(
        "\nEvaluation {} wall for {} timed (overhead {:.2}×)  ·  compile {}  ·  workload {}  ·  reference {}",
        report::duration(e.wall_s),
        report::duration(e.timed_s),
        e.overhead,
        if e.compile_cached { "cached" } else { "compiled" },
        if e.workload_cached { "cached" } else { "prepared" },
        if e.reference_cached { "cached" } else { "run" },
    );
    if let Some(path) = out {
        println!("Record     {}", path.display());
    }
}
