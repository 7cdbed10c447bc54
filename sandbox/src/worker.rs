//! The process boundary. The parent writes a [`Job`] and starts a worker (the same binary, in
//! a hidden subcommand); the worker runs it and writes its outputs as safetensors plus a
//! [`Report`] as JSON. A worker that crashes, aborts or is killed leaves no report, and the
//! parent turns its exit status into a [`Failure`]: the parent itself lives on.
//!
//! Three programs run through this one path, so they are set up and timed the same way:
//! `prepare` (the reference run that makes a workload's peer uploads), `reference` (the native
//! reference replaying those peers) and `wasm` (a submission).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crusades_reference::compress::CompressorConfig;
use crusades_reference::config::{CorpusSpec, WorkloadConfig};
use crusades_reference::corpus::{Corpus, TokenDtype};
use crusades_reference::device::{device_name, parse_device, synchronize};

use crate::clock::{Clock, RegionTime};
use crusades_reference::io::{self, HostTensor, Upload};
use crusades_reference::model::detached_copy;
use crusades_reference::window::{self, Trainer};

use crate::accounting::Profile;
use crate::failure::{Failure, FailureCode};
use crate::limits::Limits;
use crate::lockdown::{self, LockdownReport};
use crate::runner::Sandbox;
use crate::session::{peer_upload_path, Session};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Program {
    /// Run the reference over the workload and store every window's peer uploads.
    Prepare,
    /// The native reference, replaying the prepared peer uploads.
    Reference,
    /// A submission component, and optionally its precompiled form from the harness's
    /// compile cache (made by `Sandbox::precompile` of the same engine configuration).
    Wasm {
        path: PathBuf,
        #[serde(default)]
        precompiled: Option<PathBuf>,
    },
}

impl Program {
    pub fn name(&self) -> &'static str {
        match self {
            Program::Prepare => "prepare",
            Program::Reference => "reference",
            Program::Wasm { .. } => "wasm",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub program: Program,
    pub config: WorkloadConfig,
    /// The token file behind a `file` corpus (the config names it by hash only).
    pub corpus_file: Option<PathBuf>,
    pub token_dtype: Option<String>,
    /// The prepared workload (peer uploads); the output directory of a `prepare` job.
    pub workload_dir: PathBuf,
    pub device: String,
    pub limits: Limits,
    pub threads: Option<usize>,
    /// Seconds the parent allows past `limits.timeout_s` (process start, set-up, writing the
    /// outputs) before it kills the worker.
    #[serde(default = "default_grace")]
    pub grace_s: f64,
    /// Reference only: also write θ at the start of every window after the first
    /// (`thetas/w{w}.safetensors`), for the verification gates.
    #[serde(default)]
    pub snapshots: bool,
}

pub const DEFAULT_GRACE_S: f64 = 120.0;

fn default_grace() -> f64 {
    DEFAULT_GRACE_S
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    /// θ0, batches and peer uploads onto the device (untimed).
    pub setup_s: f64,
    /// Compiling the component (wasm only; outside the clock).
    pub compile_s: f64,
    pub instantiate_s: f64,
    /// The clock: the entry call (or the native window loop), device synchronised.
    pub run_s: f64,
    /// The same region's CLOCK_MONOTONIC ends, its CUDA-event time, and why a CUDA run has
    /// none (see [`crate::clock`]).
    #[serde(default)]
    pub clock_start_ns: u64,
    #[serde(default)]
    pub clock_end_ns: u64,
    #[serde(default)]
    pub device_s: Option<f64>,
    #[serde(default)]
    pub device_clock_error: Option<String>,
}

impl Timing {
    fn record_region(&mut self, time: RegionTime) {
        self.run_s = time.wall_s;
        self.clock_start_ns = time.start_ns;
        self.clock_end_ns = time.end_ns;
        self.device_s = time.device_s;
        self.device_clock_error = time.device_clock_error;
    }
}

/// What a worker reports. Outputs lie next to it: `weights.safetensors` and
/// `uploads/w{w}.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub contract_version: String,
    pub program: String,
    /// The component's sha256 (wasm only).
    pub sha256: Option<String>,
    pub device: String,
    pub workload_hash: String,
    pub failure: Option<Failure>,
    pub timing: Timing,
    pub losses: Vec<f64>,
    /// The workload's tokens: windows × seqs × T.
    pub tokens: i64,
    /// Per window, the label tokens whose loss the run differentiated (the host counts the
    /// targets of `cross_entropy` calls on the autograd tape; the native reference reports
    /// the window's tokens).
    #[serde(default)]
    pub window_tokens: Vec<u64>,
    /// Per-op accounting (wasm only: the native reference calls libtorch directly).
    pub profile: Option<Profile>,
    pub peak_tensor_bytes: u64,
    pub peak_handles: u64,
    pub limits: Limits,
    /// What the worker gave up before the guest ran ([`crate::lockdown`]).
    #[serde(default)]
    pub lockdown: LockdownReport,
}

impl Report {
    /// An empty report for `job`, before anything has run.
    pub fn for_job(job: &Job) -> Self {
        Self {
            contract_version: crate::CONTRACT_VERSION.to_string(),
            program: job.program.name().to_string(),
            sha256: None,
            device: job.device.clone(),
            workload_hash: job.config.workload_hash(),
            failure: None,
            timing: Timing::default(),
            losses: Vec::new(),
            tokens: job.config.tokens_per_window() * job.config.windows as i64,
            window_tokens: Vec::new(),
            profile: None,
            peak_tensor_bytes: 0,
            peak_handles: 0,
            limits: job.limits,
            lockdown: LockdownReport::default(),
        }
    }
}

pub const REPORT_FILE: &str = "report.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// θ at the start of window `window` in a reference run with snapshots.
pub fn theta_path(out: &Path, window: usize) -> PathBuf {
    out.join("thetas").join(format!("w{window}.safetensors"))
}

pub fn upload_path(out: &Path, window: usize) -> PathBuf {
    out.join("uploads").join(format!("w{window}.safetensors"))
}

/// What a run produced, before it is written.
struct Outputs {
    losses: Vec<f64>,
    uploads: Vec<Upload>,
    weights: Vec<(String, Tensor)>,
}

fn internal(context: &str) -> impl Fn(crusades_reference::Error) -> Failure + '_ {
    move |e| Failure::internal(format!("{context}: {e}"))
}

fn load_corpus(job: &Job) -> Result<Corpus, Failure> {
    match (&job.config.corpus, &job.corpus_file) {
        (CorpusSpec::Synthetic { .. }, _) => {
            Corpus::synthetic(&job.config).map_err(internal("building the synthetic corpus"))
        }
        (CorpusSpec::File { sha256, .. }, Some(path)) => {
            let dtype = job
                .token_dtype
                .as_deref()
                .map(TokenDtype::parse)
                .transpose()
                .map_err(internal("the token dtype"))?;
            let mut config = job.config.clone();
            let corpus = Corpus::from_token_file(path, dtype, &mut config)
                .map_err(internal("reading the corpus"))?;
            if config.corpus != job.config.corpus {
                return Err(Failure::internal(format!(
                    "{} is not the corpus the workload names (sha256 {sha256})",
                    path.display()
                )));
            }
            Ok(corpus)
        }
        (CorpusSpec::File { .. }, None) => Err(Failure::internal(
            "the workload names a token file, but the job carries no path to it",
        )),
    }
}

/// The worker's side: runs `job`, writes outputs and the report into `out`. An `Err` means no
/// report could be written at all.
pub fn serve(job_path: &Path, out: &Path) -> Result<(), String> {
    let inherited_fds = lockdown::close_inherited_fds();
    let job: Job = std::fs::read(job_path)
        .map_err(|e| format!("{}: {e}", job_path.display()))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", job_path.display()))
        })?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut report = Report::for_job(&job);
    report.lockdown.inherited_fds = inherited_fds;
    if let Err(f) = execute(&job, out, &mut report) {
        report.failure = Some(f);
    }
    let json = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
    write_atomic(&out.join(REPORT_FILE), &json)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn execute(job: &Job, out: &Path, report: &mut Report) -> Result<(), Failure> {
    if let Some(n) = job.threads {
        tch::set_num_threads(n.max(1) as i32);
    }
    let device =
        parse_device(&job.device).map_err(|e| Failure::new(FailureCode::Device, e.to_string()))?;
    report.device = device_name(device);
    let corpus = load_corpus(job)?;
    let outputs = match &job.program {
        Program::Prepare => prepare(job, &corpus, device, report)?,
        Program::Reference => reference(job, out, &corpus, device, report)?,
        Program::Wasm { path, precompiled } => {
            wasm(job, path, precompiled.as_deref(), &corpus, device, report)?
        }
    };
    write_outputs(job, out, &outputs)?;
    report.losses = outputs.losses;
    Ok(())
}

fn prepare(
    job: &Job,
    corpus: &Corpus,
    device: Device,
    report: &mut Report,
) -> Result<Outputs, Failure> {
    let clock = Clock::start(device);
    let run =
        window::run(&job.config, corpus, device, |_| {}).map_err(internal("the reference run"))?;
    report.timing.record_region(clock.stop().0);
    store_peer_uploads(&job.workload_dir, &job.config, &run.peers)
        .map_err(internal("writing peer uploads"))?;
    let trainer = run.trainer;
    Ok(Outputs {
        losses: run.windows.iter().map(|w| w.loss).collect(),
        uploads: run.windows.into_iter().map(|w| w.upload).collect(),
        weights: named_weights(
            &trainer
                .params
                .names()
                .map(str::to_string)
                .collect::<Vec<_>>(),
            &trainer.params.tensors,
        ),
    })
}

/// Writes `peers[w][j]` where [`Session::new`] reads them.
pub fn store_peer_uploads(
    workload_dir: &Path,
    config: &WorkloadConfig,
    peers: &[Vec<Upload>],
) -> crusades_reference::Result<()> {
    let compressor = CompressorConfig::from(&config.hparams);
    for (w, window) in peers.iter().enumerate() {
        for (j, upload) in window.iter().enumerate() {
            let path = peer_upload_path(workload_dir, w as u64, j as u64);
            let meta = BTreeMap::from([
                ("window".to_string(), w.to_string()),
                ("peer".to_string(), j.to_string()),
            ]);
            io::write_upload(&path, upload, None, &compressor, &meta)?;
        }
    }
    Ok(())
}

fn named_weights(names: &[String], tensors: &[Tensor]) -> Vec<(String, Tensor)> {
    names
        .iter()
        .cloned()
        .zip(tensors.iter().map(Tensor::shallow_clone))
        .collect()
}

fn reference(
    job: &Job,
    out: &Path,
    corpus: &Corpus,
    device: Device,
    report: &mut Report,
) -> Result<Outputs, Failure> {
    let start = Instant::now();
    let session = Session::new(&job.config, corpus, &job.workload_dir, device)?;
    let mut trainer =
        Trainer::new(&job.config, device).map_err(internal("the reference trainer"))?;
    synchronize(device);
    report.timing.setup_s = start.elapsed().as_secs_f64();
    let clock = Clock::start(device);
    let mut windows = Vec::with_capacity(session.batches.len());
    let mut snapshots = Vec::new();
    for (w, ((x, y), peers)) in session.batches.iter().zip(&session.peers).enumerate() {
        if job.snapshots && w > 0 {
            let theta = trainer
                .params
                .tensors
                .iter()
                .map(detached_copy)
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("copying θ"))?;
            snapshots.push((w, theta));
        }
        let page = session.pages[w];
        windows.push(
            trainer
                .step_batch(w as u64, page, x, y, peers)
                .map_err(internal("the reference step"))?,
        );
    }
    report.timing.record_region(clock.stop().0);
    report.window_tokens = vec![job.config.tokens_per_window() as u64; windows.len()];
    for (w, theta) in snapshots {
        write_weights(&theta_path(out, w), &session.names, &theta, &job.config)
            .map_err(internal("writing a θ snapshot"))?;
    }
    Ok(Outputs {
        losses: windows.iter().map(|w| w.loss).collect(),
        uploads: windows.into_iter().map(|w| w.upload).collect(),
        weights: named_weights(&session.names, &trainer.params.tensors),
    })
}

fn wasm(
    job: &Job,
    path: &Path,
    precompiled: Option<&Path>,
    corpus: &Corpus,
    device: Device,
    report: &mut Report,
) -> Result<Outputs, Failure> {
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(
            FailureCode::NotWasm,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let sandbox = Sandbox::new()?;
    let compiled = match precompiled {
        Some(artifact) => sandbox.load_precompiled(&bytes, artifact),
        None => sandbox.compile(&bytes),
    };
    report.sha256 = Some(crate::runner::sha256_hex(&bytes));
    let compiled = compiled?;
    report.timing.compile_s = compiled.compile_s;
    let start = Instant::now();
    let session = Session::new(&job.config, corpus, &job.workload_dir, device)?;
    synchronize(device);
    report.timing.setup_s = start.elapsed().as_secs_f64();
    // Everything the run needs from outside is loaded: from here the worker needs no new
    // sockets, programs or processes.
    lockdown::restrict_syscalls(&mut report.lockdown);
    let run = sandbox.run(&compiled, session, job.limits);
    let run = run?;
    report.timing.instantiate_s = run.instantiate_s;
    report.timing.record_region(run.time);
    let state = run.state;
    report.profile = Some(state.accounting.report());
    report.peak_tensor_bytes = state.peak_bytes;
    report.peak_handles = state.peak_handles;
    report.window_tokens = state.window_tokens();
    let session = state.session;
    let bins = job.config.hparams.bins;
    let mut losses = Vec::new();
    let mut uploads = Vec::new();
    for (w, s) in session.submitted.into_iter().enumerate() {
        let loss = s
            .loss
            .f_to_kind(tch::Kind::Double)
            .and_then(|l| l.f_double_value(&[]))
            .map_err(|e| Failure::internal(format!("reading window {w}'s loss: {e}")))?;
        losses.push(loss);
        for (name, ct) in session.names.iter().zip(&s.upload) {
            ct.validate(name, bins).map_err(|e| {
                Failure::new(
                    FailureCode::InvalidUpload,
                    format!("window {w}'s upload: {e}"),
                )
            })?;
        }
        uploads.push(Upload {
            names: session.names.clone(),
            tensors: s.upload,
        });
    }
    Ok(Outputs {
        losses,
        uploads,
        weights: named_weights(&session.names, &session.params),
    })
}

fn write_outputs(job: &Job, out: &Path, outputs: &Outputs) -> Result<(), Failure> {
    let compressor = CompressorConfig::from(&job.config.hparams);
    for (w, upload) in outputs.uploads.iter().enumerate() {
        let meta = BTreeMap::from([("window".to_string(), w.to_string())]);
        io::write_upload(&upload_path(out, w), upload, None, &compressor, &meta)
            .map_err(internal("writing an upload"))?;
    }
    let (names, tensors): (Vec<String>, Vec<Tensor>) = outputs
        .weights
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .unzip();
    write_weights(&out.join(WEIGHTS_FILE), &names, &tensors, &job.config)
        .map_err(internal("writing the weights"))
}

fn write_weights(
    path: &Path,
    names: &[String],
    tensors: &[Tensor],
    config: &WorkloadConfig,
) -> crusades_reference::Result<()> {
    let weights = names
        .iter()
        .zip(tensors)
        .map(|(n, t)| HostTensor::from_tensor(t).map(|h| (n.clone(), h)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crusades_reference::Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let meta = BTreeMap::from([("workload".to_string(), config.workload_hash())]);
    io::write(path, &weights, &meta)
}

/// A finished worker, from the parent's side.
#[derive(Debug)]
pub struct WorkerResult {
    pub report: Report,
    /// The parent's wall clock around the whole worker process (setup included).
    pub wall_s: f64,
}

/// The parent's side: runs `job` in a worker process (`exe __worker --job … --out …`) and
/// reads its report. Any way the worker can die becomes a [`Failure`].
pub fn spawn(exe: &Path, job: &Job, out: &Path) -> Result<WorkerResult, Failure> {
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::internal(format!("cannot create {}: {e}", out.display())))?;
    let job_path = out.join("job.json");
    let json = serde_json::to_vec_pretty(job).map_err(|e| Failure::internal(e.to_string()))?;
    write_atomic(&job_path, &json).map_err(Failure::internal)?;
    let _ = std::fs::remove_file(out.join(REPORT_FILE));
    let log_path = out.join("worker.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| Failure::internal(format!("cannot create {}: {e}", log_path.display())))?;
    let start = Instant::now();
    let mut command = Command::new(exe);
    // SAFETY: the hook only marks descriptors close-on-exec and sets the parent-death signal
    // (async-signal-safe syscalls), so the worker starts with nothing of the parent's but
    // stdio, and dies with the thread that waits for it.
    unsafe {
        command.pre_exec(|| {
            lockdown::cloexec_above_stdio()?;
            lockdown::die_with_parent()
        });
    }
    let mut child = command
        .arg("__worker")
        .arg("--job")
        .arg(&job_path)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Failure::internal(e.to_string()))?,
        )
        .stderr(log)
        .spawn()
        .map_err(|e| {
            Failure::internal(format!("cannot start the worker {}: {e}", exe.display()))
        })?;
    let limit = job.limits.timeout() + Duration::from_secs_f64(job.grace_s.max(0.0));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::new(
                    FailureCode::WorkerTimeout,
                    format!(
                        "the worker ran past the run's timeout ({} s) plus {} s of grace and was killed; a single host op cannot be interrupted from inside",
                        job.limits.timeout_s,
                        job.grace_s
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(Failure::internal(format!("waiting for the worker: {e}"))),
        }
    };
    let wall_s = start.elapsed().as_secs_f64();
    let report_path = out.join(REPORT_FILE);
    if let Ok(bytes) = std::fs::read(&report_path) {
        let report: Report = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::internal(format!(
                "the worker's report {} is unreadable: {e}",
                report_path.display()
            ))
        })?;
        return Ok(WorkerResult { report, wall_s });
    }
    let tail = log_tail(&log_path);
    Err(match status.signal() {
        Some(9) => Failure::new(
            FailureCode::WorkerKilled,
            format!("the worker was killed (SIGKILL), most likely by the kernel's out-of-memory killer; lower tensor_bytes or use a smaller preset{tail}"),
        ),
        Some(sig) => Failure::new(
            FailureCode::WorkerCrashed,
            format!("the worker died from signal {sig} ({}){tail}", signal_name(sig)),
        ),
        None => Failure::new(
            FailureCode::WorkerCrashed,
            format!("the worker exited with status {} without a report{tail}", status.code().unwrap_or(-1)),
        ),
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT: an abort, e.g. a failed assertion in libtorch or a device-side assert",
        7 => "SIGBUS",
        8 => "SIGFPE",
        11 => "SIGSEGV: a segmentation fault",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

/// The last lines of the worker's log, for an error message.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!(
        "; its log ({}) ends:\n  {}",
        path.display(),
        tail.join("\n  ")
    )
}
