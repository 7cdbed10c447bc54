//! The CUDA driver, reached through cudarc with the library loaded at run time.
//!
//! cudarc panics on its first call when libcuda cannot be loaded, and panics again if the
//! driver lacks a symbol it was built for. So every entry point here probes the library first
//! ([`driver_present`]) and runs the call under `catch_unwind`: without a GPU the result is an
//! error that names what is missing, never a panic.
//!
//! libtorch uses the device's primary context and, unless told otherwise, the legacy default
//! stream. [`CudaContext::new`] retains that same primary context, and the null stream is that
//! same stream, so the events of [`EventClock`] are ordered with every kernel libtorch
//! launches from this process.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

/// The CUDA device `ordinal` as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProperties {
    pub ordinal: usize,
    pub name: String,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, the form NVML and CUDA_VISIBLE_DEVICES use.
    pub uuid: String,
    pub compute_capability: (i32, i32),
    pub sm_count: u32,
    pub memory_bytes: u64,
    /// The maximum SM clock; `None` where the driver no longer reports it.
    pub sm_clock_max_mhz: Option<u32>,
    pub memory_clock_max_mhz: Option<u32>,
}

impl DeviceProperties {
    pub fn compute_capability_string(&self) -> String {
        format!(
            "{}.{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }
}

const NO_DRIVER: &str = "the CUDA driver library (libcuda.so.1, installed with the NVIDIA driver) \
                         cannot be loaded: this machine has no NVIDIA driver, or it is not on the \
                         loader's path";

/// Whether libcuda can be loaded. Probed once per process.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: the probe only tries to dlopen candidate library names.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// Runs `f` only when the driver is present, turning a cudarc panic (a symbol the driver
/// lacks) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    if !driver_present() {
        return Err(NO_DRIVER.to_string());
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!(
                "{what}: the CUDA driver refused ({msg}); is the driver older than CUDA 13?"
            ))
        }
    }
}

/// Device `ordinal`'s primary context, retained once and held for the life of the process.
/// Releasing it could destroy it while it is current on this thread (when libtorch has not
/// retained it yet), and libtorch would then find a destroyed context there.
fn primary_context(ordinal: usize) -> Result<Arc<CudaContext>, String> {
    static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<CudaContext>>>> = OnceLock::new();
    let mut held = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ctx) = held.get(&ordinal) {
        return Ok(ctx.clone());
    }
    let ctx = CudaContext::new(ordinal)
        .map_err(|e| format!("cannot open cuda:{ordinal}'s primary context: {e:?}"))?;
    held.insert(ordinal, ctx.clone());
    Ok(ctx)
}

/// The driver API version, e.g. "13.0".
pub fn driver_version() -> Result<String, String> {
    guarded("reading the CUDA driver version", || {
        let mut v: std::ffi::c_int = 0;
        // SAFETY: cuDriverGetVersion writes one int; it needs no cuInit.
        let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
        if rc != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            return Err(format!("cuDriverGetVersion failed: {rc:?}"));
        }
        Ok(format_version(v))
    })
}

/// CUDA's `1000 × major + 10 × minor` as "major.minor".
fn format_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// How many CUDA devices the driver sees (0 without a driver).
pub fn device_count() -> Result<usize, String> {
    guarded("counting CUDA devices", || {
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| format!("the CUDA driver cannot count devices: {e:?}"))
    })
}

/// The properties of CUDA device `ordinal` (CUDA_VISIBLE_DEVICES applies, as for libtorch).
pub fn device_properties(ordinal: usize) -> Result<DeviceProperties, String> {
    guarded("reading the CUDA device's properties", || {
        let count = CudaContext::device_count()
            .map_err(|e| format!("the CUDA driver cannot count devices: {e:?}"))?;
        if ordinal >= count.max(0) as usize {
            return Err(format!(
                "cuda:{ordinal} does not exist; the CUDA driver sees {count} device(s)"
            ));
        }
        let ctx = primary_context(ordinal)?;
        let attr = |a: CUdevice_attribute| ctx.attribute(a).ok();
        let name = ctx
            .name()
            .map_err(|e| format!("cannot read cuda:{ordinal}'s name: {e:?}"))?;
        let uuid = ctx
            .uuid()
            .map_err(|e| format!("cannot read cuda:{ordinal}'s UUID: {e:?}"))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| format!("cannot read cuda:{ordinal}'s compute capability: {e:?}"))?;
        let sm_count = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("cannot read cuda:{ordinal}'s SM count"))?;
        let khz_to_mhz = |khz: i32| (khz > 0).then_some((khz / 1000) as u32);
        Ok(DeviceProperties {
            ordinal,
            name,
            uuid: format_uuid(&uuid.bytes.map(|b| b as u8)),
            compute_capability,
            sm_count: sm_count as u32,
            memory_bytes: ctx.total_mem().map(|b| b as u64).unwrap_or(0),
            sm_clock_max_mhz: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
                .and_then(khz_to_mhz),
            memory_clock_max_mhz: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)
                .and_then(khz_to_mhz),
        })
    })
}

/// NVML's spelling of a device UUID: `GPU-` and the 16 bytes as 8-4-4-4-12 hex digits.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// NVRTC's version ("13.0"), or why it cannot be used. libtorch compiles some fused kernels
/// at run time through NVRTC; a missing one shows up here rather than mid-run.
pub fn nvrtc_version() -> Result<String, String> {
    // SAFETY: the probe only tries to dlopen candidate library names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so, from the CUDA toolkit or the nvidia-cuda-nvrtc wheel) \
                    cannot be loaded"
                .into(),
        );
    }
    let probe = catch_unwind(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints.
        let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (rc == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS)
            .then(|| format!("{major}.{minor}"))
            .ok_or_else(|| format!("nvrtcVersion failed: {rc:?}"))
    });
    probe.unwrap_or_else(|_| Err("NVRTC loaded but lacks nvrtcVersion".into()))
}

/// The timed region as the GPU saw it: an event recorded on libtorch's stream when the clock
/// starts and another when it stops. The host's wall clock of the same region is kept by the
/// caller; the two must agree.
pub struct EventClock {
    stream: Arc<CudaStream>,
    start: CudaEvent,
    end: CudaEvent,
}

impl EventClock {
    /// Creates the two events on device `ordinal` (outside the region: creating them takes
    /// longer than recording them).
    pub fn new(ordinal: usize) -> Result<Self, String> {
        guarded("creating the CUDA event clock", || {
            let ctx = primary_context(ordinal)?;
            let event = || {
                ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| format!("cannot create a CUDA event: {e:?}"))
            };
            Ok(Self {
                stream: ctx.default_stream(),
                start: event()?,
                end: event()?,
            })
        })
    }

    /// Records the start event on the device's legacy default stream.
    pub fn start(&self) -> Result<(), String> {
        guarded("starting the CUDA event clock", || {
            self.start
                .record(&self.stream)
                .map_err(|e| format!("cannot record a CUDA event: {e:?}"))
        })
    }

    /// Records the stop event, waits for it, and returns the seconds between the two.
    pub fn stop(&self) -> Result<f64, String> {
        guarded("stopping the CUDA event clock", || {
            self.end
                .record(&self.stream)
                .map_err(|e| format!("cannot record a CUDA event: {e:?}"))?;
            let ms = self
                .start
                .elapsed_ms(&self.end)
                .map_err(|e| format!("cannot read the CUDA events' elapsed time: {e:?}"))?;
            Ok(f64::from(ms) / 1e3)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_spelled_as_nvml_spells_them() {
        let bytes = [
            0x3c, 0x1a, 0x9f, 0x2e, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11,
            0x22, 0x33,
        ];
        assert_eq!(
            format_uuid(&bytes),
            "GPU-3c1a9f2e-0123-4567-89ab-cdef00112233"
        );
    }

    #[test]
    fn driver_versions_read_as_major_minor() {
        assert_eq!(format_version(13000), "13.0");
        assert_eq!(format_version(12080), "12.8");
        assert_eq!(format_version(11040), "11.4");
    }

    #[test]
    fn without_a_driver_every_call_is_an_error_that_names_it() {
        if driver_present() {
            return; // a GPU machine: nothing to refuse
        }
        for e in [
            driver_version().unwrap_err(),
            device_count().unwrap_err(),
            device_properties(0).unwrap_err(),
            EventClock::new(0).err().unwrap(),
        ] {
            assert!(
                e.contains("libcuda.so.1") && e.contains("NVIDIA driver"),
                "{e}"
            );
        }
    }

    #[test]
    fn nvrtc_is_probed_without_panicking() {
        match nvrtc_version() {
            Ok(v) => assert!(v.contains('.'), "{v}"),
            Err(e) => assert!(e.contains("NVRTC"), "{e}"),
        }
    }
}
