//! `crusades compress`, `crusades aggregate` and `crusades compress-bench`: the compressor on
//! its own, so Templar users can check it against their Python tooling, and so its speed can
//! be measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crusades_reference::compress::{CompressedTensor, Compressor, CompressorConfig};
use crusades_reference::config::{preset_by_name, HyperParams};
use crusades_reference::device::{device_name, synchronize};
use crusades_reference::io::{self, HostTensor, Upload};
use crusades_reference::model::param_specs;

use crate::report::{self, Stats};
use crate::{bail_input, InputError};

#[derive(Args)]
pub struct CompressArgs {
    /// A safetensors file of floating-point 1-D or 2-D tensors (e.g. gradients).
    pub input: PathBuf,
    /// Where to write the upload.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Coefficients kept per chunk.
    #[arg(long, default_value_t = HyperParams::default().topk)]
    pub topk: i64,
    /// Chunk target: each dimension is cut into its largest divisor ≤ this.
    #[arg(long, default_value_t = HyperParams::default().chunk)]
    pub chunk: i64,
    /// Quantisation bins.
    #[arg(long, default_value_t = HyperParams::default().bins)]
    pub bins: i64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct CompressedReport {
    name: String,
    shape: Vec<i64>,
    chunk: [i64; 2],
    k: i64,
    chunks: i64,
    /// ‖x − decoded‖ / ‖x‖.
    relative_error: f64,
    upload_bytes: usize,
}

/// Reads `path` and returns its tensors as f32, refusing what the compressor cannot take.
fn read_gradients(path: &Path, device: Device) -> anyhow::Result<Vec<(String, Tensor)>> {
    let file = io::read(path, device)?;
    if file.tensors.is_empty() {
        bail_input!("{}: holds no tensors", path.display());
    }
    let mut out = Vec::with_capacity(file.tensors.len());
    for (name, t) in file.tensors {
        if !matches!(
            t.kind(),
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) {
            bail_input!(
                "{}: tensor {name} has dtype {:?}; the compressor takes floating-point tensors",
                path.display(),
                t.kind()
            );
        }
        if !(1..=2).contains(&t.dim()) || t.numel() == 0 {
            bail_input!(
                "{}: tensor {name} has shape {:?}; the compressor takes non-empty 1-D or 2-D tensors",
                path.display(),
                t.size()
            );
        }
        let t = t.f_to_kind(Kind::Float)?;
        if !bool::try_from(t.f_isfinite()?.f_all()?)? {
            bail_input!("{}: tensor {name} contains NaN or Inf", path.display());
        }
        out.push((name, t));
    }
    Ok(out)
}

fn upload_bytes(ct: &CompressedTensor) -> usize {
    // u16 index + u8 code per kept value, two f32 scalars and the f32 lookup.
    ct.idx.numel() * 3 + 8 + ct.lookup.numel() * 4
}

pub fn compress(args: CompressArgs) -> anyhow::Result<()> {
    let device = super::setup_device(&args.device, None)?;
    let config = CompressorConfig {
        chunk: args.chunk,
        topk: args.topk,
        bins: args.bins,
        ..CompressorConfig::default()
    };
    config.validate()?;
    let tensors = read_gradients(&args.input, device)?;
    let mut compressor = Compressor::new(config, device);
    let mut upload = Upload {
        names: Vec::new(),
        tensors: Vec::new(),
    };
    let mut decoded = Vec::new();
    let mut rows = Vec::new();
    tch::no_grad(|| -> anyhow::Result<()> {
        for (name, x) in &tensors {
            let ct = compressor.compress(x)?;
            let d = compressor.decode_upload(&ct)?;
            let err = d.f_sub(x)?.f_norm()?.f_double_value(&[])?;
            let norm = x.f_norm()?.f_double_value(&[])?;
            let g = &ct.geometry;
            rows.push(CompressedReport {
                name: name.clone(),
                shape: g.shape.clone(),
                chunk: [g.h, g.w],
                k: ct.k(),
                chunks: g.chunks(),
                relative_error: if norm > 0.0 { err / norm } else { 0.0 },
                upload_bytes: upload_bytes(&ct),
            });
            upload.names.push(name.clone());
            upload.tensors.push(ct);
            decoded.push(d);
        }
        Ok(())
    })?;
    io::write_upload(
        &args.output,
        &upload,
        Some(&decoded),
        &config,
        &BTreeMap::new(),
    )?;
    if args.json {
        let json = serde_json::json!({
            "input": args.input,
            "output": args.output,
            "chunk": config.chunk, "topk": config.topk, "bins": config.bins,
            "tensors": rows,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "{:<40}  {:>14}  {:>7}  {:>4}  {:>8}  {:>10}  {:>10}",
            "tensor", "shape", "chunk", "k", "chunks", "rel. error", "upload"
        );
        for r in &rows {
            println!(
                "{:<40}  {:>14}  {:>7}  {:>4}  {:>8}  {:>10.4}  {:>10}",
                r.name,
                format!("{:?}", r.shape),
                format!("{}×{}", r.chunk[0], r.chunk[1]),
                r.k,
                r.chunks,
                r.relative_error,
                report::bytes(r.upload_bytes as f64)
            );
        }
        println!("wrote {}", args.output.display());
    }
    Ok(())
}

pub fn aggregate(
    uploads: &[PathBuf],
    output: &Path,
    device: &str,
    json: bool,
) -> anyhow::Result<()> {
    let device = super::setup_device(device, None)?;
    let mut read = Vec::with_capacity(uploads.len());
    for path in uploads {
        read.push(io::read_upload(path, device)?);
    }
    let (first, first_config) = &read[0];
    for (path, (upload, config)) in uploads.iter().zip(&read).skip(1) {
        if config.chunk != first_config.chunk {
            bail_input!(
                "{} was compressed with chunk {}, but {} with chunk {}",
                path.display(),
                config.chunk,
                uploads[0].display(),
                first_config.chunk
            );
        }
        if upload.names != first.names {
            let missing: Vec<_> = first
                .names
                .iter()
                .filter(|n| !upload.names.contains(n))
                .collect();
            let extra: Vec<_> = upload
                .names
                .iter()
                .filter(|n| !first.names.contains(n))
                .collect();
            bail_input!(
                "{} does not hold the same tensors as {} (missing {missing:?}, extra {extra:?})",
                path.display(),
                uploads[0].display()
            );
        }
    }
    let mut compressor = Compressor::new(*first_config, device);
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for (i, name) in first.names.iter().enumerate() {
        let sources: Vec<&CompressedTensor> = read.iter().map(|(u, _)| &u.tensors[i]).collect();
        let agg = compressor
            .aggregate(&sources)
            .map_err(|e| InputError(format!("{name}: {e}")))?;
        let update = agg.f_sign()?;
        let nonzero =
            update.f_count_nonzero(None::<i64>)?.f_int64_value(&[])? as f64 / update.numel() as f64;
        rows.push(
            serde_json::json!({ "name": name, "shape": agg.size(), "nonzero_fraction": nonzero }),
        );
        out.push((format!("{name}.aggregate"), HostTensor::from_tensor(&agg)?));
        out.push((format!("{name}.update"), HostTensor::from_tensor(&update)?));
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "crusades-aggregate/1".to_string());
    meta.insert("sources".to_string(), uploads.len().to_string());
    io::write(output, &out, &meta)?;
    if json {
        let j = serde_json::json!({ "uploads": uploads, "output": output, "tensors": rows });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "aggregated {} uploads of {} tensors → {}",
            uploads.len(),
            first.names.len(),
            output.display()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    /// Gradients to compress (a safetensors file). Without it, gradient-shaped random tensors
    /// of the preset's model are used.
    pub input: Option<PathBuf>,
    /// Model whose parameter shapes to use when no input is given.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Peer uploads aggregated with the own upload (default: the preset's).
    #[arg(long)]
    pub peers: Option<u64>,
    /// Timed iterations.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// libtorch intra-op threads (default: libtorch's choice, all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON report instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.iters == 0 {
        bail_input!("--iters must be at least 1");
    }
    let device = super::setup_device(&args.device, args.threads)?;
    let preset = preset_by_name(&args.preset)?;
    let peers = args.peers.unwrap_or(preset.peers) as usize;
    let tensors: Vec<(String, Tensor)> = match &args.input {
        Some(path) => read_gradients(path, device)?,
        None => {
            tch::manual_seed(0);
            param_specs(&preset.model)
                .into_iter()
                .map(|s| {
                    Ok((
                        s.name,
                        Tensor::f_randn(s.shape.as_slice(), (Kind::Float, device))?
                            .f_mul_scalar(1e-4)?,
                    ))
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    let gradient_bytes: usize = tensors.iter().map(|(_, t)| t.numel() * 4).sum();
    let mut compressor = Compressor::new(CompressorConfig::default(), device);
    let bar = report::progress((args.warmup + args.iters) as u64, "bench");
    let mut compress_s = Vec::new();
    let mut aggregate_s = Vec::new();
    for i in 0..args.warmup + args.iters {
        let (c, a) = tch::no_grad(|| -> anyhow::Result<(f64, f64)> {
            synchronize(device);
            let t0 = Instant::now();
            let mut uploads = Vec::with_capacity(tensors.len());
            for (_, x) in &tensors {
                let ct = compressor.compress(x)?;
                // The error-feedback decode is part of every window's compression.
                let _feedback = compressor.decode_upload(&ct)?;
                uploads.push(ct);
            }
            synchronize(device);
            let t1 = Instant::now();
            for ct in &uploads {
                // The own upload stands in for each peer: aggregation's cost depends only on
                // the number of sources and their shapes.
                let sources = vec![ct; peers + 1];
                let _update = compressor.aggregate(&sources)?.f_sign()?;
            }
            synchronize(device);
            Ok(((t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64()))
        })?;
        if i >= args.warmup {
            compress_s.push(c);
            aggregate_s.push(a);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let c = Stats::new(&compress_s);
    let a = Stats::new(&aggregate_s);
    let total: Vec<f64> = compress_s
        .iter()
        .zip(&aggregate_s)
        .map(|(x, y)| x + y)
        .collect();
    let t = Stats::new(&total);
    let gbps = |s: f64| gradient_bytes as f64 / s / 1e9;
    if args.json {
        let j = serde_json::json!({
            "input": args.input,
            "preset": args.input.is_none().then_some(&args.preset),
            "device": device_name(device),
            "threads": tch::get_num_threads(),
            "tensors": tensors.len(),
            "gradient_bytes": gradient_bytes,
            "peers": peers,
            "iters": args.iters,
            "compress_s": c,
            "aggregate_s": a,
            "total_s": t,
            "compress_gb_per_s": gbps(c.median),
            "aggregate_gb_per_s": gbps(a.median),
            "total_gb_per_s": gbps(t.median),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "{} tensors, {} of f32 gradient, {} peers, {} threads on {}, {} timed iterations",
            tensors.len(),
            report::bytes(gradient_bytes as f64),
            peers,
            tch::get_num_threads(),
            device_name(device),
            args.iters
        );
        for (what, s) in [("compress", &c), ("aggregate", &a), ("total", &t)] {
            println!(
                "{:>10}  {}  ·  {:.2} GB/s",
                what,
                s.display(),
                gbps(s.median)
            );
        }
    }
    Ok(())
}
