//! The NVML samples of one run reduced to the record's telemetry block.
//!
//! Pure arithmetic on recorded series, kept apart from the [`crate::sampler`] so that it can be
//! tested on a machine without a GPU: the parent process samples for longer than the timed
//! region (it starts before the worker and stops after it), and [`summarize`] cuts the series to
//! the region the worker reports on `CLOCK_MONOTONIC`.
//!
//! Two kinds of quantity need different treatment:
//! - gauges (clocks, power, utilisation, temperature, reasons) are averaged over the samples
//!   inside the window;
//! - cumulative counters (the energy counter, violation time per policy) are read at the
//!   window's two ends, interpolated linearly between the samples that bracket each end, and
//!   differenced. At 10 Hz a window of a few seconds loses up to a tenth of a second at each end
//!   if the counter is taken at the nearest sample inside the window instead, which is several
//!   percent of the energy.

use std::collections::BTreeMap;

use crusades_results::record::GpuTelemetry;
use serde::{Deserialize, Serialize};

/// Above this share of throttled samples the record warns: a run slowed by its power cap or
/// temperature for a fifth of the time measures the cooling or the power limit as much as the
/// submission.
pub const THROTTLED_SHARE_WARNING: f64 = 0.2;

/// Above this share of idle samples the record warns: the time went to the host (input,
/// synchronisation, launch overhead), not to the GPU.
pub const IDLE_SHARE_WARNING: f64 = 0.2;

/// With fewer samples than this inside the window, means and shares rest on one or two reads,
/// and the record says so rather than letting them pass for a measurement.
pub const MIN_SAMPLES_FOR_SUMMARY: u64 = 3;

/// NVML's clock-event (formerly "clocks throttle") reason bits, as `nvml.h` defines them
/// (`nvmlClocksEventReason*` / `nvmlClocksThrottleReason*`, the same values; nvml-wrapper 0.13
/// names them `ThrottleReasons::GPU_IDLE` … `DISPLAY_CLOCK_SETTING`).
pub const CLOCK_EVENT_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu-idle"),
    (0x2, "applications-clocks-setting"),
    (0x4, "sw-power-cap"),
    (0x8, "hw-slowdown"),
    (0x10, "sync-boost"),
    (0x20, "sw-thermal-slowdown"),
    (0x40, "hw-thermal-slowdown"),
    (0x80, "hw-power-brake-slowdown"),
    (0x100, "display-clock-setting"),
];

/// `nvmlClocksEventReasonGpuIdle`.
pub const REASON_GPU_IDLE: u64 = 0x1;

/// The reasons that mean the GPU ran slower than it would have: its power cap, heat, or an
/// external slowdown signal. Application-clock, sync-boost and display-clock settings are
/// configuration, not throttling, and idle is counted on its own.
pub const SLOWDOWN_REASONS: u64 = 0x4 | 0x8 | 0x20 | 0x40 | 0x80;

/// One NVML read of the GPU. Every query may be unsupported on a given GPU or driver, so each
/// field is optional and a fixture need only carry what it tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// [`crate::monotonic_ns`] at the read: comparable with the worker's window ends.
    pub t_ns: u64,
    #[serde(default)]
    pub sm_clock_mhz: Option<u32>,
    #[serde(default)]
    pub mem_clock_mhz: Option<u32>,
    /// NVML's power reading in milliwatts (on recent GPUs an average over about a second).
    #[serde(default)]
    pub power_mw: Option<u32>,
    /// NVML's total-energy counter in millijoules since the driver loaded.
    #[serde(default)]
    pub energy_mj: Option<u64>,
    #[serde(default)]
    pub gpu_util_pct: Option<u32>,
    #[serde(default)]
    pub mem_util_pct: Option<u32>,
    #[serde(default)]
    pub temperature_c: Option<u32>,
    /// NVML's clock-event reason bitmask (see [`CLOCK_EVENT_REASONS`]).
    #[serde(default)]
    pub clock_event_reasons: Option<u64>,
    /// Cumulative nanoseconds the clocks were held below target, per NVML performance policy
    /// (`power`, `thermal`, `sync-boost`, `board-limit`, `low-utilization`, `reliability`,
    /// `total-app-clocks`, `total-base-clocks`); a policy the GPU does not report is absent.
    #[serde(default)]
    pub violation_ns: BTreeMap<String, u64>,
    /// GPM's any-tensor utilisation (0–1) over the interval since the previous sample; GPM
    /// needs Hopper or later, so this is absent elsewhere.
    #[serde(default)]
    pub tensor_active: Option<f64>,
}

impl Sample {
    /// A sample with only its time set: the starting point for building one field by field.
    pub fn at(t_ns: u64) -> Sample {
        Sample {
            t_ns,
            sm_clock_mhz: None,
            mem_clock_mhz: None,
            power_mw: None,
            energy_mj: None,
            gpu_util_pct: None,
            mem_util_pct: None,
            temperature_c: None,
            clock_event_reasons: None,
            violation_ns: BTreeMap::new(),
            tensor_active: None,
        }
    }
}

/// The timed region, in [`crate::monotonic_ns`] nanoseconds, as the worker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    fn is_valid(&self) -> bool {
        self.end_ns >= self.start_ns
    }

    fn contains(&self, t_ns: u64) -> bool {
        self.start_ns <= t_ns && t_ns <= self.end_ns
    }
}

/// Names for the bits of an NVML clock-event reason mask, in bit order. Bits `nvml.h` did not
/// define when this was written come out as `unknown-0x…` rather than being dropped, so a newer
/// driver's reason is still visible in the record.
pub fn reason_names(mask: u64) -> Vec<&'static str> {
    let mut names = Vec::new();
    let mut known = 0u64;
    for (bit, name) in CLOCK_EVENT_REASONS {
        known |= bit;
        if mask & bit != 0 {
            names.push(name);
        }
    }
    let unknown = mask & !known;
    for shift in 0..64 {
        let bit = 1u64 << shift;
        if unknown & bit != 0 {
            // A handful of strings per run at most; leaking them keeps the `&'static str`
            // signature that the known names allow.
            names.push(unknown_reason_name(bit));
        }
    }
    names
}

fn unknown_reason_name(bit: u64) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    // Interned so that repeated summaries of a driver with a new bit do not leak per call.
    static INTERNED: OnceLock<Mutex<BTreeMap<u64, &'static str>>> = OnceLock::new();
    let table = INTERNED.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut table = table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    table
        .entry(bit)
        .or_insert_with(|| Box::leak(format!("unknown-{bit:#x}").into_boxed_str()))
}

/// Reduces the samples of one run to the record's telemetry block.
///
/// `samples` may extend beyond `window` (and should: the counters are interpolated from the
/// samples bracketing each end) and need not be sorted. `tokens` gives joules per token (none
/// when zero). `tensor_flops_per_clock` is the GPU's dense tensor FLOPs per SM clock over all
/// SMs (SMs × FLOPs/clock/SM); with GPM's tensor activity it bounds what the tensor pipes could
/// have computed.
///
/// Never fails: whatever cannot be computed from the series is null, and the warnings say why
/// the block is thin when it is.
pub fn summarize(
    gpu_uuid: &str,
    samples: &[Sample],
    window: Window,
    tokens: u64,
    tensor_flops_per_clock: Option<f64>,
) -> GpuTelemetry {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.t_ns);

    let inside: Vec<&Sample> = if window.is_valid() {
        sorted
            .iter()
            .copied()
            .filter(|s| window.contains(s.t_ns))
            .collect()
    } else {
        Vec::new()
    };
    let n = inside.len();
    let interval_s = match (inside.first(), inside.last()) {
        (Some(first), Some(last)) if n >= 2 => {
            (last.t_ns - first.t_ns) as f64 / 1e9 / (n - 1) as f64
        }
        _ => 0.0,
    };

    let sm_clock = Stats::of(inside.iter().filter_map(|s| s.sm_clock_mhz.map(f64::from)));
    let mem_clock = Stats::of(inside.iter().filter_map(|s| s.mem_clock_mhz.map(f64::from)));
    // Averaged in NVML's units and scaled once, so that a constant series gives back exactly
    // its value.
    let power_mw = Stats::of(inside.iter().filter_map(|s| s.power_mw.map(f64::from)));
    let gpu_util_pct = Stats::of(inside.iter().filter_map(|s| s.gpu_util_pct.map(f64::from)));
    let mem_util_pct = Stats::of(inside.iter().filter_map(|s| s.mem_util_pct.map(f64::from)));
    let temperature = Stats::of(inside.iter().filter_map(|s| s.temperature_c.map(f64::from)));

    let (energy_j, energy_source) = match energy(&sorted, window) {
        Some((joules, source)) => (Some(joules), Some(source.to_string())),
        None => (None, None),
    };
    let j_per_token = match energy_j {
        Some(joules) if tokens > 0 => Some(joules / tokens as f64),
        _ => None,
    };

    let violation_s = violation_seconds(&sorted, window);

    let reasons = inside
        .iter()
        .filter_map(|s| s.clock_event_reasons)
        .fold(0u64, |acc, mask| acc | mask);
    let throttled_share = share(
        inside
            .iter()
            .filter_map(|s| s.clock_event_reasons)
            .map(|mask| mask & SLOWDOWN_REASONS != 0),
    );
    let idle_share = share(inside.iter().filter_map(|s| idle(s)));

    let tensor_active = Stats::of(
        inside
            .iter()
            .filter_map(|s| s.tensor_active)
            .filter(|v| v.is_finite())
            .map(|v| v.clamp(0.0, 1.0)),
    )
    .mean;
    let tensor_bound_flops_per_s = match (tensor_active, sm_clock.mean, tensor_flops_per_clock) {
        (Some(active), Some(mhz), Some(per_clock)) if per_clock.is_finite() && per_clock > 0.0 => {
            Some(active * mhz * 1e6 * per_clock)
        }
        _ => None,
    };

    let mut warnings = Vec::new();
    if !window.is_valid() {
        warnings.push(format!(
            "the timed window ends before it starts (start {} ns, end {} ns), so no telemetry \
             could be attributed to the run",
            window.start_ns, window.end_ns
        ));
    } else if (n as u64) < MIN_SAMPLES_FOR_SUMMARY {
        warnings.push(format!(
            "only {n} telemetry sample{} fell inside the timed run ({:.2} s): too few to say much \
             about its clocks, power or throttling",
            if n == 1 { "" } else { "s" },
            (window.end_ns - window.start_ns) as f64 / 1e9
        ));
    }
    if throttled_share > THROTTLED_SHARE_WARNING {
        let causes = reason_names(reasons & SLOWDOWN_REASONS).join(", ");
        let clocks = match (sm_clock.mean, sm_clock.min) {
            (Some(mean), Some(min)) => {
                format!("the SM clock averaged {mean:.0} MHz (lowest {min:.0} MHz), so ")
            }
            _ => String::new(),
        };
        warnings.push(format!(
            "the GPU throttled ({causes}) in {:.0} % of samples: {clocks}the run measured a \
             slowed-down GPU rather than the submission at the hardware's sustained speed",
            throttled_share * 100.0
        ));
    }
    if idle_share > IDLE_SHARE_WARNING {
        warnings.push(format!(
            "the GPU sat idle in {:.0} % of samples: for much of the timed run no kernel was \
             running, so the time went to the host (input, synchronisation, launch overhead) \
             rather than to the GPU",
            idle_share * 100.0
        ));
    }

    GpuTelemetry {
        gpu_uuid: gpu_uuid.to_string(),
        samples: n as u64,
        interval_s,
        sm_clock_mean_mhz: sm_clock.mean,
        sm_clock_min_mhz: sm_clock.min,
        mem_clock_mean_mhz: mem_clock.mean,
        energy_j,
        energy_source,
        j_per_token,
        power_mean_w: power_mw.mean.map(|mw| mw / 1000.0),
        power_max_w: power_mw.max.map(|mw| mw / 1000.0),
        gpu_util_mean: gpu_util_pct.mean.map(|pct| pct / 100.0),
        mem_util_mean: mem_util_pct.mean.map(|pct| pct / 100.0),
        temperature_max_c: temperature.max,
        clock_event_reasons: reasons,
        clock_event_reason_names: reason_names(reasons)
            .into_iter()
            .map(String::from)
            .collect(),
        throttled_share,
        idle_share,
        violation_s,
        tensor_active,
        tensor_bound_flops_per_s,
        warnings,
    }
}

/// Whether a sample shows an idle GPU, or `None` when it carries neither signal, so that a
/// GPU that does not report one is not counted as busy.
fn idle(sample: &Sample) -> Option<bool> {
    let by_reason = sample
        .clock_event_reasons
        .map(|mask| mask & REASON_GPU_IDLE != 0);
    let by_util = sample.gpu_util_pct.map(|pct| pct == 0);
    match (by_reason, by_util) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
    }
}

/// The share of `true` among the samples that could tell; 0 when none could.
fn share(flags: impl Iterator<Item = bool>) -> f64 {
    let (hits, total) = flags.fold((0u64, 0u64), |(h, t), f| (h + u64::from(f), t + 1));
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

#[derive(Debug, Default)]
struct Stats {
    mean: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Stats {
        let mut sum = 0.0;
        let mut count = 0u64;
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        for v in values.filter(|v| v.is_finite()) {
            sum += v;
            count += 1;
            min = min.min(v);
            max = max.max(v);
        }
        if count == 0 {
            return Stats::default();
        }
        Stats {
            mean: Some(sum / count as f64),
            min: Some(min),
            max: Some(max),
        }
    }
}

/// Energy over the window in joules and where it came from: the energy counter when it covers
/// the window and runs forwards across it, else the power readings integrated.
fn energy(sorted: &[&Sample], window: Window) -> Option<(f64, &'static str)> {
    if !window.is_valid() {
        return None;
    }
    let counter: Vec<(u64, f64)> = sorted
        .iter()
        .filter_map(|s| s.energy_mj.map(|mj| (s.t_ns, mj as f64)))
        .collect();
    if let Some(mj) = counter_difference(&counter, window) {
        return Some((mj / 1000.0, "energy-counter"));
    }
    let power: Vec<(u64, f64)> = sorted
        .iter()
        .filter_map(|s| s.power_mw.map(|mw| (s.t_ns, f64::from(mw) / 1000.0)))
        .collect();
    integral(&power, window).map(|watt_ns| (watt_ns / 1e9, "power-integral"))
}

/// Per NVML policy, the seconds its violation counter advanced across the window. A policy
/// whose counter does not cover the window, or went backwards in it, is left out rather than
/// reported as a wrong number.
fn violation_seconds(sorted: &[&Sample], window: Window) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if !window.is_valid() {
        return out;
    }
    let mut policies: Vec<&str> = sorted
        .iter()
        .flat_map(|s| s.violation_ns.keys().map(String::as_str))
        .collect();
    policies.sort_unstable();
    policies.dedup();
    for policy in policies {
        let counter: Vec<(u64, f64)> = sorted
            .iter()
            .filter_map(|s| s.violation_ns.get(policy).map(|&ns| (s.t_ns, ns as f64)))
            .collect();
        if let Some(ns) = counter_difference(&counter, window) {
            out.insert(policy.to_string(), ns / 1e9);
        }
    }
    out
}

/// A cumulative counter's advance across the window, its value at each end interpolated from
/// the bracketing points (`points` sorted by time).
///
/// `None` when the points do not reach the window at all (a difference of two clamped values
/// would be zero, not a measurement) or when the counter went backwards between the points that
/// determine its ends (a driver reload resets it).
fn counter_difference(points: &[(u64, f64)], window: Window) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    if first.0 > window.end_ns || last.0 < window.start_ns {
        return None;
    }
    // From the last point at or before the start to the first at or after the end: the points
    // the two interpolated values and everything between them depend on.
    let lo = points
        .partition_point(|p| p.0 <= window.start_ns)
        .saturating_sub(1);
    let hi = points
        .partition_point(|p| p.0 < window.end_ns)
        .min(points.len() - 1);
    let span = &points[lo..=hi.max(lo)];
    if span.windows(2).any(|pair| pair[1].1 < pair[0].1) {
        return None;
    }
    let difference = value_at(points, window.end_ns)? - value_at(points, window.start_ns)?;
    Some(difference.max(0.0))
}

/// The integral over the window (value × nanoseconds) of the piecewise-linear curve through
/// `points`, held flat beyond its first and last point. Exact for that curve: it is linear
/// between consecutive breakpoints.
fn integral(points: &[(u64, f64)], window: Window) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    if first.0 > window.end_ns || last.0 < window.start_ns {
        return None;
    }
    let mut breakpoints = vec![window.start_ns];
    breakpoints.extend(
        points
            .iter()
            .map(|p| p.0)
            .filter(|&t| t > window.start_ns && t < window.end_ns),
    );
    breakpoints.push(window.end_ns);
    breakpoints.dedup();
    let mut total = 0.0;
    for pair in breakpoints.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mean = (value_at(points, a)? + value_at(points, b)?) / 2.0;
        total += mean * (b - a) as f64;
    }
    Some(total)
}

/// The piecewise-linear curve through `points` (sorted by time) at `t`, held at the nearest
/// point outside their range.
fn value_at(points: &[(u64, f64)], t: u64) -> Option<f64> {
    let after = points.partition_point(|p| p.0 <= t);
    if after == 0 {
        return points.first().map(|p| p.1);
    }
    if after == points.len() {
        return points.last().map(|p| p.1);
    }
    let (t0, v0) = points[after - 1];
    let (t1, v1) = points[after];
    // t0 <= t < t1, so the span is positive.
    let fraction = (t - t0) as f64 / (t1 - t0) as f64;
    Some(v0 + (v1 - v0) * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn steady(n: u64, start_ns: u64, step_ns: u64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                sm_clock_mhz: Some(1980),
                mem_clock_mhz: Some(2619),
                power_mw: Some(650_000),
                // 650 W is 650 mJ per millisecond.
                energy_mj: Some(1_000_000 + i * step_ns / MS * 650),
                gpu_util_pct: Some(100),
                mem_util_pct: Some(40),
                temperature_c: Some(60 + (i % 5) as u32),
                clock_event_reasons: Some(0),
                ..Sample::at(start_ns + i * step_ns)
            })
            .collect()
    }

    #[test]
    fn reason_names_decode_nvml_bits_in_order() {
        assert_eq!(reason_names(0), Vec::<&str>::new());
        assert_eq!(reason_names(0x1), vec!["gpu-idle"]);
        assert_eq!(
            reason_names(0x4 | 0x40 | 0x100),
            vec![
                "sw-power-cap",
                "hw-thermal-slowdown",
                "display-clock-setting"
            ]
        );
        assert_eq!(reason_names(0x1ff).len(), 9);
        assert_eq!(
            reason_names(0x8 | 0x400),
            vec!["hw-slowdown", "unknown-0x400"]
        );
        assert_eq!(reason_names(1 << 63), vec!["unknown-0x8000000000000000"]);
    }

    #[test]
    fn the_counter_is_interpolated_at_both_ends() {
        // Counter samples at 0 and 100 ms bracketing a window that starts at 25 ms, and at 300
        // and 400 ms bracketing its end at 350 ms.
        let points = [
            (0, 0.0),
            (100 * MS, 100.0),
            (300 * MS, 300.0),
            (400 * MS, 500.0),
        ];
        let window = Window {
            start_ns: 25 * MS,
            end_ns: 350 * MS,
        };
        assert_eq!(counter_difference(&points, window), Some(400.0 - 25.0));
    }

    #[test]
    fn a_counter_that_goes_backwards_falls_back_to_power() {
        let mut samples = steady(20, 0, 100 * MS);
        samples[10].energy_mj = Some(5);
        let window = Window {
            start_ns: 200 * MS,
            end_ns: 1_500 * MS,
        };
        let t = summarize("GPU-x", &samples, window, 0, None);
        assert_eq!(t.energy_source.as_deref(), Some("power-integral"));
        let joules = t.energy_j.unwrap();
        assert!((joules - 650.0 * 1.3).abs() < 1e-6, "{joules}");
        assert_eq!(t.j_per_token, None);
    }

    #[test]
    fn a_reset_outside_the_window_does_not_matter() {
        let mut samples = steady(20, 0, 100 * MS);
        samples[1].energy_mj = Some(5);
        let window = Window {
            start_ns: 500 * MS,
            end_ns: 1_500 * MS,
        };
        let t = summarize("GPU-x", &samples, window, 1000, None);
        assert_eq!(t.energy_source.as_deref(), Some("energy-counter"));
        assert!((t.energy_j.unwrap() - 650.0).abs() < 1e-9);
        assert!((t.j_per_token.unwrap() - 0.65).abs() < 1e-12);
    }

    #[test]
    fn a_steady_run_is_summarized() {
        let samples = steady(30, 0, 100 * MS);
        let window = Window {
            start_ns: 250 * MS,
            end_ns: 2_250 * MS,
        };
        let t = summarize("GPU-x", &samples, window, 2_000_000, Some(132.0 * 2048.0));
        assert_eq!(t.samples, 20);
        assert!((t.interval_s - 0.1).abs() < 1e-12);
        assert_eq!(t.sm_clock_mean_mhz, Some(1980.0));
        assert_eq!(t.sm_clock_min_mhz, Some(1980.0));
        assert_eq!(t.power_mean_w, Some(650.0));
        assert_eq!(t.gpu_util_mean, Some(1.0));
        assert_eq!(t.mem_util_mean, Some(0.4));
        assert_eq!(t.temperature_max_c, Some(64.0));
        assert!((t.energy_j.unwrap() - 1300.0).abs() < 1e-9);
        assert_eq!(t.throttled_share, 0.0);
        assert_eq!(t.idle_share, 0.0);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        // No GPM in the series: no tensor bound either.
        assert_eq!(t.tensor_active, None);
        assert_eq!(t.tensor_bound_flops_per_s, None);
    }

    #[test]
    fn tensor_activity_bounds_the_tensor_flops() {
        let mut samples = steady(10, 0, 100 * MS);
        for (i, s) in samples.iter_mut().enumerate() {
            s.tensor_active = Some(if i % 2 == 0 { 0.5 } else { 0.7 });
        }
        samples[3].tensor_active = Some(f64::NAN);
        samples[4].tensor_active = Some(f64::NAN);
        let window = Window {
            start_ns: 0,
            end_ns: 900 * MS,
        };
        let per_clock = 132.0 * 4096.0;
        let t = summarize("GPU-x", &samples, window, 0, Some(per_clock));
        let active = t.tensor_active.unwrap();
        assert!((active - 0.6).abs() < 1e-12, "{active}");
        let bound = t.tensor_bound_flops_per_s.unwrap();
        assert!((bound - 0.6 * 1980e6 * per_clock).abs() / bound < 1e-12);
        let t = summarize("GPU-x", &samples, window, 0, Some(f64::NAN));
        assert_eq!(t.tensor_bound_flops_per_s, None);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let w = Window {
            start_ns: 10,
            end_ns: 20,
        };
        let t = summarize("GPU-x", &[], w, 5, None);
        assert_eq!(t.samples, 0);
        assert_eq!(t.energy_j, None);
        assert_eq!(t.interval_s, 0.0);
        assert_eq!(t.warnings.len(), 1);

        let backwards = Window {
            start_ns: 20,
            end_ns: 10,
        };
        let t = summarize("GPU-x", &steady(5, 0, 5), backwards, 5, None);
        assert_eq!(t.samples, 0);
        assert_eq!(t.energy_j, None);
        assert!(t.warnings[0].contains("ends before it starts"));

        let zero = Window {
            start_ns: 12,
            end_ns: 12,
        };
        let t = summarize("GPU-x", &steady(5, 0, 5), zero, 5, None);
        assert_eq!(t.energy_j, Some(0.0));

        let far = Window {
            start_ns: u64::MAX - 1,
            end_ns: u64::MAX,
        };
        let t = summarize("GPU-x", &steady(5, 0, 5), far, 5, None);
        assert_eq!(t.energy_j, None);
        assert!(serde_json::to_string(&t).is_ok());
    }

    #[test]
    fn unsorted_samples_are_sorted_first() {
        let mut samples = steady(20, 0, 100 * MS);
        let window = Window {
            start_ns: 150 * MS,
            end_ns: 1_650 * MS,
        };
        let sorted = summarize("GPU-x", &samples, window, 7, None);
        samples.reverse();
        samples.swap(3, 11);
        assert_eq!(summarize("GPU-x", &samples, window, 7, None), sorted);
    }

    #[test]
    fn a_sample_deserializes_from_a_short_fixture() {
        let s: Sample = serde_json::from_str(r#"{"t_ns": 5, "power_mw": 100000}"#).unwrap();
        assert_eq!(
            s,
            Sample {
                power_mw: Some(100_000),
                ..Sample::at(5)
            }
        );
    }
}
