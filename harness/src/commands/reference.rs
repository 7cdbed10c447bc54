//! `crusades reference`: the trusted DeMo workload, window by window.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crusades_reference::device::device_name;
use crusades_reference::io::{self, HostTensor};
use crusades_reference::window::{self, Progress, WindowTimings};
use crusades_reference::{compress::CompressorConfig, config::WorkloadConfig};

use crate::report;

#[derive(Args)]
pub struct ReferenceArgs {
    #[command(flatten)]
    pub workload: super::workload::WorkloadArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads (default: libtorch's choice, all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write each window's upload, the peers' uploads, the final weights and run.json here.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct WindowReport {
    window: u64,
    page: u64,
    loss: f64,
    tokens_per_s: f64,
    #[serde(flatten)]
    timings: WindowTimings,
}

#[derive(Serialize)]
struct Summary {
    first_loss: f64,
    final_loss: f64,
    ln_vocab: f64,
    mean_step_s: f64,
    tokens_per_s: f64,
    /// (compress + aggregate) / step, over all windows.
    compression_share: f64,
    /// Peer uploads, computed outside the step's clock.
    peer_s: f64,
    wall_s: f64,
}

#[derive(Serialize)]
struct RunReport<'a> {
    workload_hash: String,
    config: &'a WorkloadConfig,
    device: String,
    threads: i32,
    parameters: i64,
    tokens_per_window: i64,
    windows: Vec<WindowReport>,
    summary: Summary,
    outputs: Vec<PathBuf>,
}

pub fn run(args: ReferenceArgs) -> anyhow::Result<()> {
    let device = super::setup_device(&args.device, args.threads)?;
    let (config, corpus) = args.workload.resolve()?;
    let hash = config.workload_hash();
    let params = crusades_reference::model::parameter_count(&config.model);
    let tokens = config.tokens_per_window();

    if !args.json {
        println!(
            "reference  preset {}  ·  {} parameters  ·  {} tokens/window  ·  {} windows  ·  {} peers  ·  {}",
            config.preset,
            report::count(params as f64),
            report::count(tokens as f64),
            config.windows,
            config.peers,
            device_name(device),
        );
        println!("workload   {hash}");
        println!();
        println!(
            "{:>6}  {:>8}  {:>8}  {:>10}  {:>9}  {:>9}  {:>9}  {:>9}",
            "window", "page", "loss", "tokens/s", "fwd+bwd", "compress", "aggregate", "step"
        );
    }
    let bar = report::progress(config.windows, "reference");
    let started = Instant::now();
    let mut rows = Vec::new();
    let out = window::run(&config, &corpus, device, |p| match p {
        Progress::PeersDone { window, .. } => bar.set_message(format!("window {window}: stepping")),
        Progress::WindowDone(w) => {
            let row = WindowReport {
                window: w.window,
                page: w.page,
                loss: w.loss,
                tokens_per_s: tokens as f64 / w.timings.step_s,
                timings: w.timings,
            };
            if !args.json {
                bar.suspend(|| {
                    println!(
                        "{:>6}  {:>8}  {:>8.4}  {:>10}  {:>9}  {:>9}  {:>9}  {:>9}",
                        row.window,
                        row.page,
                        row.loss,
                        report::count(row.tokens_per_s),
                        report::duration(row.timings.forward_backward_s),
                        report::duration(row.timings.compress_s),
                        report::duration(row.timings.aggregate_s),
                        report::duration(row.timings.step_s),
                    )
                });
            }
            rows.push(row);
            bar.inc(1);
            bar.set_message(format!("window {}: peers", w.window + 1));
        }
    })?;
    bar.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64();

    let step_total: f64 = rows.iter().map(|r| r.timings.step_s).sum();
    let compression: f64 = rows
        .iter()
        .map(|r| r.timings.compress_s + r.timings.aggregate_s)
        .sum();
    let n = rows.len().max(1) as f64;
    let summary = Summary {
        first_loss: rows.first().map_or(f64::NAN, |r| r.loss),
        final_loss: rows.last().map_or(f64::NAN, |r| r.loss),
        ln_vocab: (config.model.vocab as f64).ln(),
        mean_step_s: step_total / n,
        tokens_per_s: tokens as f64 * n / step_total,
        compression_share: compression / step_total,
        peer_s: out.peer_seconds,
        wall_s,
    };

    let mut written = Vec::new();
    if let Some(dir) = &args.out {
        written = write_outputs(dir, &config, &hash, &out)?;
    }
    if args.json {
        let report = RunReport {
            workload_hash: hash,
            config: &config,
            device: device_name(device),
            threads: tch::get_num_threads(),
            parameters: params,
            tokens_per_window: tokens,
            windows: rows,
            summary,
            outputs: written,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!();
        println!(
            "loss       {:.4} → {:.4}  (ln vocab = {:.4})",
            summary.first_loss, summary.final_loss, summary.ln_vocab
        );
        println!(
            "step       {} mean  ·  {} tokens/s  ·  compression + aggregation {} of the step",
            report::duration(summary.mean_step_s),
            report::count(summary.tokens_per_s),
            report::percent(summary.compression_share)
        );
        println!(
            "untimed    peer uploads {}  ·  wall {}",
            report::duration(summary.peer_s),
            report::duration(summary.wall_s)
        );
        if let Some(dir) = &args.out {
            println!("outputs    {} files in {}", written.len(), dir.display());
        }
    }
    Ok(())
}

/// window-W.upload.safetensors, peers/window-W.peer-J.safetensors, final.safetensors, run.json.
fn write_outputs(
    dir: &std::path::Path,
    config: &WorkloadConfig,
    hash: &str,
    out: &window::RunOutput,
) -> anyhow::Result<Vec<PathBuf>> {
    let compressor = CompressorConfig::from(&config.hparams);
    let mut meta = BTreeMap::new();
    meta.insert("workload_hash".to_string(), hash.to_string());
    let mut written = Vec::new();
    for w in &out.windows {
        let path = dir.join(format!("window-{}.upload.safetensors", w.window));
        let mut m = meta.clone();
        m.insert("window".into(), w.window.to_string());
        m.insert("loss".into(), format!("{}", w.loss));
        io::write_upload(&path, &w.upload, None, &compressor, &m)?;
        written.push(path);
    }
    for (w, peers) in out.peers.iter().enumerate() {
        for (j, upload) in peers.iter().enumerate() {
            let path = dir
                .join("peers")
                .join(format!("window-{w}.peer-{j}.safetensors"));
            let mut m = meta.clone();
            m.insert("window".into(), w.to_string());
            m.insert("peer_uid".into(), (config.uid + 1 + j as u64).to_string());
            io::write_upload(&path, upload, None, &compressor, &m)?;
            written.push(path);
        }
    }
    let params = &out.trainer.params;
    let tensors = params
        .specs
        .iter()
        .zip(&params.tensors)
        .map(|(s, t)| Ok((s.name.clone(), HostTensor::from_tensor(t)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut m = meta.clone();
    m.insert("format".into(), "crusades-weights/1".into());
    let path = dir.join("final.safetensors");
    io::write(&path, &tensors, &m)?;
    written.push(path);
    let path = dir.join("run.json");
    let json = serde_json::json!({
        "workload_hash": hash,
        "config": config,
        "losses": out.windows.iter().map(|w| w.loss).collect::<Vec<_>>(),
        "pages": out.windows.iter().map(|w| w.page).collect::<Vec<_>>(),
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    written.push(path);
    Ok(written)
}
