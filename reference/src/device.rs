//! Device selection, and the run-time load of libtorch's CUDA backend.
//!
//! tch links `libtorch_cuda.so` with `--as-needed`, and since no symbol of it is used directly
//! the linker drops it (tch-rs #980): CUDA then reads as unavailable. Linking it by force breaks
//! the lean CPU venv, whose CUDA libraries are absent. So we `dlopen` it, globally, the first
//! time CUDA is asked for; its static initialisers register the CUDA backend with libtorch.

use std::ffi::{CStr, CString};

use tch::Device;

use crate::error::{Error, Result};

/// Parses `cpu`, `cuda` or `cuda:N`, and for CUDA makes sure the device exists.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = parse_device_spec(spec)?;
    if let Device::Cuda(index) = device {
        ensure_cuda(index)?;
    }
    Ok(device)
}

/// Parses `cpu`, `cuda` or `cuda:N` without touching CUDA.
pub fn parse_device_spec(spec: &str) -> Result<Device> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        s => s
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .map(Device::Cuda)
            .ok_or_else(|| Error::Device(format!("unknown device '{s}'; use cpu, cuda or cuda:N"))),
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Loads the CUDA backend if needed and checks that CUDA device `index` exists.
pub fn ensure_cuda(index: usize) -> Result<()> {
    if !tch::Cuda::is_available() {
        load_cuda_backend()?;
    }
    if !tch::Cuda::is_available() {
        return Err(Error::Device(
            "libtorch's CUDA backend loaded, but it sees no CUDA device: is there a GPU and a driver \
             (nvidia-smi)? Use --device cpu otherwise"
                .into(),
        ));
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(Error::Device(format!(
            "cuda:{index} does not exist; this machine has {count} CUDA device(s)"
        )));
    }
    Ok(())
}

fn load_cuda_backend() -> Result<()> {
    let mut candidates = vec!["libtorch_cuda.so".to_string()];
    if let Some(dir) = loaded_libtorch_dir() {
        candidates.push(format!("{dir}/libtorch_cuda.so"));
    }
    let mut reasons = Vec::new();
    for c in &candidates {
        let name = CString::new(c.as_str()).expect("library paths have no NUL");
        // SAFETY: dlopen with a valid C string; the handle is deliberately never closed, since
        // the library registers itself with libtorch for the life of the process.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok(());
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        let reason = if err.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        reasons.push(reason);
    }
    Err(Error::Device(format!(
        "CUDA was asked for, but libtorch's CUDA backend could not be loaded ({}). Use a PyTorch \
         build with CUDA (`CRUSADES_TORCH=full ci/setup`, or point LD_LIBRARY_PATH at one), or \
         --device cpu",
        reasons.join("; ")
    )))
}

/// The directory that the already-loaded libtorch_cpu.so came from.
fn loaded_libtorch_dir() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| p.rsplit_once('/').map(|(d, _)| d.to_string()))
}

/// Waits for all queued work on `device`, so that a clock read afterwards means something.
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_refuses_nonsense() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device 'tpu'"), "{e}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn cuda_without_a_gpu_is_a_clear_error() {
        if tch::Cuda::is_available() {
            return; // a GPU machine: nothing to refuse
        }
        let e = parse_device("cuda").unwrap_err().to_string();
        assert!(e.contains("CUDA") && e.contains("--device cpu"), "{e}");
    }
}
