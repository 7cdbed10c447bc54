//! Host-call overhead: the guest calls the empty `noop` op on a borrowed tensor handle in a
//! tight loop, so each iteration is one full trip through the contract (argument lowering,
//! the registry lookup and checks, accounting, the limit checks). Prints JSON.
//!
//!     cargo bench -p crusades-sandbox --bench host_call

#[path = "../tests/common/mod.rs"]
mod common;

use crusades_reference::config::WorkloadConfig;
use crusades_sandbox::runner::Sandbox;
use crusades_sandbox::session::Session;
use crusades_sandbox::Limits;
use tch::Device;

fn main() {
    // The noop-loop guest makes topk × 1000 calls.
    let calls: u64 = 1_000_000;
    let mut config = WorkloadConfig::from_preset("tiny").unwrap();
    config.hparams.topk = (calls / 1000) as i64;
    let sandbox = Sandbox::new().unwrap();
    let compiled = sandbox.compile(&common::guest("noop-loop")).unwrap();
    let mut ns = Vec::new();
    for _ in 0..7 {
        let session = Session::without_windows(&config, Device::Cpu).unwrap();
        let run = sandbox.run(&compiled, session, Limits::default()).unwrap();
        let profile = run.state.accounting.report();
        assert_eq!(profile.total_calls, calls, "the guest made every call");
        ns.push(run.time.wall_s * 1e9 / calls as f64);
    }
    let n = ns.len() as f64;
    let mean = ns.iter().sum::<f64>() / n;
    let sd = (ns.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let min = ns.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = ns.iter().cloned().fold(0.0, f64::max);
    let doc = serde_json::json!({
        "bench": "host_call",
        "calls_per_run": calls,
        "runs": ns.len(),
        "ns_per_call": { "mean": mean, "sd": sd, "min": min, "max": max, "all": ns },
        "target_ns": 1000,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    eprintln!("host call (noop on a borrowed handle): {mean:.0} ± {sd:.0} ns  (min {min:.0} … max {max:.0}, {} runs of {calls})", ns.len());
}
