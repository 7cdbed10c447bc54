//! crusades-sandbox: the wasmtime host that runs submissions.
//!
//! - [`registry`]: every op a guest can call, with its argument checks, FLOP formula and
//!   executor over tch;
//! - [`host`]: the bindings generated from `wit/crusades.wit` and the store state behind them;
//! - [`limits`] and [`failure`]: the caps on a run and the closed set of ways it can fail;
//! - [`accounting`]: per-op calls, time, FLOPs and bytes, and window latencies;
//! - [`session`]: one run's workload on the host side;
//! - [`runner`]: load-time checks, a fresh store per run;
//! - [`lockdown`]: what the worker gives up before the guest runs (inherited descriptors,
//!   sockets, exec, new processes);
//! - [`clock`]: the timed region, by the host clock and (on CUDA) by device events;
//! - [`worker`]: the process boundary. The parent sends a job, a worker process runs it and
//!   returns safetensors outputs and a JSON report; a crash there is a failed run here.

pub mod accounting;
pub mod clock;
pub mod failure;
pub mod host;
pub mod limits;
pub mod lockdown;
pub mod registry;
pub mod runner;
pub mod session;
pub mod worker;

pub use failure::{Failure, FailureCode};
pub use limits::Limits;

/// The WIT contract, as submissions see it.
pub const CONTRACT_WIT: &str = include_str!("../wit/crusades.wit");

/// The contract's package version (`package crusades:submission@X;`), recorded in every result.
pub const CONTRACT_VERSION: &str = contract_version();

const fn contract_version() -> &'static str {
    // `package crusades:submission@` … `;`, found at compile time so the two cannot drift.
    let bytes = CONTRACT_WIT.as_bytes();
    let marker = b"package crusades:submission@";
    let mut i = 0;
    while i + marker.len() < bytes.len() {
        let mut j = 0;
        while j < marker.len() && bytes[i + j] == marker[j] {
            j += 1;
        }
        if j == marker.len() {
            let start = i + j;
            let mut end = start;
            while end < bytes.len() && bytes[end] != b';' {
                end += 1;
            }
            let (_, rest) = bytes.split_at(start);
            let (version, _) = rest.split_at(end - start);
            return match std::str::from_utf8(version) {
                Ok(v) => v,
                Err(_) => panic!("the WIT package version is not UTF-8"),
            };
        }
        i += 1;
    }
    panic!("sandbox/wit/crusades.wit has no `package crusades:submission@VERSION;` line")
}

#[cfg(test)]
mod tests {
    #[test]
    fn contract_version_is_the_wit_package_version() {
        assert_eq!(super::CONTRACT_VERSION, "0.2.0");
    }
}
