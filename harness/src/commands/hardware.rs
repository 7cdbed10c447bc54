//! `crusades hardware`: what the harness sees on this machine, and whether `--device` will work.
//!
//! Every probe runs even when an earlier one failed, so that on a machine where CUDA does not
//! work the output says which link is missing: the NVIDIA driver, a GPU, libtorch's CUDA
//! backend, NVML or NVRTC. It is the first thing the GPU runner (ci/gpu) calls.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crusades_gpu::cuda;
use crusades_reference::device::{ensure_cuda, parse_device_spec};
use crusades_results::record;
use tch::Device;

use crate::{hardware, peak};

#[derive(Args)]
pub struct HardwareArgs {
    /// cpu, cuda or cuda:N: the device whose peak and properties to show.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Override the peak FLOP/s (TFLOP/s), as for bench.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Where the CPU peak calibration is cached (bench's --cache).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Also time a dense bf16 GEMM for --gemm-seconds on the device, with NVML watching: the
    /// achieved FLOP/s (the device's practical ceiling) and, on Hopper and later, the tensor
    /// activity GPM reports for it, which calibrates the tensor-activity gate.
    #[arg(long)]
    pub gemm: bool,
    /// Seconds of GEMMs for --gemm.
    #[arg(long, default_value_t = 5.0)]
    pub gemm_seconds: f64,
    /// Side of the square matrices for --gemm (default: 8192 on CUDA, 2048 on CPU).
    #[arg(long)]
    pub gemm_n: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    device: String,
    /// Whether `--device` can be used for a bench here.
    usable: bool,
    cpu: record::Cpu,
    libtorch: String,
    cuda: CudaReport,
    gpu: Option<record::Gpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu_unavailable: Option<String>,
    /// Notes where the CUDA driver or NVML could not say something the other one did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gpu_notes: Vec<String>,
    peak: Option<record::Peak>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gemm: Option<GemmProbe>,
}

/// A dense bf16 GEMM loop timed on the device, with the GPU's telemetry over the same span.
#[derive(Serialize)]
struct GemmProbe {
    n: i64,
    products: u64,
    seconds: f64,
    flops_per_s: f64,
    /// flops_per_s / the peak MFU divides by.
    of_peak: Option<f64>,
    telemetry: record::Telemetry,
    /// flops_per_s / (GPM tensor activity × SMs × mean SM clock × the architecture's rate):
    /// 1 when GPM's activity is the share of time at full tensor rate. The tensor-activity
    /// gate assumes it is at most 1; above 1 the gate's bound is too tight by that factor.
    activity_ratio: Option<f64>,
}

#[derive(Serialize)]
struct CudaReport {
    /// The driver API version, or why libcuda cannot be used.
    driver: Probe,
    device_count: Probe,
    /// Whether libtorch's CUDA backend (libtorch_cuda.so) loads and sees the device.
    libtorch_cuda: Probe,
    nvrtc: Probe,
}

/// One probe's outcome: `{"ok": true, "value": …}` or `{"ok": false, "error": …}`.
#[derive(Serialize)]
struct Probe {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl<T: ToString> From<Result<T, String>> for Probe {
    fn from(r: Result<T, String>) -> Self {
        match r {
            Ok(v) => Probe {
                ok: true,
                value: Some(v.to_string()),
                error: None,
            },
            Err(e) => Probe {
                ok: false,
                value: None,
                error: Some(e),
            },
        }
    }
}

pub fn run(args: HardwareArgs) -> anyhow::Result<u8> {
    let spec = args.device.trim().to_string();
    let device = parse_device_spec(&spec)?;
    let ordinal = match device {
        Device::Cuda(i) => i,
        _ => 0,
    };
    let cuda_report = CudaReport {
        driver: cuda::driver_version().into(),
        device_count: if cuda::driver_present() {
            cuda::device_count()
        } else {
            Err("not tried: no CUDA driver".to_string())
        }
        .into(),
        libtorch_cuda: if cuda::driver_present() {
            ensure_cuda(ordinal)
                .map(|()| format!("loaded; {} device(s)", tch::Cuda::device_count()))
                .map_err(|e| e.to_string())
        } else {
            Err("not tried: no CUDA driver".to_string())
        }
        .into(),
        nvrtc: cuda::nvrtc_version().into(),
    };
    // CPU facts are read after libtorch's CUDA backend may have loaded: the thread count is
    // the same either way.
    let hw = hardware::detect(device);
    let usable = match device {
        Device::Cpu => true,
        _ => cuda_report.libtorch_cuda.ok,
    };
    let cache = super::workload::cache_dir(args.cache.as_deref());
    let peak = if usable {
        peak::resolve(device, &hw, args.peak_tflops, &cache, false)
    } else {
        Err(anyhow::anyhow!("the device is not usable"))
    };
    let (peak, peak_error) = match peak {
        Ok(p) => (Some(super::bench::peak_info(&p)), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let gemm = if args.gemm && usable {
        Some(gemm_probe(device, &hw, &args, peak.as_ref())?)
    } else {
        None
    };
    let gpu_notes = hw.gpu.as_ref().map(|g| g.notes.clone()).unwrap_or_default();
    let bench_hw = super::bench::hardware_info(&hw);
    let report = Report {
        device: spec.clone(),
        usable,
        cpu: bench_hw.cpu,
        libtorch: peak::libtorch_version(),
        cuda: cuda_report,
        gpu: bench_hw.gpu,
        gpu_unavailable: hw.gpu_unavailable.clone(),
        gpu_notes,
        peak,
        peak_error,
        gemm,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    // Exit 2, like any command given a device it cannot use.
    Ok(if usable { 0 } else { 2 })
}

/// Times `n`² bf16 products for about `--gemm-seconds`, waiting for the device every few
/// products so that the span is the device's, while the NVML sampler (CUDA) watches.
fn gemm_probe(
    device: Device,
    hw: &hardware::Hardware,
    args: &HardwareArgs,
    peak: Option<&record::Peak>,
) -> anyhow::Result<GemmProbe> {
    use crusades_gpu::sampler::{Sampler, DEFAULT_INTERVAL};
    use crusades_gpu::telemetry::{self, Window};
    use crusades_reference::device::synchronize;
    use tch::{Kind, Tensor};

    if !(args.gemm_seconds.is_finite() && args.gemm_seconds > 0.0) {
        crate::bail_input!("--gemm-seconds must be a positive number of seconds");
    }
    let n = args
        .gemm_n
        .unwrap_or(if device == Device::Cpu { 2048 } else { 8192 });
    if n < 1 {
        crate::bail_input!("--gemm-n must be at least 1");
    }
    // Random data: a GPU's clocks depend on the values it multiplies (constant inputs run
    // faster, measurement-anchors.md §4), and the gate is for real data.
    let opts = (Kind::BFloat16, device);
    let a = Tensor::f_randn([n, n], opts).map_err(peak::torch)?;
    let b = Tensor::f_randn([n, n], opts).map_err(peak::torch)?;
    let out = Tensor::f_empty([n, n], opts).map_err(peak::torch)?;
    let _warm = a.f_mm_out(&out, &b).map_err(peak::torch)?;
    synchronize(device);
    let gpu = hw.gpu.as_ref().filter(|_| device != Device::Cpu);
    let sampler = gpu.map(|g| Sampler::start(&g.uuid, DEFAULT_INTERVAL));
    let spinner = crate::report::spinner(&format!(
        "timing {n}² bf16 GEMMs for {} s",
        args.gemm_seconds
    ));
    let started = std::time::Instant::now();
    let start_ns = crusades_gpu::monotonic_ns();
    let mut products = 0u64;
    while started.elapsed().as_secs_f64() < args.gemm_seconds {
        for _ in 0..8 {
            let _same_as_out = a.f_mm_out(&out, &b).map_err(peak::torch)?;
        }
        products += 8;
        synchronize(device);
    }
    let seconds = started.elapsed().as_secs_f64();
    let end_ns = crusades_gpu::monotonic_ns();
    spinner.finish_and_clear();
    let samples = sampler.map(|s| s.map(Sampler::stop));
    let flops_per_s = products as f64 * 2.0 * (n as f64).powi(3) / seconds;
    let per_clock = gpu.and_then(peak::tensor_flops_per_clock);
    let telemetry = match (gpu, samples) {
        (Some(g), Some(Ok(samples))) => record::Telemetry::Measured(Box::new(
            telemetry::summarize(&g.uuid, &samples, Window { start_ns, end_ns }, 0, per_clock),
        )),
        (_, Some(Err(reason))) => record::Telemetry::Unavailable { reason },
        _ => record::Telemetry::Unavailable {
            reason: super::bench::CPU_RUN_TELEMETRY.into(),
        },
    };
    let activity_ratio = telemetry
        .measured()
        .and_then(|t| t.tensor_bound_flops_per_s)
        .filter(|&bound| bound > 0.0)
        .map(|bound| flops_per_s / bound);
    Ok(GemmProbe {
        n,
        products,
        seconds,
        flops_per_s,
        of_peak: peak.map(|p| flops_per_s / p.flops_per_s),
        telemetry,
        activity_ratio,
    })
}

fn line(label: &str, probe: &Probe) {
    match (&probe.value, &probe.error) {
        (Some(v), _) => println!("  {label:<14} {v}"),
        (None, Some(e)) => println!("  {label:<14} ✗ {e}"),
        (None, None) => {}
    }
}

fn print_human(r: &Report) {
    println!("CPU");
    println!(
        "  {:<14} {} ({} CPUs; libtorch threads {})",
        "model", r.cpu.model, r.cpu.logical_cpus, r.cpu.torch_threads
    );
    println!("  {:<14} {}", "libtorch", r.libtorch);
    println!(
        "CUDA{}",
        if r.device == "cpu" {
            " (not needed for --device cpu)"
        } else {
            ""
        }
    );
    line("driver", &r.cuda.driver);
    line("devices", &r.cuda.device_count);
    line("libtorch_cuda", &r.cuda.libtorch_cuda);
    line("NVRTC", &r.cuda.nvrtc);
    if let Some(g) = &r.gpu {
        println!("GPU ({})", r.device);
        println!("  {:<14} {}", "name", g.name);
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "n/a".into());
        println!("  {:<14} {}", "uuid", opt(&g.uuid));
        println!(
            "  {:<14} {}  ·  {} SMs  ·  max SM clock {} MHz",
            "compute",
            opt(&g.compute_capability),
            g.sm_count.map_or("n/a".into(), |n| n.to_string()),
            g.sm_clock_max_mhz.map_or("n/a".into(), |n| n.to_string())
        );
        println!(
            "  {:<14} {} GiB  ·  power limit {}  ·  NVIDIA driver {}",
            "memory",
            g.memory_bytes.map_or("n/a".into(), |b| format!(
                "{:.1}",
                b as f64 / (1u64 << 30) as f64
            )),
            g.power_limit_w
                .map_or("n/a".into(), |w| format!("{w:.0} W")),
            opt(&g.driver)
        );
    } else if let Some(why) = &r.gpu_unavailable {
        println!("GPU ({})\n  ✗ {why}", r.device);
    }
    for n in &r.gpu_notes {
        println!("  note           {n}");
    }
    match (&r.peak, &r.peak_error) {
        (Some(p), _) => {
            println!(
                "Peak\n  {:<14} {:.1} TFLOP/s {} ({})\n  {:<14} {}",
                "figure",
                p.flops_per_s / 1e12,
                p.dtype,
                p.source,
                "from",
                p.detail
            );
            if let (Some(d), true) = (&p.clock_derived, p.source == "cuda-table") {
                println!(
                    "  {:<14} {:.1} TFLOP/s ({} SMs × {} MHz × {}, {})",
                    "clock-derived",
                    d.flops_per_s / 1e12,
                    d.sm_count,
                    d.sm_clock_mhz,
                    d.flops_per_clock_per_sm,
                    d.architecture
                );
            }
        }
        (None, Some(e)) => println!("Peak\n  ✗ {e}"),
        (None, None) => {}
    }
    if let Some(g) = &r.gemm {
        println!(
            "GEMM ({}² bf16, {} products in {:.2} s)\n  {:<14} {:.1} TFLOP/s{}",
            g.n,
            g.products,
            g.seconds,
            "achieved",
            g.flops_per_s / 1e12,
            g.of_peak
                .map(|f| format!(" ({:.1}% of the peak)", 100.0 * f))
                .unwrap_or_default()
        );
        match &g.telemetry {
            record::Telemetry::Measured(t) => {
                let f = |v: Option<f64>, scale: f64, unit: &str| {
                    v.map(|v| format!("{:.1}{unit}", v * scale))
                        .unwrap_or_else(|| "n/a".into())
                };
                println!(
                    "  {:<14} SM clock {} · power {} · tensor pipes active {} · achieved / GPM bound {}",
                    "telemetry",
                    f(t.sm_clock_mean_mhz, 1.0, " MHz"),
                    f(t.power_mean_w, 1.0, " W"),
                    f(t.tensor_active, 100.0, "%"),
                    g.activity_ratio
                        .map(|r| format!("{r:.3}"))
                        .unwrap_or_else(|| "n/a".into())
                );
            }
            record::Telemetry::Unavailable { reason } => {
                println!("  {:<14} unavailable: {reason}", "telemetry")
            }
        }
    }
    println!(
        "\n{} {}",
        if r.usable { "✓" } else { "✗" },
        if r.usable {
            format!("--device {} is usable", r.device)
        } else {
            format!(
                "--device {} is not usable here; the ✗ lines say why",
                r.device
            )
        }
    );
}
