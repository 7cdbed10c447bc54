//! What the benchmark ran on: the CPU, and for CUDA runs the GPU as the CUDA driver and NVML
//! describe it.
//!
//! A result is only comparable with another on the same hardware, and the GPU's name is what
//! picks the peak FLOP/s ([`crate::peak`]), so this is recorded with every result. Detection
//! never fails: what cannot be read is left out and, for the GPU, the reason is kept in
//! [`Hardware::gpu_unavailable`] so that an error downstream can say why.
//!
//! The CUDA driver (cudarc) numbers devices exactly as libtorch does and gives the compute
//! capability and SM count; NVML adds the driver version, clocks and power limit, and is what
//! telemetry samples, found by the UUID the driver reported. Either source alone is enough to
//! name the GPU.

use serde::{Deserialize, Serialize};
use tch::Device;

/// The machine a result was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu: CpuInfo,
    /// The GPU behind the CUDA device; `None` for CPU runs and when NVML cannot describe it.
    pub gpu: Option<GpuInfo>,
    /// Why `gpu` is `None` on a CUDA run (NVML missing, the device not found, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_unavailable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// /proc/cpuinfo's "model name" (or the nearest equivalent), e.g. "AMD EPYC 9554 64-Core
    /// Processor".
    pub model: String,
    /// CPUs this process may run on (affinity and cgroup quota included).
    pub logical_cpus: usize,
    /// libtorch's intra-op thread count (`--threads`, else libtorch's default).
    pub torch_threads: usize,
}

/// One GPU as NVML reports it. Clocks, memory and power are `None` where the device does not
/// support the query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// The CUDA ordinal the run used (`cuda:N`).
    pub cuda_ordinal: usize,
    /// NVML's index of the same device (NVML counts physical GPUs in PCI bus order).
    pub nvml_index: Option<u32>,
    /// e.g. "NVIDIA H100 80GB HBM3": the key of the peak table.
    pub name: String,
    pub uuid: String,
    pub driver_version: Option<String>,
    pub memory_bytes: Option<u64>,
    /// NVML's maximum SM clock. Not the spec clock of the peak table: an H100 SXM reports
    /// 1980 MHz, the datasheet's bf16 figure uses 1830 (measurement-anchors.md §3.2).
    pub max_sm_clock_mhz: Option<u32>,
    /// The SM clock when the hardware was detected (idle clocks are low; a diagnostic only).
    pub sm_clock_mhz: Option<u32>,
    /// The enforced power limit, in watts.
    pub power_limit_w: Option<f64>,
    /// Streaming multiprocessors, when NVML can tell (see [`sm_count`]).
    pub sm_count: Option<u32>,
    /// The CUDA device is a MIG slice, or MIG is on for the GPU: a slice has only part of the
    /// GPU's peak, so the peak table does not apply.
    #[serde(default)]
    pub mig: bool,
    /// (major, minor), from the CUDA driver.
    #[serde(default)]
    pub compute_capability: Option<(i32, i32)>,
    /// The CUDA driver API version ("13.0").
    #[serde(default)]
    pub cuda_driver: Option<String>,
    /// NVRTC's version, or why it cannot be loaded.
    #[serde(default)]
    pub nvrtc: Option<String>,
    /// What one of the two sources could not say (the other one sufficed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl GpuInfo {
    /// A GPU known only by its name and UUID; the rest is filled in where a source knows it.
    pub fn named(cuda_ordinal: usize, name: &str, uuid: &str) -> Self {
        Self {
            cuda_ordinal,
            nvml_index: None,
            name: name.into(),
            uuid: uuid.into(),
            driver_version: None,
            memory_bytes: None,
            max_sm_clock_mhz: None,
            sm_clock_mhz: None,
            power_limit_w: None,
            sm_count: None,
            mig: false,
            compute_capability: None,
            cuda_driver: None,
            nvrtc: None,
            notes: Vec::new(),
        }
    }
}

/// Describes the machine for a run on `device`. For [`Device::Cpu`] neither the CUDA driver nor
/// NVML is touched; for [`Device::Cuda`] a GPU that neither can describe gives `gpu: None`
/// with both reasons, never a panic.
pub fn detect(device: Device) -> Hardware {
    let cpu = cpu_info();
    let (gpu, gpu_unavailable) = match device {
        Device::Cuda(ordinal) => match gpu_info(ordinal) {
            Ok(gpu) => (Some(gpu), None),
            Err(why) => (None, Some(why)),
        },
        _ => (None, None),
    };
    Hardware {
        cpu,
        gpu,
        gpu_unavailable,
    }
}

/// The CPU's description; every field has a fallback, so it cannot fail.
pub fn cpu_info() -> CpuInfo {
    CpuInfo {
        model: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| cpu_model(&text))
            .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH)),
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        torch_threads: usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1),
    }
}

/// The CPU model from /proc/cpuinfo text: "model name" on x86, else the fields ARM and other
/// kernels use.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    for key in [
        "model name",
        "Model",
        "Hardware",
        "cpu model",
        "Processor",
        "cpu",
    ] {
        let found = cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.trim() == key && !v.is_empty()).then_some(v)
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// How CUDA ordinal N is found among NVML's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NvmlTarget {
    /// CUDA's Nth device, by enumeration position.
    Index(u32),
    /// A `GPU-…` or `MIG-…` UUID from CUDA_VISIBLE_DEVICES, possibly a prefix (CUDA accepts
    /// unambiguous prefixes).
    Uuid(String),
}

/// Maps CUDA ordinal `ordinal` to an NVML device, given CUDA_VISIBLE_DEVICES.
///
/// NVML enumerates every physical GPU and ignores CUDA_VISIBLE_DEVICES, so `cuda:0` is NVML's
/// device 0 only when nothing is hidden. CUDA reads the variable as a comma-separated list of
/// indices or UUIDs, and stops at the first entry it cannot parse; the ordinal indexes that
/// list. UUID entries are exact; index entries (and no variable at all) are positions in CUDA's
/// order, which equals NVML's PCI bus order only under CUDA_DEVICE_ORDER=PCI_BUS_ID or when the
/// GPUs are identical ([`gpu_info`] checks the latter).
fn nvml_target(ordinal: usize, visible: Option<&str>) -> Result<NvmlTarget, String> {
    let Some(visible) = visible else {
        return u32::try_from(ordinal)
            .map(NvmlTarget::Index)
            .map_err(|_| format!("cuda:{ordinal} is out of NVML's range"));
    };
    let mut entries = Vec::new();
    for entry in visible.split(',').map(str::trim) {
        if let Ok(i) = entry.parse::<u32>() {
            entries.push(NvmlTarget::Index(i));
        } else if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
            entries.push(NvmlTarget::Uuid(entry.to_string()));
        } else {
            break; // as CUDA does: this entry and the ones after it are not visible
        }
    }
    entries.get(ordinal).cloned().ok_or_else(|| {
        format!(
            "cuda:{ordinal} is not among the {} device(s) that CUDA_VISIBLE_DEVICES={visible:?} \
             makes visible",
            entries.len()
        )
    })
}

/// The GPU behind CUDA ordinal `ordinal`, from the CUDA driver and NVML together, or why
/// neither can describe it.
fn gpu_info(ordinal: usize) -> Result<GpuInfo, String> {
    use crusades_gpu::cuda;

    let driver = cuda::device_properties(ordinal);
    let nvml = match &driver {
        // The driver's UUID is exact whatever CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER say.
        // Where NVML spells it differently (a MIG instance), CUDA_VISIBLE_DEVICES decides, as
        // long as it names the same model.
        Ok(props) => nvml_info(ordinal, Some(&props.uuid)).or_else(|by_uuid| {
            nvml_info(ordinal, None)
                .ok()
                .filter(|info| info.name == props.name)
                .ok_or(by_uuid)
        }),
        Err(_) => nvml_info(ordinal, None),
    };
    let nvrtc = Some(cuda::nvrtc_version().unwrap_or_else(|e| format!("unavailable: {e}")));
    match (driver, nvml) {
        (Ok(props), nvml) => {
            let mut notes = Vec::new();
            let mut info = match nvml {
                Ok(info) => info,
                Err(why) => {
                    notes.push(format!("NVML: {why}"));
                    GpuInfo::named(ordinal, &props.name, &props.uuid)
                }
            };
            // The driver's SM count is exact (NVML's is derived); its clock is the fallback.
            info.sm_count = Some(props.sm_count);
            info.memory_bytes = info.memory_bytes.or(Some(props.memory_bytes));
            info.max_sm_clock_mhz = info.max_sm_clock_mhz.or(props.sm_clock_max_mhz);
            info.compute_capability = Some(props.compute_capability);
            info.cuda_driver = cuda::driver_version().ok();
            info.nvrtc = nvrtc;
            info.notes = notes;
            Ok(info)
        }
        (Err(driver_why), Ok(mut info)) => {
            info.nvrtc = nvrtc;
            info.notes = vec![format!("CUDA driver: {driver_why}")];
            Ok(info)
        }
        (Err(driver_why), Err(nvml_why)) => Err(format!("{driver_why}; and {nvml_why}")),
    }
}

/// The GPU behind CUDA ordinal `ordinal` as NVML describes it, found by `uuid` when the CUDA
/// driver gave one, else through CUDA_VISIBLE_DEVICES.
fn nvml_info(ordinal: usize, uuid: Option<&str>) -> Result<GpuInfo, String> {
    use nvml_wrapper::enum_wrappers::device::Clock;
    use nvml_wrapper::Nvml;

    let nvml = Nvml::init().map_err(|e| {
        format!("NVML (libnvidia-ml.so.1, part of the NVIDIA driver) is unavailable: {e}")
    })?;
    let target = match uuid {
        Some(u) => NvmlTarget::Uuid(u.to_string()),
        None => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            nvml_target(ordinal, visible.as_deref())?
        }
    };
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML cannot count the GPUs: {e}"))?;
    let (device, from_mig_uuid) = match &target {
        NvmlTarget::Index(i) => {
            check_order_is_known(&nvml, count)?;
            let d = nvml
                .device_by_index(*i)
                .map_err(|e| format!("NVML has no GPU {i} (it sees {count}): {e}"))?;
            (d, false)
        }
        NvmlTarget::Uuid(u) => {
            let full = nvml.device_by_uuid(u.as_str());
            let d = match full {
                Ok(d) => d,
                Err(_) => by_uuid_prefix(&nvml, count, u)?,
            };
            (d, u.starts_with("MIG-"))
        }
    };
    let name = device
        .name()
        .map_err(|e| format!("NVML cannot name the GPU: {e}"))?;
    let uuid = device
        .uuid()
        .map_err(|e| format!("NVML cannot read the GPU's UUID: {e}"))?;
    // MIG_ENABLE is 1 in nvml.h; a MIG slice has a fraction of the device's SMs.
    let mig = from_mig_uuid || device.mig_mode().is_ok_and(|m| m.current == 1);
    Ok(GpuInfo {
        cuda_ordinal: ordinal,
        nvml_index: device.index().ok(),
        name,
        uuid,
        driver_version: nvml.sys_driver_version().ok(),
        memory_bytes: device.memory_info().ok().map(|m| m.total),
        max_sm_clock_mhz: device.max_clock_info(Clock::SM).ok(),
        sm_clock_mhz: device.clock_info(Clock::SM).ok(),
        power_limit_w: device
            .enforced_power_limit()
            .ok()
            .map(|mw| f64::from(mw) / 1000.0),
        sm_count: sm_count(&device),
        mig,
        compute_capability: device
            .cuda_compute_capability()
            .ok()
            .map(|c| (c.major, c.minor)),
        cuda_driver: None,
        nvrtc: None,
        notes: Vec::new(),
    })
}

/// Without CUDA_DEVICE_ORDER=PCI_BUS_ID, CUDA numbers GPUs fastest first, NVML by PCI bus. On
/// a machine of identical GPUs the two agree on the model (ties fall back to bus order), which
/// is what the peak needs; on a mixed machine an index could name another model, so refuse to
/// guess.
fn check_order_is_known(nvml: &nvml_wrapper::Nvml, count: u32) -> Result<(), String> {
    if count <= 1 || std::env::var("CUDA_DEVICE_ORDER").is_ok_and(|v| v == "PCI_BUS_ID") {
        return Ok(());
    }
    let names: Vec<String> = (0..count)
        .filter_map(|i| nvml.device_by_index(i).and_then(|d| d.name()).ok())
        .collect();
    if names.len() == count as usize && names.iter().all(|n| *n == names[0]) {
        return Ok(());
    }
    Err(format!(
        "this machine has different GPUs ({}), and CUDA may number them differently from NVML; \
         set CUDA_DEVICE_ORDER=PCI_BUS_ID, or name the GPU with CUDA_VISIBLE_DEVICES=GPU-<uuid> \
         (nvidia-smi -L lists them)",
        names.join(", ")
    ))
}

/// The one GPU whose UUID starts with `prefix` (CUDA accepts an unambiguous prefix).
fn by_uuid_prefix<'n>(
    nvml: &'n nvml_wrapper::Nvml,
    count: u32,
    prefix: &str,
) -> Result<nvml_wrapper::Device<'n>, String> {
    let mut matches = (0..count)
        .filter_map(|i| nvml.device_by_index(i).ok())
        .filter(|d| d.uuid().is_ok_and(|u| u.starts_with(prefix)));
    match (matches.next(), matches.next()) {
        (Some(d), None) => Ok(d),
        (None, _) => Err(format!(
            "NVML knows no GPU with the UUID {prefix} (from CUDA_VISIBLE_DEVICES)"
        )),
        (Some(_), Some(_)) => Err(format!(
            "the UUID prefix {prefix} in CUDA_VISIBLE_DEVICES matches several GPUs"
        )),
    }
}

/// The SM count. NVML reports it directly only for MIG handles (nvmlDeviceGetAttributes); for
/// a whole GPU it is derived from the CUDA core count where the cores per SM of the compute
/// capability are certain (A100: 6912 / 64 = 108; H100 SXM: 16896 / 128 = 132). Otherwise
/// `None`: a wrong SM count would make a clock-derived peak wrong.
fn sm_count(device: &nvml_wrapper::Device) -> Option<u32> {
    if let Ok(a) = device.attributes() {
        if a.multiprocessor_count > 0 {
            return Some(a.multiprocessor_count);
        }
    }
    let cc = device.cuda_compute_capability().ok()?;
    let per_sm = cores_per_sm(cc.major, cc.minor)?;
    let cores = device.num_cores().ok()?;
    (cores > 0 && cores % per_sm == 0).then_some(cores / per_sm)
}

/// FP32 CUDA cores per SM, for the compute capabilities where it is fixed (CUDA programming
/// guide, "Compute Capabilities" tables).
fn cores_per_sm(major: i32, minor: i32) -> Option<u32> {
    match (major, minor) {
        (7, 0) | (8, 0) => Some(64),
        (8, 6) | (8, 9) | (9, 0) => Some(128),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_detection_never_touches_nvml_and_fills_every_field() {
        let h = detect(Device::Cpu);
        assert!(h.gpu.is_none() && h.gpu_unavailable.is_none());
        assert!(!h.cpu.model.is_empty());
        assert!(h.cpu.logical_cpus >= 1 && h.cpu.torch_threads >= 1);
        let back: Hardware = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn cuda_detection_without_a_driver_says_why() {
        let h = detect(Device::Cuda(0));
        if h.gpu.is_none() {
            let why = h.gpu_unavailable.unwrap();
            assert!(
                why.contains("libcuda.so.1") && why.contains("NVML"),
                "{why}"
            );
        }
    }

    #[test]
    fn reads_the_cpu_model_on_x86_and_arm() {
        let x86 =
            "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  9554 64-Core \
                   Processor\nmodel\t\t: 17\n";
        assert_eq!(cpu_model(x86).unwrap(), "AMD EPYC 9554 64-Core Processor");
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\nHardware\t: \
                   BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(cpu_model(arm).unwrap(), "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(cpu_model("model name\t:   \n"), None);
    }

    #[test]
    fn cuda_visible_devices_maps_ordinals_as_cuda_does() {
        use NvmlTarget::*;
        assert_eq!(nvml_target(1, None), Ok(Index(1)));
        assert_eq!(nvml_target(0, Some("3,1")), Ok(Index(3)));
        assert_eq!(nvml_target(1, Some("3, 1")), Ok(Index(1)));
        assert_eq!(
            nvml_target(1, Some("2,GPU-8d3f")),
            Ok(Uuid("GPU-8d3f".into()))
        );
        assert_eq!(
            nvml_target(0, Some("MIG-0f2a")),
            Ok(Uuid("MIG-0f2a".into()))
        );
        // CUDA stops at the first entry it cannot read.
        let e = nvml_target(1, Some("0,bogus,2")).unwrap_err();
        assert!(e.contains("cuda:1") && e.contains("1 device(s)"), "{e}");
        assert!(nvml_target(0, Some("")).is_err());
        assert!(nvml_target(0, Some("-1")).is_err());
    }

    #[test]
    fn cores_per_sm_give_the_known_sm_counts() {
        assert_eq!(6912 / cores_per_sm(8, 0).unwrap(), 108); // A100
        assert_eq!(16896 / cores_per_sm(9, 0).unwrap(), 132); // H100 SXM
        assert_eq!(cores_per_sm(10, 0), None);
    }
}
