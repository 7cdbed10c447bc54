//! crusades-gpu: what the harness reads from the GPU beside libtorch.
//!
//! - [`cuda`]: the CUDA driver, loaded at run time and probed before any call (cudarc panics
//!   when libcuda is absent): device properties, the CUDA-event clock of the timed region,
//!   and whether NVRTC is present;
//! - [`sampler`]: a thread that polls NVML about ten times a second while a run is timed,
//!   finding the GPU by UUID;
//! - [`telemetry`]: the samples of one run reduced to the record's telemetry block (clock
//!   means, energy, throttle reasons, tensor-pipe activity), a pure function tested on recorded
//!   series.
//!
//! Nothing here needs a GPU to build or to be tested: without a driver every entry point
//! returns an error that says what is missing.

pub mod cuda;
pub mod sampler;
pub mod telemetry;

/// CLOCK_MONOTONIC in nanoseconds. Unlike `std::time::Instant`, its value is comparable
/// between processes on one machine, so the parent's samples can be cut to the timed region
/// the worker reports.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_monotonic_clock_advances() {
        let a = super::monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::monotonic_ns();
        assert!(a > 0 && b >= a + 1_000_000, "{a} {b}");
    }
}
