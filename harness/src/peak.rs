//! The peak FLOP/s that MFU divides by.
//!
//! - On CUDA: the device's dense bf16 tensor-core figure from its datasheet, looked up by the
//!   device name ([`gpu_peak_tflops`]). A spec constant, not a clock-derived number, so that
//!   results on the same GPU model compare (measurement-anchors.md §3). A device the table does
//!   not know (or a MIG slice) falls back to SMs × maximum SM clock × its architecture's dense
//!   bf16 FLOPs per clock per SM ([`clock_derived`]); both figures are recorded when known.
//! - On CPU there is no datasheet figure to trust, so the peak is measured: large square GEMMs
//!   on all libtorch threads, in f32 and in bf16, and the faster of the two is the peak (the
//!   analogue of the GPU's dense bf16 peak). The measurement is cached per machine
//!   ([`cpu_peak`]), so that every bench on the machine divides by the same number.
//! - `--peak-tflops` overrides both.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crusades_results::record::ClockDerivedPeak;

use crate::hardware::{GpuInfo, Hardware};
use crate::report;

/// Where a peak figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeakSource {
    /// The GPU's datasheet dense bf16 figure ([`gpu_peak_tflops`]).
    CudaTable,
    /// SMs × maximum SM clock × the architecture's rate ([`clock_derived`]).
    CudaClockDerived,
    /// Measured GEMM rate on this CPU ([`calibrate_cpu`]).
    CpuGemmCalibrated,
    /// `--peak-tflops`.
    User,
}

impl PeakSource {
    /// The name reports use (the same as the JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            PeakSource::CudaTable => "cuda-table",
            PeakSource::CudaClockDerived => "cuda-clock-derived",
            PeakSource::CpuGemmCalibrated => "cpu-gemm-calibrated",
            PeakSource::User => "user",
        }
    }
}

impl std::fmt::Display for PeakSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The denominator of MFU and HFU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub flops_per_s: f64,
    pub source: PeakSource,
    /// The arithmetic the figure is for: "bf16" or "f32", or "user" for `--peak-tflops`.
    pub dtype: String,
    /// One line for humans: which device or table row, and for CPU whether it was cached.
    pub detail: String,
    /// The CPU measurement behind a `cpu-gemm-calibrated` peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CpuCalibration>,
    /// On CUDA: the datasheet figure, when the table knows the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_flops_per_s: Option<f64>,
    /// On CUDA: the clock-derived figure, when the architecture's rate is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_derived: Option<ClockDerivedPeak>,
}

/// Resolves the peak FLOP/s for a run on `device`.
///
/// `override_tflops` (`--peak-tflops`) wins. Otherwise CUDA looks up `hardware.gpu`'s name in
/// the datasheet table, and CPU uses the cached GEMM calibration under `cache_dir` (measured
/// now if there is none for this machine, or if `recalibrate`). An unknown GPU, a MIG slice, a
/// GPU that NVML cannot name, or a bad override is an [`crate::InputError`] that says to pass
/// `--peak-tflops`.
pub fn resolve(
    device: Device,
    hardware: &Hardware,
    override_tflops: Option<f64>,
    cache_dir: &Path,
    recalibrate: bool,
) -> anyhow::Result<Peak> {
    if let Some(tflops) = override_tflops {
        return user_peak(tflops);
    }
    match device {
        Device::Cpu => {
            let plan = CalibrationPlan::default();
            let found = cpu_peak(hardware, cache_dir, recalibrate, &plan)?;
            Ok(found.into_peak())
        }
        Device::Cuda(ordinal) => cuda_peak(ordinal, hardware),
        other => crate::bail_input!(
            "no peak FLOP/s is known for the device {other:?}; pass --peak-tflops with its dense \
             peak in TFLOP/s"
        ),
    }
}

/// The `--peak-tflops` value as a peak.
fn user_peak(tflops: f64) -> anyhow::Result<Peak> {
    if !(tflops.is_finite() && tflops > 0.0) {
        crate::bail_input!(
            "--peak-tflops must be a positive number of TFLOP/s (e.g. 989 for an H100 SXM's dense \
             bf16 peak), not {tflops}"
        );
    }
    Ok(Peak {
        flops_per_s: tflops * 1e12,
        source: PeakSource::User,
        dtype: "user".into(),
        detail: format!("--peak-tflops {tflops} (given by the user, not checked)"),
        calibration: None,
        table_flops_per_s: None,
        clock_derived: None,
    })
}

fn cuda_peak(ordinal: usize, hardware: &Hardware) -> anyhow::Result<Peak> {
    let Some(gpu) = &hardware.gpu else {
        let why = hardware
            .gpu_unavailable
            .as_deref()
            .unwrap_or("neither the CUDA driver nor NVML described it");
        crate::bail_input!(
            "cannot tell which GPU cuda:{ordinal} is, so its peak is unknown ({why}); pass \
             --peak-tflops with its dense bf16 TFLOP/s"
        );
    };
    if gpu.cuda_ordinal != ordinal {
        anyhow::bail!(
            "internal: the hardware was detected for cuda:{}, not cuda:{ordinal}",
            gpu.cuda_ordinal
        );
    }
    // A MIG slice has a fraction of the GPU's SMs: the datasheet figure is the whole GPU's,
    // while the driver's SM count is the slice's own, so only the clock-derived figure fits.
    let table = (!gpu.mig).then(|| gpu_peak_tflops(&gpu.name)).flatten();
    let derived = clock_derived(gpu);
    let table_flops_per_s = table.map(|t| t * 1e12);
    match (table, &derived) {
        (Some(tflops), _) => Ok(Peak {
            flops_per_s: tflops * 1e12,
            source: PeakSource::CudaTable,
            dtype: "bf16".into(),
            detail: format!("{}: dense bf16 {tflops} TFLOP/s (datasheet)", gpu.name),
            calibration: None,
            table_flops_per_s,
            clock_derived: derived,
        }),
        (None, Some(d)) => Ok(Peak {
            flops_per_s: d.flops_per_s,
            source: PeakSource::CudaClockDerived,
            dtype: "bf16".into(),
            detail: format!(
                "{}{}: {} SMs × {} MHz × {} FLOP/clock/SM ({}) = {:.1} TFLOP/s dense bf16; not in \
                 the datasheet table, and the maximum boost clock makes this an upper bound",
                gpu.name,
                if gpu.mig { " (MIG slice)" } else { "" },
                d.sm_count,
                d.sm_clock_mhz,
                d.flops_per_clock_per_sm,
                d.architecture,
                d.flops_per_s / 1e12
            ),
            calibration: None,
            table_flops_per_s,
            clock_derived: derived,
        }),
        (None, None) => {
            let missing = missing_for_clock_derived(gpu);
            crate::bail_input!(
                "no peak FLOP/s is known for the GPU {:?}{}: it is not in the datasheet table \
                 (known: {KNOWN_GPUS}), and it cannot be derived from its clock ({missing}); pass \
                 --peak-tflops with its dense (not sparse) bf16 TFLOP/s",
                gpu.name,
                if gpu.mig { " (a MIG slice)" } else { "" },
            );
        }
    }
}

/// SMs × maximum SM clock × dense bf16 FLOPs per clock per SM, where all three are known.
pub fn clock_derived(gpu: &GpuInfo) -> Option<ClockDerivedPeak> {
    let (per_sm, architecture) = tensor_flops_per_clock_per_sm(gpu.compute_capability?, &gpu.name)?;
    let sm_count = gpu.sm_count.filter(|&n| n > 0)?;
    let clock = gpu.max_sm_clock_mhz.filter(|&c| c > 0)?;
    Some(ClockDerivedPeak {
        flops_per_s: f64::from(sm_count) * f64::from(clock) * 1e6 * per_sm,
        sm_count: u64::from(sm_count),
        sm_clock_mhz: f64::from(clock),
        flops_per_clock_per_sm: per_sm,
        architecture: architecture.to_string(),
    })
}

/// SMs × the architecture's dense bf16 tensor FLOPs per clock per SM: the GPU's tensor FLOPs
/// per clock, which the GPM tensor-activity bound multiplies by activity and clock.
pub fn tensor_flops_per_clock(gpu: &GpuInfo) -> Option<f64> {
    let (per_sm, _) = tensor_flops_per_clock_per_sm(gpu.compute_capability?, &gpu.name)?;
    Some(f64::from(gpu.sm_count?) * per_sm)
}

fn missing_for_clock_derived(gpu: &GpuInfo) -> String {
    let mut missing = Vec::new();
    match gpu.compute_capability {
        None => missing.push("its compute capability is unknown".to_string()),
        Some((major, minor)) if tensor_flops_per_clock_per_sm((major, minor), "").is_none() => {
            missing.push(format!(
                "the bf16 tensor rate of compute capability {major}.{minor} is not known"
            ))
        }
        Some(_) => {}
    }
    if gpu.sm_count.is_none_or(|n| n == 0) {
        missing.push("its SM count is unknown".into());
    }
    if gpu.max_sm_clock_mhz.is_none_or(|c| c == 0) {
        missing.push("its maximum SM clock is unknown".into());
    }
    missing.join(", ")
}

/// Dense bf16 tensor FLOPs per clock per SM with fp32 accumulation, by compute capability,
/// with the architecture's name. Each rate reproduces a datasheet figure (SMs × boost clock ×
/// rate): A100 108 × 1410 MHz × 2048 = 312 TFLOP/s; A40 84 × 1740 × 512 = 74.8; L40S 142 ×
/// 2520 × 1024 = 366; H100 SXM 132 × 1830 × 4096 = 989.4; B200 148 × 1856 × 8192 = 2250.
/// GeForce parts run fp32-accumulate MMA at half rate (RTX 4090: 128 × 2520 × 512 = 165.2).
/// Volta and Turing have no bf16 tensor cores, so they get `None`, as does anything newer
/// than the table.
pub fn tensor_flops_per_clock_per_sm(cc: (i32, i32), name: &str) -> Option<(f64, &'static str)> {
    let geforce = name.to_lowercase().contains("geforce");
    let halved = |full: f64| if geforce { full / 2.0 } else { full };
    match cc {
        (8, 0) => Some((2048.0, "Ampere (sm_80)")),
        (8, 6) => Some((halved(512.0), "Ampere (sm_86)")),
        (8, 9) => Some((halved(1024.0), "Ada (sm_89)")),
        (9, 0) => Some((4096.0, "Hopper (sm_90)")),
        (10, 0) => Some((8192.0, "Blackwell (sm_100)")),
        (12, 0) => Some((halved(1024.0), "Blackwell (sm_120)")),
        _ => None,
    }
}

/// The GPUs [`gpu_peak_tflops`] knows, for error messages.
pub const KNOWN_GPUS: &str =
    "A100 (SXM, PCIe), H100 (SXM, PCIe, NVL), H200, GH200, B200, GB200, L40S, GeForce RTX 4090";

/// The dense bf16 (fp32-accumulate) tensor-core peak of a GPU in TFLOP/s, from its NVML name
/// ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090", …).
///
/// Sources (measurement-anchors.md §3.1): A100 312 (Composer: "sxm and pcie have same flop
/// counts"); H100 SXM 989 (1830 MHz × 132 SMs × 4096 = 989.4, rounded as torchtitan, verl and
/// DESIGN.md do); H100 PCIe 756 and H100 NVL 835 (torchtitan `get_peak_flops`); H200 and GH200
/// 989 (the H100's compute; ml-engineering, torchtitan); B200 2250 and GB200 2500 per GPU
/// (ml-engineering, torchtitan); L40S 362.05 (datasheet, verl); RTX 4090 165.2 (Ada
/// whitepaper via llm.c: GeForce runs fp32-accumulate MMA at half rate, so not 330).
///
/// Returns `None` when the name is not certain to be one of these: a MIG slice, an H100 whose
/// form factor the name does not say, an H200 NVL, a 4090 D or laptop part. A wrong peak would
/// silently skew MFU; `None` makes the caller ask for `--peak-tflops`.
pub fn gpu_peak_tflops(name: &str) -> Option<f64> {
    let lower = name.to_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|t| !t.is_empty())
        .collect();
    let has = |t: &str| tokens.contains(&t);
    if has("mig") {
        return None;
    }
    if has("a100") {
        return Some(312.0);
    }
    if has("h100") {
        if has("nvl") {
            return Some(835.0);
        }
        if has("pcie") {
            return Some(756.0);
        }
        // The SXM part is named "NVIDIA H100 80GB HBM3" (or carries "SXM5").
        if has("hbm3") || tokens.iter().any(|t| t.starts_with("sxm")) {
            return Some(989.0);
        }
        return None;
    }
    if has("h200") {
        // The H200 NVL is a lower-power PCIe card with its own (lower) figure.
        return if has("nvl") { None } else { Some(989.0) };
    }
    if has("gh200") {
        return Some(989.0);
    }
    if has("gb200") {
        return Some(2500.0);
    }
    if has("b200") {
        return Some(2250.0);
    }
    if has("l40s") {
        return Some(362.05);
    }
    let core: Vec<&str> = tokens
        .iter()
        .copied()
        .filter(|t| *t != "nvidia" && *t != "geforce")
        .collect();
    if core == ["rtx", "4090"] {
        return Some(165.2);
    }
    None
}

/// What identifies a machine's CPU calibration: a cached rate is reused only for the same CPU,
/// CPU count, libtorch thread count and libtorch build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationKey {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub torch_threads: usize,
    /// The libtorch build in use, e.g. "2.11.0+cu130" (see [`libtorch_version`]).
    pub libtorch: String,
}

impl CalibrationKey {
    /// The key of this process on `hardware`. The thread count is libtorch's current one,
    /// the one the GEMMs will run on, whenever the hardware was detected.
    pub fn current(hardware: &Hardware) -> Self {
        Self {
            cpu_model: hardware.cpu.model.clone(),
            logical_cpus: hardware.cpu.logical_cpus,
            torch_threads: usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1),
            libtorch: libtorch_version(),
        }
    }
}

/// How long and how big the calibration GEMMs are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPlan {
    /// Side of the square matrices. 2048 is large enough for a GEMM library's blocked kernel
    /// to reach its steady rate, and one f32 product (17 GFLOP) takes ~0.1 s on a 2-core EPYC.
    pub n: i64,
    /// Timed seconds per dtype, split into `batches`.
    pub seconds_per_dtype: f64,
    /// The rate of the fastest batch is kept: interference (another process, a frequency
    /// change) only ever slows a batch down.
    pub batches: u32,
}

impl Default for CalibrationPlan {
    fn default() -> Self {
        Self {
            n: 2048,
            seconds_per_dtype: 1.0,
            batches: 3,
        }
    }
}

/// A measured CPU GEMM rate, as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuCalibration {
    pub key: CalibrationKey,
    pub n: i64,
    pub f32_flops_per_s: f64,
    /// `None` where libtorch cannot multiply bf16 matrices on this CPU.
    pub bf16_flops_per_s: Option<f64>,
    /// The faster dtype, whose rate is the peak: "bf16" or "f32".
    pub dtype: String,
    /// Wall seconds the whole calibration took (warm-ups included).
    pub seconds: f64,
    /// When it was measured, in seconds since the Unix epoch.
    pub measured_at: u64,
    /// The 1-minute load average just before measuring (/proc/loadavg), when readable: other
    /// work on the CPUs lowers the measured rate, and with it inflates every MFU divided by it.
    #[serde(default)]
    pub load_before: Option<f64>,
}

impl CpuCalibration {
    /// The peak: the faster dtype's rate.
    pub fn flops_per_s(&self) -> f64 {
        self.f32_flops_per_s
            .max(self.bf16_flops_per_s.unwrap_or(0.0))
    }

    /// Why this measurement should not be kept: the CPUs were busy with other work (a load
    /// average above half the CPU count), so the rate is below the machine's peak.
    pub fn busy(&self) -> Option<String> {
        let load = self.load_before?;
        (load > 0.5 * self.key.logical_cpus as f64).then(|| {
            format!(
                "the machine was busy (load average {load:.1} on {} CPUs), so this peak is low",
                self.key.logical_cpus
            )
        })
    }

    fn summary(&self) -> String {
        let bf16 = self
            .bf16_flops_per_s
            .map_or("unavailable".into(), |r| format!("{}FLOP/s", report::si(r)));
        format!(
            "{n}×{n} GEMM on {t} libtorch thread(s) of {cpu}: bf16 {bf16}, f32 {}FLOP/s",
            report::si(self.f32_flops_per_s),
            n = self.n,
            t = self.key.torch_threads,
            cpu = self.key.cpu_model,
        )
    }
}

/// A CPU calibration and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPeak {
    pub calibration: CpuCalibration,
    /// True when read from the cache rather than measured by this call.
    pub cached: bool,
    /// The cache file (read or written).
    pub cache_file: PathBuf,
    /// Why the cache was not used or not written, when that happened.
    pub cache_note: Option<String>,
}

impl CpuPeak {
    pub fn into_peak(self) -> Peak {
        let c = &self.calibration;
        let how = if self.cached {
            format!("cached, measured at unix time {}", c.measured_at)
        } else {
            format!("measured now in {}", report::duration(c.seconds))
        };
        let note = self
            .cache_note
            .as_deref()
            .map(|n| format!("; {n}"))
            .unwrap_or_default();
        Peak {
            flops_per_s: c.flops_per_s(),
            source: PeakSource::CpuGemmCalibrated,
            dtype: c.dtype.clone(),
            detail: format!(
                "{} ({how}; {}){note}",
                c.summary(),
                self.cache_file.display()
            ),
            calibration: Some(self.calibration),
            table_flops_per_s: None,
            clock_derived: None,
        }
    }
}

/// The cached calibration of this machine, or a fresh one (then cached) when there is none for
/// this key, the cached one is unreadable, or `recalibrate` is set. A cache that cannot be
/// written is not an error: the measurement is used, and `cache_note` says why it was not kept.
pub fn cpu_peak(
    hardware: &Hardware,
    cache_dir: &Path,
    recalibrate: bool,
    plan: &CalibrationPlan,
) -> anyhow::Result<CpuPeak> {
    let key = CalibrationKey::current(hardware);
    cpu_peak_for(&key, cache_dir, recalibrate, plan, || {
        calibrate_cpu(&key, plan)
    })
}

/// [`cpu_peak`] with the key and the measurement passed in (tests use a fake of either).
fn cpu_peak_for(
    key: &CalibrationKey,
    cache_dir: &Path,
    recalibrate: bool,
    plan: &CalibrationPlan,
    measure: impl FnOnce() -> anyhow::Result<CpuCalibration>,
) -> anyhow::Result<CpuPeak> {
    let file = cache_file(cache_dir, key, plan.n);
    let mut note = None;
    if !recalibrate {
        match read_cache(&file, key, plan.n) {
            Ok(Some(calibration)) => {
                return Ok(CpuPeak {
                    calibration,
                    cached: true,
                    cache_file: file,
                    cache_note: None,
                })
            }
            Ok(None) => {}
            Err(e) => note = Some(format!("the cached calibration was unusable ({e:#})")),
        }
    }
    let calibration = measure()?;
    if let Some(busy) = calibration.busy() {
        // Kept, it would skew every later bench; measured afresh next time instead.
        note = Some(format!("not cached: {busy}"));
    } else if let Err(e) = write_cache(&file, &calibration) {
        note = Some(format!("not cached ({e:#})"));
    }
    Ok(CpuPeak {
        calibration,
        cached: false,
        cache_file: file,
        cache_note: note,
    })
}

/// Bumped when the cache file's meaning changes, so that old files are measured afresh.
const CACHE_FORMAT: &str = "crusades-cpu-gemm/1";

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: String,
    calibration: CpuCalibration,
}

/// `<cache>/peak/cpu-gemm-<hash of key and n>.json`: one file per machine configuration, so
/// that runs with different thread counts do not evict each other.
fn cache_file(cache_dir: &Path, key: &CalibrationKey, n: i64) -> PathBuf {
    let id = serde_json::to_vec(&(key, n)).expect("a calibration key always serialises");
    let hash = hex::encode(Sha256::digest(id));
    cache_dir
        .join("peak")
        .join(format!("cpu-gemm-{}.json", &hash[..16]))
}

/// The cached calibration for `key` and `n`; `Ok(None)` when there is none.
fn read_cache(file: &Path, key: &CalibrationKey, n: i64) -> anyhow::Result<Option<CpuCalibration>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let cached: CacheFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let c = cached.calibration;
    let usable = cached.format == CACHE_FORMAT
        && c.key == *key
        && c.n == n
        && c.flops_per_s().is_finite()
        && c.flops_per_s() > 0.0;
    Ok(usable.then_some(c))
}

/// Writes the cache file atomically (a temporary file, then a rename), so that a concurrent
/// bench never reads half a file.
fn write_cache(file: &Path, calibration: &CpuCalibration) -> anyhow::Result<()> {
    let dir = file.parent().context("the cache file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let doc = CacheFile {
        format: CACHE_FORMAT.into(),
        calibration: calibration.clone(),
    };
    let tmp = file.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming to {}", file.display()))?;
    Ok(())
}

/// Measures the CPU's GEMM rate: `plan.n`² matrix products on all libtorch threads, in f32 and
/// bf16; each dtype gets one warm-up product (kernel selection, page faults), then
/// `plan.batches` timed batches, of which the fastest counts.
pub fn calibrate_cpu(
    key: &CalibrationKey,
    plan: &CalibrationPlan,
) -> anyhow::Result<CpuCalibration> {
    let seconds = plan.seconds_per_dtype;
    if plan.n < 1 || plan.batches < 1 || seconds.is_nan() || seconds < 0.0 {
        anyhow::bail!("internal: a calibration plan needs n ≥ 1, batches ≥ 1 and seconds ≥ 0");
    }
    let load_before = load_average();
    let start = Instant::now();
    let f32_rate = gemm_rate(Kind::Float, plan).context("timing the f32 calibration GEMM")?;
    // A CPU without a bf16 GEMM path is not an error: f32 is then the peak.
    let bf16_rate = gemm_rate(Kind::BFloat16, plan).ok();
    let dtype = if bf16_rate.is_some_and(|b| b > f32_rate) {
        "bf16"
    } else {
        "f32"
    };
    Ok(CpuCalibration {
        key: key.clone(),
        n: plan.n,
        f32_flops_per_s: f32_rate,
        bf16_flops_per_s: bf16_rate,
        dtype: dtype.into(),
        seconds: start.elapsed().as_secs_f64(),
        measured_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        load_before,
    })
}

/// The 1-minute load average, from /proc/loadavg (Linux).
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// FLOP/s of an `n`×`n` by `n`×`n` product in `kind`: 2·n³ FLOPs over the fastest batch's time
/// per product. The matrices are constant-filled: GEMM speed does not depend on the values
/// (1/n keeps them normal, never denormal), and it leaves libtorch's random generator alone.
fn gemm_rate(kind: Kind, plan: &CalibrationPlan) -> anyhow::Result<f64> {
    let n = plan.n;
    let opts = (kind, Device::Cpu);
    let a = Tensor::f_full([n, n], 1.0 / n as f64, opts).map_err(torch)?;
    let b = Tensor::f_full([n, n], 1.0, opts).map_err(torch)?;
    let out = Tensor::f_empty([n, n], opts).map_err(torch)?;
    let warm = Instant::now();
    let _same_as_out = a.f_mm_out(&out, &b).map_err(torch)?;
    let mut best = warm.elapsed().as_secs_f64();
    // A very slow path (a CPU without native bf16) gets no more time than the plan allows.
    if best < plan.seconds_per_dtype {
        let per_batch = plan.seconds_per_dtype / f64::from(plan.batches);
        for _ in 0..plan.batches {
            let started = Instant::now();
            let mut products = 0u32;
            loop {
                let _same_as_out = a.f_mm_out(&out, &b).map_err(torch)?;
                products += 1;
                if started.elapsed().as_secs_f64() >= per_batch {
                    break;
                }
            }
            best = best.min(started.elapsed().as_secs_f64() / f64::from(products));
        }
    }
    let flops = 2.0 * (n as f64).powi(3);
    let rate = flops / best.max(f64::MIN_POSITIVE);
    if !(rate.is_finite() && rate > 0.0) {
        anyhow::bail!("the {kind:?} GEMM timing gave no usable rate ({best} s per product)");
    }
    Ok(rate)
}

pub fn torch(e: tch::TchError) -> anyhow::Error {
    anyhow::anyhow!(crusades_reference::error::trim_torch_message(
        &e.to_string()
    ))
}

/// The version of the libtorch this process loaded: `__version__` from the `version.py` of a
/// PyTorch install, or a standalone libtorch's `build-version`, found next to the loaded
/// libtorch_cpu.so; else the library's path, else "unknown". tch exposes no run-time version.
pub fn libtorch_version() -> String {
    let Some(lib_dir) = loaded_library_dir("libtorch_cpu.so") else {
        return "unknown".into();
    };
    let root = lib_dir.parent().unwrap_or(&lib_dir);
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let version = text.lines().find_map(|l| {
            let v = l.strip_prefix("__version__")?.trim_start();
            let v = v.strip_prefix('=')?.trim();
            Some(v.trim_matches(|c| c == '\'' || c == '"').to_string())
        });
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            return v;
        }
    }
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        let v = text.trim();
        if !v.is_empty() {
            return v.to_string();
        }
    }
    lib_dir.join("libtorch_cpu.so").display().to_string()
}

/// The directory a shared library of this process was loaded from (Linux: /proc/self/maps).
fn loaded_library_dir(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().is_some_and(|f| f == file_name))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::{CpuInfo, GpuInfo};

    #[test]
    fn the_table_knows_real_nvml_names() {
        for (name, tflops) in [
            ("NVIDIA A100-SXM4-80GB", Some(312.0)),
            ("NVIDIA A100-SXM4-40GB", Some(312.0)),
            ("NVIDIA A100-PCIE-40GB", Some(312.0)),
            ("NVIDIA A100 80GB PCIe", Some(312.0)),
            ("NVIDIA H100 80GB HBM3", Some(989.0)),
            ("NVIDIA H100 SXM5 80GB", Some(989.0)),
            ("NVIDIA H100 PCIe", Some(756.0)),
            ("NVIDIA H100 NVL", Some(835.0)),
            ("NVIDIA H200", Some(989.0)),
            ("NVIDIA GH200 480GB", Some(989.0)),
            ("NVIDIA B200", Some(2250.0)),
            ("NVIDIA GB200", Some(2500.0)),
            ("NVIDIA L40S", Some(362.05)),
            ("NVIDIA GeForce RTX 4090", Some(165.2)),
            // Not certain, or not in the table: the caller must ask for --peak-tflops.
            ("NVIDIA H100", None),
            ("NVIDIA H200 NVL", None),
            ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None),
            ("NVIDIA GeForce RTX 4090 D", None),
            ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
            ("NVIDIA L40", None),
            ("Tesla V100-SXM2-16GB", None),
            ("", None),
        ] {
            assert_eq!(gpu_peak_tflops(name), tflops, "{name:?}");
        }
    }

    fn cpu_hardware() -> Hardware {
        Hardware {
            cpu: CpuInfo {
                model: "Test CPU".into(),
                logical_cpus: 2,
                torch_threads: 2,
            },
            gpu: None,
            gpu_unavailable: None,
        }
    }

    fn gpu_hardware(name: &str) -> Hardware {
        Hardware {
            gpu: Some(GpuInfo::named(
                0,
                name,
                "GPU-00000000-0000-0000-0000-000000000000",
            )),
            ..cpu_hardware()
        }
    }

    fn with_clock(mut h: Hardware, cc: (i32, i32), sms: u32, mhz: u32) -> Hardware {
        let g = h.gpu.as_mut().unwrap();
        g.compute_capability = Some(cc);
        g.sm_count = Some(sms);
        g.max_sm_clock_mhz = Some(mhz);
        h
    }

    #[test]
    fn the_architecture_rates_reproduce_the_datasheets() {
        // (cc, name, SMs, datasheet boost MHz, datasheet dense bf16 TFLOP/s)
        for (cc, name, sms, mhz, tflops) in [
            ((8, 0), "NVIDIA A100-SXM4-80GB", 108, 1410, 312.0),
            ((8, 6), "NVIDIA A40", 84, 1740, 74.8),
            ((8, 9), "NVIDIA L40S", 142, 2520, 362.05),
            ((8, 9), "NVIDIA GeForce RTX 4090", 128, 2520, 165.2),
            ((9, 0), "NVIDIA H100 80GB HBM3", 132, 1830, 989.0),
            ((10, 0), "NVIDIA B200", 148, 1856, 2250.0),
        ] {
            let (per_sm, _) = tensor_flops_per_clock_per_sm(cc, name).unwrap();
            let derived = f64::from(sms) * f64::from(mhz) * 1e6 * per_sm / 1e12;
            let off = (derived - tflops).abs() / tflops;
            assert!(off < 0.015, "{name}: {derived:.1} vs {tflops} ({off:.3})");
        }
        assert_eq!(
            tensor_flops_per_clock_per_sm((7, 0), "Tesla V100-SXM2-16GB"),
            None
        );
        assert_eq!(tensor_flops_per_clock_per_sm((7, 5), "Tesla T4"), None);
        assert_eq!(
            tensor_flops_per_clock_per_sm((11, 0), "NVIDIA Future"),
            None
        );
    }

    #[test]
    fn a_known_gpu_records_both_figures_and_scores_by_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let h100 = with_clock(gpu_hardware("NVIDIA H100 80GB HBM3"), (9, 0), 132, 1980);
        let p = resolve(Device::Cuda(0), &h100, None, dir.path(), false).unwrap();
        assert_eq!((p.flops_per_s, p.source), (989e12, PeakSource::CudaTable));
        assert_eq!(p.table_flops_per_s, Some(989e12));
        let d = p.clock_derived.unwrap();
        // NVML's maximum clock is the boost ceiling, above the datasheet's 1830 MHz.
        assert_eq!(d.flops_per_s, 132.0 * 1980.0 * 1e6 * 4096.0);
        assert_eq!((d.sm_count, d.sm_clock_mhz), (132, 1980.0));
        assert!(d.architecture.contains("Hopper"));
    }

    #[test]
    fn an_unknown_gpu_falls_back_to_its_clock() {
        let dir = tempfile::tempdir().unwrap();
        let new = with_clock(gpu_hardware("NVIDIA H800 PCIe Z"), (9, 0), 114, 1755);
        let p = resolve(Device::Cuda(0), &new, None, dir.path(), false).unwrap();
        assert_eq!(p.source, PeakSource::CudaClockDerived);
        assert_eq!(
            serde_json::to_value(p.source).unwrap(),
            "cuda-clock-derived"
        );
        assert_eq!(p.flops_per_s, 114.0 * 1755.0 * 1e6 * 4096.0);
        assert_eq!(p.table_flops_per_s, None);
        assert!(
            p.detail.contains("114 SMs") && p.detail.contains("upper bound"),
            "{}",
            p.detail
        );

        // A MIG slice: the table's whole-GPU figure does not apply, the slice's SMs do.
        let mut mig = with_clock(gpu_hardware("NVIDIA H100 80GB HBM3"), (9, 0), 16, 1980);
        mig.gpu.as_mut().unwrap().mig = true;
        let p = resolve(Device::Cuda(0), &mig, None, dir.path(), false).unwrap();
        assert_eq!(p.source, PeakSource::CudaClockDerived);
        assert_eq!(p.flops_per_s, 16.0 * 1980.0 * 1e6 * 4096.0);
        assert!(p.detail.contains("MIG"), "{}", p.detail);

        // Without the clock or for an unknown architecture: say what is missing.
        let mut no_clock = with_clock(gpu_hardware("NVIDIA Z9000"), (13, 0), 100, 2000);
        no_clock.gpu.as_mut().unwrap().max_sm_clock_mhz = None;
        let e = resolve(Device::Cuda(0), &no_clock, None, dir.path(), false).unwrap_err();
        let msg = e.to_string();
        assert!(is_input_error(&e), "{msg}");
        assert!(
            msg.contains("compute capability 13.0") && msg.contains("maximum SM clock"),
            "{msg}"
        );
    }

    fn is_input_error(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<crate::InputError>())
    }

    #[test]
    fn the_override_wins_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = resolve(Device::Cpu, &cpu_hardware(), Some(312.0), dir.path(), false).unwrap();
        assert_eq!(p.flops_per_s, 312e12);
        assert_eq!(p.source, PeakSource::User);
        assert_eq!(serde_json::to_value(p.source).unwrap(), "user");
        // No calibration ran, so nothing was cached.
        assert!(!dir.path().join("peak").exists());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e =
                resolve(Device::Cpu, &cpu_hardware(), Some(bad), dir.path(), false).unwrap_err();
            assert!(
                is_input_error(&e) && e.to_string().contains("--peak-tflops"),
                "{e}"
            );
        }
    }

    #[test]
    fn cuda_peaks_come_from_the_table_or_ask_for_an_override() {
        let dir = tempfile::tempdir().unwrap();
        let h100 = gpu_hardware("NVIDIA H100 80GB HBM3");
        let p = resolve(Device::Cuda(0), &h100, None, dir.path(), false).unwrap();
        assert_eq!((p.flops_per_s, p.source), (989e12, PeakSource::CudaTable));
        assert_eq!(serde_json::to_value(p.source).unwrap(), "cuda-table");
        assert_eq!(p.dtype, "bf16");

        let unknown = gpu_hardware("NVIDIA Z9000");
        let e = resolve(Device::Cuda(0), &unknown, None, dir.path(), false).unwrap_err();
        assert!(is_input_error(&e), "{e}");
        assert!(e.to_string().contains("--peak-tflops") && e.to_string().contains("Z9000"));
        let p = resolve(Device::Cuda(0), &unknown, Some(100.0), dir.path(), false).unwrap();
        assert_eq!(p.source, PeakSource::User);

        // A MIG slice whose SMs and clock are unknown cannot be scored at all.
        let mut mig = gpu_hardware("NVIDIA H100 80GB HBM3");
        mig.gpu.as_mut().unwrap().mig = true;
        let e = resolve(Device::Cuda(0), &mig, None, dir.path(), false).unwrap_err();
        assert!(is_input_error(&e) && e.to_string().contains("MIG"), "{e}");

        let no_nvml = Hardware {
            gpu_unavailable: Some("NVML is unavailable".into()),
            ..cpu_hardware()
        };
        let e = resolve(Device::Cuda(0), &no_nvml, None, dir.path(), false).unwrap_err();
        let msg = e.to_string();
        assert!(
            is_input_error(&e) && msg.contains("NVML is unavailable"),
            "{msg}"
        );
        assert!(msg.contains("--peak-tflops"), "{msg}");
    }

    fn small_plan() -> CalibrationPlan {
        CalibrationPlan {
            n: 64,
            seconds_per_dtype: 0.01,
            batches: 2,
        }
    }

    fn key(cpu: &str) -> CalibrationKey {
        CalibrationKey {
            cpu_model: cpu.into(),
            logical_cpus: 2,
            torch_threads: 2,
            libtorch: "test".into(),
        }
    }

    /// A calibration that could not have been measured, to tell cache hits apart.
    fn fake(key: &CalibrationKey, rate: f64) -> CpuCalibration {
        CpuCalibration {
            key: key.clone(),
            n: small_plan().n,
            f32_flops_per_s: rate,
            bf16_flops_per_s: Some(rate * 2.0),
            dtype: "bf16".into(),
            seconds: 0.5,
            measured_at: 1,
            load_before: None,
        }
    }

    #[test]
    fn a_real_calibration_measures_both_dtypes() {
        let c = calibrate_cpu(&key("here"), &small_plan()).unwrap();
        assert!(c.f32_flops_per_s > 1e6, "{c:?}");
        assert!(c.flops_per_s() >= c.f32_flops_per_s);
        assert!(c.dtype == "bf16" || c.dtype == "f32");
        assert!(c.seconds > 0.0 && c.measured_at > 0);
    }

    #[test]
    fn the_cache_round_trips_and_a_new_key_recalibrates() {
        let dir = tempfile::tempdir().unwrap();
        let plan = small_plan();
        let a = key("CPU A");
        let first = cpu_peak_for(&a, dir.path(), false, &plan, || Ok(fake(&a, 1e9))).unwrap();
        assert!(!first.cached && first.cache_note.is_none());
        assert!(first.cache_file.starts_with(dir.path().join("peak")));

        // Same key: read back, the measurement is not run.
        let again = cpu_peak_for(&a, dir.path(), false, &plan, || {
            panic!("a cached calibration must not be measured again")
        })
        .unwrap();
        assert!(again.cached);
        assert_eq!(again.calibration, fake(&a, 1e9));
        let peak = again.into_peak();
        assert_eq!(peak.flops_per_s, 2e9);
        assert_eq!(peak.source, PeakSource::CpuGemmCalibrated);
        assert_eq!(
            serde_json::to_value(peak.source).unwrap(),
            "cpu-gemm-calibrated"
        );
        assert_eq!(peak.dtype, "bf16");
        assert!(peak.detail.contains("cached"), "{}", peak.detail);

        // Another CPU (or thread count, or libtorch): measured afresh.
        let b = key("CPU B");
        let other = cpu_peak_for(&b, dir.path(), false, &plan, || Ok(fake(&b, 3e9))).unwrap();
        assert!(!other.cached);
        assert_eq!(other.calibration.f32_flops_per_s, 3e9);
        assert!(other.into_peak().detail.contains("measured now"));

        // A different n is another measurement too.
        let bigger = CalibrationPlan { n: 128, ..plan };
        let c = cpu_peak_for(&a, dir.path(), false, &bigger, || Ok(fake(&a, 4e9))).unwrap();
        assert!(!c.cached);

        // Forced recalibration ignores the cache, and replaces it.
        let forced = cpu_peak_for(&a, dir.path(), true, &plan, || Ok(fake(&a, 5e9))).unwrap();
        assert!(!forced.cached);
        let after = cpu_peak_for(&a, dir.path(), false, &plan, || panic!("cached")).unwrap();
        assert_eq!(after.calibration.f32_flops_per_s, 5e9);
    }

    #[test]
    fn a_key_mismatch_inside_the_file_or_garbage_recalibrates() {
        let dir = tempfile::tempdir().unwrap();
        let plan = small_plan();
        let a = key("CPU A");
        let file = cache_file(dir.path(), &a, plan.n);
        // A file at A's path that holds another key's figures (a stale or tampered file).
        write_cache(&file, &fake(&key("CPU Z"), 1e9)).unwrap();
        let c = cpu_peak_for(&a, dir.path(), false, &plan, || Ok(fake(&a, 2e9))).unwrap();
        assert!(!c.cached && c.calibration.f32_flops_per_s == 2e9);

        std::fs::write(&file, "{ not json").unwrap();
        let c = cpu_peak_for(&a, dir.path(), false, &plan, || Ok(fake(&a, 3e9))).unwrap();
        assert!(!c.cached);
        assert!(c.cache_note.unwrap().contains("unusable"));
        // …and the garbage was replaced by the new measurement.
        assert!(read_cache(&file, &a, plan.n).unwrap().is_some());
    }

    #[test]
    fn a_measurement_on_a_busy_machine_is_used_but_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let a = key("CPU A");
        let busy = CpuCalibration {
            load_before: Some(7.0),
            ..fake(&a, 1e9)
        };
        let c = cpu_peak_for(&a, dir.path(), false, &small_plan(), || Ok(busy)).unwrap();
        let note = c.cache_note.clone().unwrap();
        assert!(note.contains("busy") && note.contains("7.0"), "{note}");
        assert!(c.into_peak().detail.contains("busy"));
        let file = cache_file(dir.path(), &a, small_plan().n);
        assert!(!file.exists());
        let calm = CpuCalibration {
            load_before: Some(0.2),
            ..fake(&a, 1e9)
        };
        let c = cpu_peak_for(&a, dir.path(), false, &small_plan(), || Ok(calm)).unwrap();
        assert!(c.cache_note.is_none() && file.exists());
    }

    #[test]
    fn an_unwritable_cache_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let a = key("CPU A");
        let c = cpu_peak_for(&a, &blocker, false, &small_plan(), || Ok(fake(&a, 1e9))).unwrap();
        assert!(c.cache_note.unwrap().contains("not cached"));
    }

    /// The full-size calibration of this machine, printed (`cargo test -p crusades --lib --
    /// --ignored --nocapture peak`); ignored by default because it takes seconds.
    #[test]
    #[ignore]
    fn full_calibration_on_this_machine() {
        let key = CalibrationKey::current(&crate::hardware::detect(Device::Cpu));
        let c = calibrate_cpu(&key, &CalibrationPlan::default()).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&c).unwrap());
        assert!(c.seconds < 10.0, "the calibration took {} s", c.seconds);
    }

    #[test]
    fn libtorch_version_is_found() {
        let v = libtorch_version();
        assert!(!v.is_empty() && v != "unknown", "{v}");
    }
}
