//! The daemon's counters and gauges, rendered as Prometheus text (format 0.0.4) at
//! `/metrics`. Plain atomics: the daemon's tasks update them, the HTTP handler reads them.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub chain_block: AtomicU64,
    pub chain_connected: AtomicU64,
    pub chain_rpc_errors: AtomicU64,
    pub chain_reconnects: AtomicU64,
    pub commitments_seen: AtomicU64,
    pub commitments_invalid: AtomicU64,
    pub queue_depth: AtomicU64,
    pub fetch_failures: AtomicU64,
    pub evaluations_done: AtomicU64,
    pub evaluations_failed: AtomicU64,
    pub evaluations_retried: AtomicU64,
    pub evaluation_running: AtomicU64,
    pub last_evaluation_seconds: AtomicU64,
    pub weights_set: AtomicU64,
    pub weights_failed: AtomicU64,
    /// −1 until weights were set (or dry-run recorded) once.
    pub last_weights_block: AtomicI64,
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        m.last_weights_block.store(-1, Ordering::Relaxed);
        m
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let rows: [(&str, &str, &str, f64); 16] = [
            (
                "crusades_chain_block",
                "gauge",
                "The newest finalized block the poller read.",
                get(&self.chain_block),
            ),
            (
                "crusades_chain_connected",
                "gauge",
                "1 while the chain client is connected.",
                get(&self.chain_connected),
            ),
            (
                "crusades_chain_rpc_errors_total",
                "counter",
                "Chain RPC calls that failed or timed out.",
                get(&self.chain_rpc_errors),
            ),
            (
                "crusades_chain_reconnects_total",
                "counter",
                "Connections made to the node after the first.",
                get(&self.chain_reconnects),
            ),
            (
                "crusades_commitments_seen_total",
                "counter",
                "New commitments recorded (valid or not).",
                get(&self.commitments_seen),
            ),
            (
                "crusades_commitments_invalid",
                "gauge",
                "Commitments in the store that did not parse.",
                get(&self.commitments_invalid),
            ),
            (
                "crusades_queue_depth",
                "gauge",
                "Commitments waiting to be fetched and evaluated.",
                get(&self.queue_depth),
            ),
            (
                "crusades_fetch_failures_total",
                "counter",
                "Downloads refused or failed.",
                get(&self.fetch_failures),
            ),
            (
                "crusades_evaluations_done_total",
                "counter",
                "Evaluations stored (accepted or rejected).",
                get(&self.evaluations_done),
            ),
            (
                "crusades_evaluations_failed_total",
                "counter",
                "Commitments given up (fatal errors or too many attempts).",
                get(&self.evaluations_failed),
            ),
            (
                "crusades_evaluations_retried_total",
                "counter",
                "Transient failures put back in the queue.",
                get(&self.evaluations_retried),
            ),
            (
                "crusades_evaluation_running",
                "gauge",
                "1 while an evaluation runs.",
                get(&self.evaluation_running),
            ),
            (
                "crusades_last_evaluation_seconds",
                "gauge",
                "Wall time of the last evaluation.",
                get(&self.last_evaluation_seconds),
            ),
            (
                "crusades_weights_set_total",
                "counter",
                "set_weights extrinsics included (or dry runs recorded).",
                get(&self.weights_set),
            ),
            (
                "crusades_weights_failed_total",
                "counter",
                "set_weights attempts that failed.",
                get(&self.weights_failed),
            ),
            (
                "crusades_last_weights_block",
                "gauge",
                "The block of the last weights set; -1 before the first.",
                self.last_weights_block.load(Ordering::Relaxed) as f64,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_one_sample() {
        let m = Metrics::new();
        Metrics::inc(&m.evaluations_done);
        m.queue_depth.store(3, Ordering::Relaxed);
        let text = m.render();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), 16);
        for s in &samples {
            let (name, value) = s.split_once(' ').unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            value.parse::<f64>().unwrap();
        }
        assert!(text.contains("crusades_evaluations_done_total 1\n"));
        assert!(text.contains("crusades_queue_depth 3\n"));
        assert!(text.contains("crusades_last_weights_block -1\n"));
    }
}
