//! What a run did, op by op: calls, host time, FLOPs and bytes per op name, and each window's
//! latency in an HDR histogram.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::registry::REGISTRY;

#[derive(Debug, Clone, Copy, Default)]
struct OpCounters {
    calls: u64,
    nanos: u64,
    flops: f64,
    bytes: u64,
}

/// Per-op counters, indexed like the registry.
pub struct Accounting {
    ops: Vec<OpCounters>,
    /// Wall time per phase the guest marked, in [`Phase`] order.
    phases: [Duration; 4],
    /// Window latencies in microseconds (1 µs to 1 day, 3 significant digits).
    windows: Histogram<u64>,
}

impl Default for Accounting {
    fn default() -> Self {
        Self::new()
    }
}

impl Accounting {
    pub fn new() -> Self {
        Self {
            ops: vec![OpCounters::default(); REGISTRY.len()],
            phases: [Duration::ZERO; 4],
            windows: Histogram::new_with_bounds(1, 86_400_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn record_op(&mut self, op: usize, elapsed: Duration, flops: f64, bytes: u64) {
        let c = &mut self.ops[op];
        c.calls += 1;
        c.nanos += elapsed.as_nanos() as u64;
        c.flops += flops;
        // An expanded view's bytes saturate at u64::MAX: so does the total.
        c.bytes = c.bytes.saturating_add(bytes);
    }

    pub fn record_window(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 86_400_000_000);
        self.windows.saturating_record(micros);
    }

    pub fn record_phase(&mut self, phase: Phase, elapsed: Duration) {
        self.phases[phase as usize] += elapsed;
    }

    pub fn total_ops(&self) -> u64 {
        self.ops.iter().map(|c| c.calls).sum()
    }

    pub fn report(&self) -> Profile {
        let mut ops: Vec<OpProfile> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, c)| c.calls > 0)
            .map(|(i, c)| OpProfile {
                op: REGISTRY[i].name.to_string(),
                calls: c.calls,
                seconds: c.nanos as f64 * 1e-9,
                flops: c.flops,
                bytes: c.bytes,
            })
            .collect();
        ops.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.op.cmp(&b.op)));
        let h = &self.windows;
        let q = |p: f64| h.value_at_quantile(p) as f64 * 1e-6;
        Profile {
            total_calls: ops.iter().map(|o| o.calls).sum(),
            total_seconds: ops.iter().map(|o| o.seconds).sum(),
            total_flops: ops.iter().map(|o| o.flops).sum(),
            total_bytes: ops.iter().map(|o| o.bytes).sum(),
            ops,
            phases: PhaseTimes {
                train_s: self.phases[Phase::Train as usize].as_secs_f64(),
                compress_s: self.phases[Phase::Compress as usize].as_secs_f64(),
                aggregate_s: self.phases[Phase::Aggregate as usize].as_secs_f64(),
                other_s: self.phases[Phase::Other as usize].as_secs_f64(),
            },
            windows: (!h.is_empty()).then(|| LatencySummary {
                count: h.len(),
                mean_s: h.mean() * 1e-6,
                p50_s: q(0.5),
                p90_s: q(0.9),
                p99_s: q(0.99),
                max_s: h.max() as f64 * 1e-6,
            }),
        }
    }
}

/// The per-op profile of one run, sorted by host time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    pub total_calls: u64,
    /// Host seconds inside op executors. On CUDA this is launch time, not device time.
    pub total_seconds: f64,
    /// Hardware FLOPs executed (the HFU numerator).
    pub total_flops: f64,
    pub total_bytes: u64,
    pub ops: Vec<OpProfile>,
    /// Window (step) latencies, from one `submit` to the next.
    pub windows: Option<LatencySummary>,
    /// Wall time per phase, as the guest marked them (`mark-phase`); not scored.
    #[serde(default)]
    pub phases: PhaseTimes,
}

/// The phases a guest can mark (`workload.phase` in the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Train = 0,
    Compress = 1,
    Aggregate = 2,
    Other = 3,
}

/// Seconds of the guest call spent in each marked phase. They add up to the run's time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    pub train_s: f64,
    pub compress_s: f64,
    pub aggregate_s: f64,
    pub other_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpProfile {
    pub op: String,
    pub calls: u64,
    pub seconds: f64,
    pub flops: f64,
    /// Bytes of the op's tensor arguments and results.
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn profile_sorts_by_time_and_sums() {
        let mut a = Accounting::new();
        let (mm, add) = (lookup("matmul").unwrap(), lookup("add").unwrap());
        a.record_op(add, Duration::from_millis(1), 10.0, 100);
        a.record_op(mm, Duration::from_millis(5), 1000.0, 400);
        a.record_op(add, Duration::from_millis(1), 10.0, 100);
        for ms in [10, 20, 30, 40] {
            a.record_window(Duration::from_millis(ms));
        }
        a.record_phase(Phase::Compress, Duration::from_millis(3));
        a.record_phase(Phase::Compress, Duration::from_millis(2));
        a.record_phase(Phase::Train, Duration::from_millis(7));
        let p = a.report();
        assert!(
            (p.phases.compress_s - 0.005).abs() < 1e-12,
            "{:?}",
            p.phases
        );
        assert!((p.phases.train_s - 0.007).abs() < 1e-12);
        assert_eq!((p.phases.aggregate_s, p.phases.other_s), (0.0, 0.0));
        assert_eq!(p.ops[0].op, "matmul");
        assert_eq!(p.ops[1].calls, 2);
        assert_eq!(p.total_calls, 3);
        assert_eq!(p.total_flops, 1020.0);
        assert_eq!(p.total_bytes, 600);
        let w = p.windows.unwrap();
        assert_eq!(w.count, 4);
        assert!(
            (w.max_s - 0.040).abs() < 1e-4 && (w.p50_s - 0.020).abs() < 1e-4,
            "{w:?}"
        );
    }
}
