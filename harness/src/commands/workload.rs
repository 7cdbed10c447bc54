//! The workload flags every command that runs one shares, and the on-disk cache of prepared
//! workloads (the peer uploads, which take a reference run to make).

use std::path::{Path, PathBuf};

use clap::Args;

use crusades_reference::config::WorkloadConfig;
use crusades_reference::corpus::{Corpus, TokenDtype};
use crusades_sandbox::worker::{self, Job, Program, Report};
use crusades_sandbox::{Failure, Limits};

use crate::report;

#[derive(Args, Clone)]
pub struct WorkloadArgs {
    /// Model and window preset: tiny, small, 150m or 1b (WORKLOAD.md).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Number of windows W (default: the preset's).
    #[arg(long)]
    pub windows: Option<u64>,
    /// The miner's uid: selects its pages (the peers are uid+1 … uid+P).
    #[arg(long)]
    pub uid: Option<u64>,
    /// The workload seed: θ0 and the synthetic corpus.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of peers P whose uploads are aggregated (default: the preset's).
    #[arg(long)]
    pub peers: Option<u64>,
    /// Override any workload field, e.g. --set layers=4 --set lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", long_help = settable_help())]
    pub overrides: Vec<String>,
    /// Train on a token file (.bin of u16/u32, or .npy) instead of the synthetic corpus.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Element type of a raw .bin token file.
    #[arg(long, value_parser = ["u16", "u32"])]
    pub token_dtype: Option<String>,
}

fn settable_help() -> String {
    format!(
        "Override any workload field (repeatable), e.g. --set layers=4 --set lr=1e-3.\nKeys: {}",
        WorkloadConfig::SETTABLE.join(", ")
    )
}

impl WorkloadArgs {
    /// The resolved configuration and its corpus.
    pub fn resolve(&self) -> anyhow::Result<(WorkloadConfig, Corpus)> {
        let mut config = WorkloadConfig::from_preset(&self.preset)?;
        let mut overrides = Vec::new();
        for (key, value) in [
            ("windows", self.windows),
            ("uid", self.uid),
            ("seed", self.seed),
            ("peers", self.peers),
        ] {
            if let Some(v) = value {
                overrides.push(format!("{key}={v}"));
            }
        }
        if let (Some(seed), None) = (self.seed, &self.corpus) {
            // The seed also draws the synthetic corpus; a token file has none.
            overrides.push(format!("corpus_seed={seed}"));
        }
        overrides.extend(self.overrides.iter().cloned());
        config.apply_overrides(&overrides)?;
        let corpus = match &self.corpus {
            Some(path) => {
                let dtype = self
                    .token_dtype
                    .as_deref()
                    .map(TokenDtype::parse)
                    .transpose()?;
                Corpus::from_token_file(path, dtype, &mut config)?
            }
            None => Corpus::synthetic(&config)?,
        };
        Ok((config, corpus))
    }
}

/// `--cache`, else $CRUSADES_CACHE, else $XDG_CACHE_HOME/crusades, else ~/.cache/crusades.
pub fn cache_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("CRUSADES_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("crusades")
}

/// Whether [`prepare`] would find `config`'s workload for `device` in the cache.
pub fn is_prepared(cache: &Path, config: &WorkloadConfig, device: &str) -> bool {
    prepared_dir(cache, config, device).join(COMPLETE).is_file()
}

/// `cuda` or `cpu`: what the device's arithmetic is, which cached outputs depend on.
pub fn device_kind(device: &str) -> &'static str {
    if device.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

fn prepared_dir(cache: &Path, config: &WorkloadConfig, device: &str) -> PathBuf {
    cache.join("workloads").join(format!(
        "{}-{}",
        &config.workload_hash()[..16],
        device_kind(device)
    ))
}

/// Runs `job` in a worker and returns its report and the parent's wall clock around it. A
/// failure that is the submission's comes back inside the report (wall NaN when the worker
/// left none); a failure of the harness or the machine is an error, and so is a worker clock
/// that exceeds the parent's (the timing cannot be trusted).
pub fn run_worker(exe: &Path, job: &Job, out: &Path) -> anyhow::Result<(Report, f64)> {
    let (report, wall_s) = match worker::spawn(exe, job, out) {
        Ok(r) => (r.report, r.wall_s),
        Err(f) if f.code.is_submission_fault() => {
            let mut report = Report::for_job(job);
            report.failure = Some(f);
            (report, f64::NAN)
        }
        Err(f) => return Err(failure_error(f)),
    };
    if let Some(f) = &report.failure {
        if !f.code.is_submission_fault() {
            return Err(failure_error(f.clone()));
        }
    }
    if report.failure.is_none() && report.timing.run_s > wall_s {
        anyhow::bail!(
            "the worker's clock ({:.3} s) exceeds the parent's wall clock around the whole worker ({wall_s:.3} s); the timing cannot be trusted",
            report.timing.run_s
        );
    }
    if report.failure.is_none() && device_kind(&job.device) == "cuda" {
        if let Some(why) = &report.timing.device_clock_error {
            anyhow::bail!(
                "the CUDA event clock failed, so the run's time cannot be cross-checked: {why}"
            );
        }
    }
    Ok((report, wall_s))
}

/// Marks a prepared workload directory as complete; written last.
const COMPLETE: &str = "complete";

/// The prepared workload for `config` on `device` (its peer uploads), made by a reference run
/// in a worker the first time and cached by workload hash. Peer uploads depend on the device's
/// arithmetic, so each device kind has its own.
pub fn prepare(
    exe: &Path,
    cache: &Path,
    config: &WorkloadConfig,
    args: &WorkloadArgs,
    device: &str,
    threads: Option<usize>,
    chatty: bool,
) -> anyhow::Result<PathBuf> {
    let kind = device_kind(device);
    let hash = config.workload_hash();
    let dir = prepared_dir(cache, config, device);
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    let staging = cache.join("workloads").join(format!(
        ".{}-{kind}.tmp-{}",
        &hash[..16],
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let job = Job {
        program: Program::Prepare,
        config: config.clone(),
        corpus_file: args.corpus.as_ref().map(|p| p.canonicalize()).transpose()?,
        token_dtype: args.token_dtype.clone(),
        workload_dir: staging.clone(),
        device: device.to_string(),
        limits: Limits::default(),
        threads,
        grace_s: worker::DEFAULT_GRACE_S,
        snapshots: false,
    };
    let spinner = report::spinner(&format!(
        "preparing the workload {} (a reference run makes the peers' uploads; cached afterwards)",
        &hash[..16]
    ));
    let done = worker::spawn(exe, &job, &staging);
    spinner.finish_and_clear();
    let result = done.map_err(failure_error)?;
    if let Some(f) = result.report.failure {
        return Err(failure_error(f).context("preparing the workload"));
    }
    if chatty {
        eprintln!(
            "prepared the workload in {} ({})",
            report::duration(result.wall_s),
            dir.display()
        );
    }
    std::fs::write(staging.join(COMPLETE), hash.as_bytes())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)?;
    Ok(dir)
}

/// A failure of the harness or the machine, as an error for the CLI.
pub fn failure_error(f: Failure) -> anyhow::Error {
    if f.code == crusades_sandbox::FailureCode::Device {
        anyhow::Error::new(crate::InputError(f.to_string()))
    } else {
        anyhow::Error::new(f)
    }
}
