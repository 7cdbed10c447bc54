//! A thread that polls NVML while a run is timed.
//!
//! It runs in the harness (the parent), not in the worker that does the timed work: the worker's
//! own threads stay as the submission left them, and a worker that crashes does not take the
//! telemetry with it. The parent starts the sampler before the worker and stops it after the
//! worker exits; [`crate::telemetry::summarize`] then cuts the series to the window the worker
//! reports.
//!
//! The GPU is found by UUID: an index depends on `CUDA_VISIBLE_DEVICES` and on the enumeration
//! order of the process asking, so the parent and the worker can disagree on what "GPU 0" is.
//!
//! Every NVML failure is a returned error or a missing field, never a panic: on a machine
//! without the NVIDIA driver, [`Sampler::start`] says so and the record's telemetry block says
//! `unavailable`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::{Clock, PerformancePolicy, TemperatureSensor};
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::{Bits, NvmlError};
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::{Device, GpmSample, Nvml};

use crate::telemetry::Sample;

/// About ten reads a second: often enough that a run of a few seconds has tens of samples, and
/// rarely enough that the reads (a few NVML calls of some tens of microseconds each) cost the
/// GPU nothing measurable. NVML's own utilisation and power readings average over longer
/// periods than this, so sampling faster would not resolve more.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// A shorter interval would make the thread spin on NVML calls rather than sample.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The NVML performance policies whose violation counters the sampler reads, with the keys
/// they have in [`Sample::violation_ns`] and in the record.
const VIOLATION_POLICIES: [(PerformancePolicy, &str); 8] = [
    (PerformancePolicy::Power, "power"),
    (PerformancePolicy::Thermal, "thermal"),
    (PerformancePolicy::SyncBoost, "sync-boost"),
    (PerformancePolicy::BoardLimit, "board-limit"),
    (PerformancePolicy::LowUtilization, "low-utilization"),
    (PerformancePolicy::Reliability, "reliability"),
    (PerformancePolicy::TotalAppClocks, "total-app-clocks"),
    (PerformancePolicy::TotalBaseClocks, "total-base-clocks"),
];

/// NVML polled on its own thread until [`Sampler::stop`].
///
/// Dropping a sampler without stopping it ends the thread too, discarding the samples.
pub struct Sampler {
    gpu_uuid: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Shared rather than returned by the thread, so that the samples taken survive even if
    /// the thread were to panic.
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    /// Starts sampling the GPU with this UUID (`GPU-…`, as `nvidia-smi -L` prints it) every
    /// `interval`, taking the first sample at once.
    ///
    /// Returns only once NVML is initialised and the GPU found, so an error here means the run
    /// will have no telemetry, and says why: NVML missing (no NVIDIA driver) or no such GPU.
    pub fn start(gpu_uuid: &str, interval: Duration) -> Result<Sampler, String> {
        let interval = interval.max(MIN_INTERVAL);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let samples = Arc::new(Mutex::new(Vec::new()));
        // `Device` borrows `Nvml`, so both must live on the sampling thread; initialisation
        // errors come back through `ready`.
        let thread = thread::Builder::new()
            .name("nvml-sampler".into())
            .spawn({
                let gpu_uuid = gpu_uuid.to_string();
                let samples = Arc::clone(&samples);
                move || sample_until_stopped(&gpu_uuid, interval, ready_tx, stop_rx, samples)
            })
            .map_err(|e| format!("could not start the NVML sampler thread: {e}"))?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err("the NVML sampler thread ended before saying whether NVML works".to_string())
        });
        match ready {
            Ok(()) => Ok(Sampler {
                gpu_uuid: gpu_uuid.to_string(),
                stop: Some(stop_tx),
                thread: Some(thread),
                samples,
            }),
            Err(reason) => {
                // The thread has returned (or is about to) without sampling.
                let _ = thread.join();
                Err(reason)
            }
        }
    }

    /// The UUID this sampler reads, for [`crate::telemetry::summarize`].
    pub fn gpu_uuid(&self) -> &str {
        &self.gpu_uuid
    }

    /// Stops the thread and returns its samples in time order. One last sample is taken on
    /// stopping, so that a window ending just before the stop is bracketed on both sides.
    pub fn stop(mut self) -> Vec<Sample> {
        self.finish();
        let mut samples = self
            .samples
            .lock()
            .map(|mut guard| std::mem::take(&mut *guard))
            .unwrap_or_else(|poisoned| std::mem::take(&mut *poisoned.into_inner()));
        samples.sort_by_key(|s| s.t_ns);
        samples
    }

    fn finish(&mut self) {
        // Dropping the sender wakes the thread as a stop message would.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    /// Joins the thread so that NVML is shut down before the sampler is gone.
    fn drop(&mut self) {
        self.finish();
    }
}

fn sample_until_stopped(
    gpu_uuid: &str,
    interval: Duration,
    ready: mpsc::Sender<Result<(), String>>,
    stop: mpsc::Receiver<()>,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "NVML could not be initialised ({e}); NVML (libnvidia-ml.so.1) is part of the \
                 NVIDIA driver, so a machine without the driver has no GPU telemetry"
            )));
            return;
        }
    };
    let device = match nvml.device_by_uuid(gpu_uuid) {
        Ok(device) => device,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "NVML found no GPU with UUID {gpu_uuid:?} ({e})"
            )));
            return;
        }
    };
    let mut reader = Reader::new(&nvml, device);
    if ready.send(Ok(())).is_err() {
        return;
    }

    let record = |sample: Sample| match samples.lock() {
        Ok(mut guard) => guard.push(sample),
        Err(poisoned) => poisoned.into_inner().push(sample),
    };
    // Ticks stay on a fixed grid, so a slow read delays one sample instead of shifting all the
    // later ones; ticks a slow read overran are skipped rather than taken in a burst.
    let mut next = Instant::now();
    loop {
        record(reader.read());
        next += interval;
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        match stop.recv_timeout(next - now) {
            Err(RecvTimeoutError::Timeout) => continue,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                record(reader.read());
                return;
            }
        }
    }
}

/// Remembers whether an NVML query can succeed on this GPU: one that answered `NotSupported`
/// (or that the driver lacks) will answer the same for the rest of the run, and is not asked
/// again ten times a second. Other errors are taken as passing and the query is retried.
#[derive(Debug, Default)]
struct Query {
    given_up: bool,
}

impl Query {
    fn read<T>(&mut self, call: impl FnOnce() -> Result<T, NvmlError>) -> Option<T> {
        if self.given_up {
            return None;
        }
        match call() {
            Ok(value) => Some(value),
            Err(e) => {
                self.given_up = is_permanent(&e);
                None
            }
        }
    }
}

/// Errors that asking again will not change. `InvalidArg` is not among them: GPM returns it
/// for samples it cannot compare, which the next pair may fix, and a wrong guess here would
/// lose a field for the whole run while a wrong guess the other way costs one call a tick.
fn is_permanent(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::NotSupported
            | NvmlError::FunctionNotFound
            | NvmlError::FailedToLoadSymbol(_)
            | NvmlError::NoPermission
    )
}

/// GPM (Hopper and later) reports activity between two of its own samples, so the previous one
/// is kept from tick to tick.
enum Gpm<'nvml> {
    Unsupported,
    /// Supported; `None` before the first sample.
    Previous(Option<GpmSample<'nvml>>),
}

struct Reader<'nvml> {
    nvml: &'nvml Nvml,
    device: Device<'nvml>,
    sm_clock: Query,
    mem_clock: Query,
    power: Query,
    energy: Query,
    utilization: Query,
    temperature: Query,
    reasons: Query,
    violations: Vec<(PerformancePolicy, &'static str, Query)>,
    gpm: Gpm<'nvml>,
}

impl<'nvml> Reader<'nvml> {
    fn new(nvml: &'nvml Nvml, device: Device<'nvml>) -> Self {
        let gpm = match device.gpm_support() {
            Ok(true) => Gpm::Previous(None),
            _ => Gpm::Unsupported,
        };
        Reader {
            nvml,
            device,
            sm_clock: Query::default(),
            mem_clock: Query::default(),
            power: Query::default(),
            energy: Query::default(),
            utilization: Query::default(),
            temperature: Query::default(),
            reasons: Query::default(),
            violations: VIOLATION_POLICIES
                .iter()
                .map(|&(policy, key)| (policy, key, Query::default()))
                .collect(),
            gpm,
        }
    }

    fn read(&mut self) -> Sample {
        let device = &self.device;
        // The energy counter is the reading whose time matters most (it is interpolated to the
        // window's ends), so the sample is stamped at the middle of its read.
        let before = crate::monotonic_ns();
        let energy_mj = self.energy.read(|| device.total_energy_consumption());
        let after = crate::monotonic_ns();
        let t_ns = before + after.saturating_sub(before) / 2;

        let utilization = self.utilization.read(|| device.utilization_rates());
        let violation_ns = self
            .violations
            .iter_mut()
            .filter_map(|(policy, key, query)| {
                query
                    .read(|| device.violation_status(*policy))
                    .map(|v| (key.to_string(), v.violation_time))
            })
            .collect();
        let tensor_active = self.tensor_active();
        let device = &self.device;
        Sample {
            t_ns,
            sm_clock_mhz: self.sm_clock.read(|| device.clock_info(Clock::SM)),
            mem_clock_mhz: self.mem_clock.read(|| device.clock_info(Clock::Memory)),
            power_mw: self.power.read(|| device.power_usage()),
            energy_mj,
            gpu_util_pct: utilization.as_ref().map(|u| u.gpu),
            mem_util_pct: utilization.as_ref().map(|u| u.memory),
            temperature_c: self
                .temperature
                .read(|| device.temperature(TemperatureSensor::Gpu)),
            clock_event_reasons: self.reasons.read(|| clock_event_reasons(device)),
            violation_ns,
            tensor_active,
        }
    }

    /// GPM's any-tensor utilisation since the previous GPM sample, as a fraction.
    fn tensor_active(&mut self) -> Option<f64> {
        let Gpm::Previous(previous) = &mut self.gpm else {
            return None;
        };
        let current = match self.device.gpm_sample() {
            Ok(current) => current,
            Err(e) => {
                if is_permanent(&e) {
                    self.gpm = Gpm::Unsupported;
                }
                // Otherwise the previous sample is kept: the next interval is longer, not lost.
                return None;
            }
        };
        // The first GPM sample only opens an interval.
        let previous = previous.replace(current)?;
        let Gpm::Previous(Some(current)) = &self.gpm else {
            return None;
        };
        let metrics = gpm_metrics_get(self.nvml, &previous, current, &[GpmMetricId::AnyTensorUtil]);
        match metrics {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(metric)) if metric.value.is_finite() => {
                    Some((metric.value / 100.0).clamp(0.0, 1.0))
                }
                Some(Err(e)) if is_permanent(&e) => {
                    self.gpm = Gpm::Unsupported;
                    None
                }
                _ => None,
            },
            Err(e) => {
                if is_permanent(&e) {
                    self.gpm = Gpm::Unsupported;
                }
                None
            }
        }
    }
}

/// The raw reason mask. nvml-wrapper's plain getter drops bits its flags do not know; its
/// strict one reports them as an error carrying the raw mask, which is what a newer driver's
/// reason should come out as (`unknown-0x…` in the record), so the mask is taken from there.
fn clock_event_reasons(device: &Device) -> Result<u64, NvmlError> {
    match device.current_throttle_reasons_strict() {
        Ok(reasons) => Ok(reasons.bits()),
        Err(NvmlError::IncorrectBits(Bits::U64(raw))) => Ok(raw),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_nvml_or_the_gpu_start_is_an_error_naming_nvml() {
        let err = match Sampler::start("GPU-00000000-0000-0000-0000-000000000000", DEFAULT_INTERVAL)
        {
            Ok(sampler) => {
                let _ = sampler.stop();
                panic!("a sampler started for an all-zero UUID");
            }
            Err(e) => e,
        };
        assert!(err.contains("NVML"), "{err}");
    }

    #[test]
    fn an_unsupported_query_is_not_asked_again() {
        let mut query = Query::default();
        let mut calls = 0;
        for _ in 0..5 {
            let value: Option<u32> = query.read(|| {
                calls += 1;
                Err(NvmlError::NotSupported)
            });
            assert_eq!(value, None);
        }
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_passing_error_is_retried() {
        let mut query = Query::default();
        let mut calls = 0;
        assert_eq!(
            query.read::<u32>(|| {
                calls += 1;
                Err(NvmlError::Unknown)
            }),
            None
        );
        assert_eq!(
            query.read(|| {
                calls += 1;
                Ok(7u32)
            }),
            Some(7)
        );
        assert_eq!(calls, 2);
    }
}
