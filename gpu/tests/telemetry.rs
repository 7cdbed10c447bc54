//! The telemetry summary on recorded H100-like sample series (`tests/data/*.json`), and its
//! invariants on random ones. No GPU is needed: the series are what the sampler would have
//! written.

use std::path::Path;

use crusades_gpu::telemetry::{
    reason_names, summarize, Sample, Window, IDLE_SHARE_WARNING, THROTTLED_SHARE_WARNING,
};
use crusades_results::record::GpuTelemetry;
use proptest::prelude::*;
use serde::Deserialize;

/// A recorded series with the run it belongs to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[allow(dead_code)]
    description: String,
    gpu_uuid: String,
    window: Window,
    tokens: u64,
    #[serde(default)]
    tensor_flops_per_clock: Option<f64>,
    samples: Vec<Sample>,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn summary(f: &Fixture) -> GpuTelemetry {
    summarize(
        &f.gpu_uuid,
        &f.samples,
        f.window,
        f.tokens,
        f.tensor_flops_per_clock,
    )
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

macro_rules! assert_close {
    ($actual:expr, $expected:expr) => {{
        let (a, e): (f64, f64) = ($actual, $expected);
        assert!(close(a, e), "{} = {a}, expected {e}", stringify!($actual));
    }};
}

#[test]
fn a_steady_run_differences_the_interpolated_energy_counter() {
    let f = fixture("h100_steady.json");
    let t = summary(&f);
    assert_eq!(t.gpu_uuid, "GPU-5a1c7f2e-9b3d-4e61-8c0a-2f4d6b8e1a93");
    // Samples every 100 ms from T0; the window is T0+250 ms ..= T0+1330 ms: samples 3 to 13.
    assert_eq!(t.samples, 11);
    assert_close!(t.interval_s, 0.1);

    // The counter (mJ, from E0) is E0+130 000 at sample 2 and E0+195 300 at sample 3, so at
    // 250 ms, half-way, E0+162 650; it is E0+845 700 at sample 13 and E0+910 960 at sample 14,
    // so at 1330 ms, 30 % of the way, E0+845 700+0.3×65 260 = E0+865 278.
    // 865 278 − 162 650 = 702 628 mJ.
    assert_eq!(t.energy_source.as_deref(), Some("energy-counter"));
    assert_close!(t.energy_j.unwrap(), 702.628);
    assert_close!(t.j_per_token.unwrap(), 702.628 / 262_144.0);

    // Nine samples at 1980 MHz, two at 1965: 21 750 / 11.
    assert_close!(t.sm_clock_mean_mhz.unwrap(), 21_750.0 / 11.0);
    assert_eq!(t.sm_clock_min_mhz, Some(1965.0));
    assert_eq!(t.mem_clock_mean_mhz, Some(2619.0));
    // Power (mW) of samples 3..=13 sums to 7 156 600.
    assert_close!(t.power_mean_w.unwrap(), 650.6);
    assert_eq!(t.power_max_w, Some(654.0));
    assert_eq!(t.gpu_util_mean, Some(1.0));
    // Memory utilisation of samples 3..=13 sums to 447 %.
    assert_close!(t.mem_util_mean.unwrap(), 4.47 / 11.0);
    assert_eq!(t.temperature_max_c, Some(63.0));

    assert_eq!(t.clock_event_reasons, 0);
    assert!(t.clock_event_reason_names.is_empty());
    assert_eq!(t.throttled_share, 0.0);
    assert_eq!(t.idle_share, 0.0);
    // The violation counters did not move.
    assert_eq!(t.violation_s.len(), 4);
    assert!(
        t.violation_s.values().all(|&s| s == 0.0),
        "{:?}",
        t.violation_s
    );

    // GPM: any-tensor activity of samples 3..=13 sums to 7.10.
    let active = t.tensor_active.unwrap();
    assert_close!(active, 7.10 / 11.0);
    assert_close!(
        t.tensor_bound_flops_per_s.unwrap(),
        active * (21_750.0 / 11.0) * 1e6 * 132.0 * 4096.0
    );
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn a_power_capped_run_without_the_counter_integrates_power_and_warns() {
    let f = fixture("h100_power_cap.json");
    assert!(f.samples.iter().all(|s| s.energy_mj.is_none()));
    let t = summary(&f);
    // Samples every 100 ms from T1; the window is T1+50 ms ..= T1+1050 ms: samples 1 to 10.
    assert_eq!(t.samples, 10);

    // Power (W) at 0..=11 ms×100: 690, 700 ×6, 680, 660, 650 ×3. Trapezoids over the window,
    // its ends interpolated (695 W at 50 ms, 650 W at 1050 ms):
    //   (695+700)/2×0.05 + 700×0.5 + (700+680)/2×0.1 + (680+660)/2×0.1 + (660+650)/2×0.1
    //   + 650×0.1 + 650×0.05 = 34.875 + 350 + 69 + 67 + 65.5 + 65 + 32.5 = 683.875 J.
    assert_eq!(t.energy_source.as_deref(), Some("power-integral"));
    assert_close!(t.energy_j.unwrap(), 683.875);
    assert_close!(t.j_per_token.unwrap(), 683.875 / 262_144.0);
    assert_close!(t.power_mean_w.unwrap(), 684.0);
    assert_eq!(t.power_max_w, Some(700.0));

    // 1980, 1830, 1755, 1710, 1695, 1755, 1890, 1980, 1980, 1980: 18 555 / 10.
    assert_close!(t.sm_clock_mean_mhz.unwrap(), 1855.5);
    assert_eq!(t.sm_clock_min_mhz, Some(1695.0));
    assert_eq!(t.temperature_max_c, Some(79.0));

    // sw-power-cap in samples 2 to 6, once with sw-thermal-slowdown.
    assert_eq!(t.clock_event_reasons, 0x24);
    assert_eq!(
        t.clock_event_reason_names,
        vec!["sw-power-cap", "sw-thermal-slowdown"]
    );
    assert_close!(t.throttled_share, 0.5);
    assert_eq!(t.idle_share, 0.0);
    // The power violation counter rose from 5.00 s (samples 0 and 1) to 5.52 s (7 onwards);
    // the thermal one from 0 to 0.03 s.
    assert_close!(t.violation_s["power"], 0.52);
    assert_close!(t.violation_s["thermal"], 0.03);

    // No GPM in this series, so no tensor bound even though the FLOPs per clock are known.
    assert_eq!(t.tensor_active, None);
    assert_eq!(t.tensor_bound_flops_per_s, None);

    assert!(t.throttled_share > THROTTLED_SHARE_WARNING);
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    let warning = &t.warnings[0];
    assert!(
        warning.starts_with(
            "the GPU throttled (sw-power-cap, sw-thermal-slowdown) in 50 % of samples"
        ),
        "{warning}"
    );
    assert!(
        warning.contains("1856 MHz") && warning.contains("1695 MHz"),
        "{warning}"
    );
}

#[test]
fn a_mostly_idle_run_warns_that_the_gpu_waited() {
    let f = fixture("h100_mostly_idle.json");
    // The fixture is out of order on purpose.
    assert!(f.samples.windows(2).any(|w| w[1].t_ns < w[0].t_ns));
    let t = summary(&f);
    assert_eq!(t.samples, 20);
    assert_close!(t.interval_s, 0.1);

    // The window starts and ends on a sample: the counter's plain difference, 6 busy ticks of
    // 61 200 mJ and 13 idle ones of 11 800 mJ = 520 600 mJ.
    assert_eq!(t.energy_source.as_deref(), Some("energy-counter"));
    assert_close!(t.energy_j.unwrap(), 520.6);
    assert_close!(t.j_per_token.unwrap(), 520.6 / 65_536.0);

    assert_close!(t.idle_share, 0.7);
    assert!(t.idle_share > IDLE_SHARE_WARNING);
    assert_close!(t.gpu_util_mean.unwrap(), 0.3);
    assert_eq!(t.throttled_share, 0.0);
    assert_eq!(t.clock_event_reasons, 0x1);
    assert_eq!(t.clock_event_reason_names, vec!["gpu-idle"]);
    // No FLOPs per clock given and no GPM: neither tensor field.
    assert_eq!(t.tensor_active, None);
    assert_eq!(t.tensor_bound_flops_per_s, None);

    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].starts_with("the GPU sat idle in 70 % of samples"),
        "{}",
        t.warnings[0]
    );
}

#[test]
fn a_window_with_too_few_samples_says_so() {
    let f = fixture("h100_steady.json");
    let start = f.samples[4].t_ns + 30_000_000;
    let window = Window {
        start_ns: start,
        end_ns: start + 200_000_000,
    };
    let t = summarize(&f.gpu_uuid, &f.samples, window, f.tokens, None);
    assert_eq!(t.samples, 2);
    // 430 ms to 630 ms: samples 5 and 6 inside, the energy still measured from the bracketing
    // ones: 70 % of tick 4→5, all of 5→6 and 30 % of 6→7 (65 010, 65 200 and 64 790 mJ).
    assert_close!(
        t.energy_j.unwrap(),
        (0.7 * 65_010.0 + 65_200.0 + 0.3 * 64_790.0) / 1000.0
    );
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].starts_with("only 2 telemetry samples fell inside the timed run (0.20 s)"),
        "{}",
        t.warnings[0]
    );
}

#[test]
fn the_summary_fits_the_record() {
    // The record's schema denies unknown fields and its consumers read the JSON; the block
    // must survive the round trip unchanged.
    for name in [
        "h100_steady.json",
        "h100_power_cap.json",
        "h100_mostly_idle.json",
    ] {
        let t = summary(&fixture(name));
        let json = serde_json::to_string(&t).unwrap();
        let back: GpuTelemetry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t, "{name}");
    }
}

#[test]
fn reason_names_follow_nvml_h() {
    assert_eq!(
        reason_names(0x1ff),
        vec![
            "gpu-idle",
            "applications-clocks-setting",
            "sw-power-cap",
            "hw-slowdown",
            "sync-boost",
            "sw-thermal-slowdown",
            "hw-thermal-slowdown",
            "hw-power-brake-slowdown",
            "display-clock-setting",
        ]
    );
    assert_eq!(
        reason_names(0x80 | 0x1000),
        vec!["hw-power-brake-slowdown", "unknown-0x1000"]
    );
}

/// The counter at `t` as the record defines it: linear between the samples around `t`, the
/// nearest sample's value beyond them. Written as a plain scan, apart from the library's.
fn counter_at(points: &[(u64, u64)], t: u64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if t <= first.0 {
        return first.1 as f64;
    }
    if t >= last.0 {
        return last.1 as f64;
    }
    for pair in points.windows(2) {
        let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
        if t0 <= t && t < t1 {
            return v0 as f64 + (v1 - v0) as f64 * (t - t0) as f64 / (t1 - t0) as f64;
        }
    }
    unreachable!("t lies within the points")
}

prop_compose! {
    /// A sampler's series: strictly increasing times, a counter that never goes backwards, and
    /// arbitrary reasons and utilisation.
    fn monotone_series()(
        t0 in 0u64..(1 << 50),
        e0 in 0u64..(1 << 40),
        ticks in prop::collection::vec(
            (1u64..400_000_000, 0u64..200_000, 0u64..0x200, prop::option::of(0u32..=100)),
            1..50,
        ),
    ) -> Vec<Sample> {
        let (mut t, mut e) = (t0, e0);
        ticks
            .into_iter()
            .map(|(dt, de, reasons, util)| {
                t += dt;
                e += de;
                Sample {
                    energy_mj: Some(e),
                    clock_event_reasons: Some(reasons),
                    gpu_util_pct: util,
                    ..Sample::at(t)
                }
            })
            .collect()
    }
}

proptest! {
    #[test]
    fn counter_energy_is_the_counter_difference_and_never_negative(
        samples in monotone_series(),
        a in 0u64..30_000_000_000,
        b in 0u64..30_000_000_000,
        before in 0u64..2_000_000_000,
    ) {
        // Window ends anywhere from a little before the first sample to well after the last.
        let base = samples[0].t_ns.saturating_sub(before);
        let window = Window { start_ns: base + a.min(b), end_ns: base + a.max(b) };
        let t = summarize("GPU-p", &samples, window, 1000, None);

        let points: Vec<(u64, u64)> =
            samples.iter().map(|s| (s.t_ns, s.energy_mj.unwrap())).collect();
        let covered = points[0].0 <= window.end_ns && points[points.len() - 1].0 >= window.start_ns;
        if covered {
            let expected =
                (counter_at(&points, window.end_ns) - counter_at(&points, window.start_ns)) / 1000.0;
            let energy = t.energy_j.expect("a covered window has energy");
            prop_assert!(energy >= 0.0);
            prop_assert!((energy - expected).abs() <= 1e-6 * expected.max(1.0), "{} vs {}", energy, expected);
            prop_assert_eq!(t.energy_source.as_deref(), Some("energy-counter"));
            let per_token = t.j_per_token.unwrap();
            prop_assert!((per_token - energy / 1000.0).abs() <= 1e-12 * per_token.max(1.0));
        } else {
            // No power readings to fall back on.
            prop_assert_eq!(t.energy_j, None);
        }
        prop_assert!((0.0..=1.0).contains(&t.throttled_share));
        prop_assert!((0.0..=1.0).contains(&t.idle_share));
    }

    #[test]
    fn any_series_and_window_summarize_without_panicking(
        samples in prop::collection::vec(
            (any::<u64>(), any::<Option<u32>>(), any::<Option<u64>>(), any::<Option<u64>>(),
             any::<Option<u32>>(), prop::option::of(prop::num::f64::ANY)),
            0..30,
        ),
        start in any::<u64>(),
        end in any::<u64>(),
        tokens in any::<u64>(),
        per_clock in prop::option::of(prop::num::f64::ANY),
    ) {
        let samples: Vec<Sample> = samples
            .into_iter()
            .map(|(t, power, energy, reasons, util, tensor)| Sample {
                power_mw: power,
                sm_clock_mhz: power,
                energy_mj: energy,
                clock_event_reasons: reasons,
                gpu_util_pct: util,
                tensor_active: tensor,
                ..Sample::at(t)
            })
            .collect();
        let t = summarize("GPU-p", &samples, Window { start_ns: start, end_ns: end }, tokens, per_clock);
        prop_assert!((0.0..=1.0).contains(&t.throttled_share));
        prop_assert!((0.0..=1.0).contains(&t.idle_share));
        prop_assert!(t.energy_j.is_none_or(|e| e >= 0.0 && e.is_finite()));
        prop_assert!(t.tensor_active.is_none_or(|a| (0.0..=1.0).contains(&a)));
        prop_assert!(t.interval_s >= 0.0 && t.interval_s.is_finite());
        prop_assert!(serde_json::to_string(&t).is_ok());
    }
}
