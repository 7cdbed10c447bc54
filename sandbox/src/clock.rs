//! The clock of a timed region, on the host and, on CUDA, on the device.
//!
//! The region starts after the device is synchronised and stops after it is synchronised
//! again, so no queued work is left outside it. On CUDA two events on libtorch's stream time
//! the same region from the GPU's side: the host clock and the event time must agree, and a
//! bench gates on their divergence. The ends are also kept as CLOCK_MONOTONIC instants, which
//! another process (the harness's NVML sampler) can compare with its own samples.

use std::time::Instant;

use crusades_gpu::cuda::EventClock;
use crusades_reference::device::synchronize;
use serde::{Deserialize, Serialize};
use tch::Device;

/// A region being timed.
pub struct Clock {
    device: Device,
    started: Instant,
    start_ns: u64,
    events: Result<EventClock, String>,
}

/// What the clock measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionTime {
    pub wall_s: f64,
    /// CLOCK_MONOTONIC at the start and the stop (see [`crusades_gpu::monotonic_ns`]).
    pub start_ns: u64,
    pub end_ns: u64,
    /// The CUDA events' time of the region; `None` on CPU or when the events failed.
    pub device_s: Option<f64>,
    /// Why a CUDA run has no event time.
    pub device_clock_error: Option<String>,
}

impl Clock {
    /// Synchronises `device`, then starts the clock (and, on CUDA, records the start event
    /// right after the host clock's start, so the event time lies inside the host time).
    pub fn start(device: Device) -> Self {
        let events = match device {
            Device::Cuda(ordinal) => EventClock::new(ordinal),
            _ => Err(String::new()),
        };
        synchronize(device);
        let started = Instant::now();
        let start_ns = crusades_gpu::monotonic_ns();
        let events = events.and_then(|clock| clock.start().map(|()| clock));
        Self {
            device,
            started,
            start_ns,
            events,
        }
    }

    /// When the region started, for the accounting that splits it into phases.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records the stop event, synchronises the device, then stops the host clock: the event
    /// time lies inside the host time by construction.
    pub fn stop(self) -> (RegionTime, Instant) {
        let device_time = self.events.map(|clock| clock.stop());
        synchronize(self.device);
        let end = Instant::now();
        let end_ns = crusades_gpu::monotonic_ns();
        let (device_s, device_clock_error) = match device_time {
            Ok(Ok(s)) => (Some(s), None),
            Ok(Err(e)) => (None, Some(e)),
            Err(e) if e.is_empty() => (None, None),
            Err(e) => (None, Some(e)),
        };
        let time = RegionTime {
            wall_s: (end - self.started).as_secs_f64(),
            start_ns: self.start_ns,
            end_ns,
            device_s,
            device_clock_error,
        };
        (time, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_region_has_a_host_time_and_monotonic_ends_but_no_device_time() {
        let clock = Clock::start(Device::Cpu);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (t, end) = clock.stop();
        assert!(t.wall_s >= 0.005, "{t:?}");
        assert!(t.end_ns >= t.start_ns + 5_000_000, "{t:?}");
        assert!(end >= Instant::now() - std::time::Duration::from_secs(1));
        assert_eq!((t.device_s, t.device_clock_error), (None, None));
    }
}
