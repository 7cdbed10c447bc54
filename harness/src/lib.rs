//! The `crusades` binary's library: its commands and what they are built from.
//!
//! - `chain`: what miners commit and the u16 weights `set_weights` takes (the client and the
//!   validator daemon build on it);
//! - `commands`: one module per subcommand (`bench`, `run`, `build`, `ops`, `flops`,
//!   `reference`, `compress`, …) and the workload flags and caches they share;
//! - `flops`: the FLOP model (model FLOPs per token, MFU and HFU arithmetic);
//! - `peak`: the MFU denominator (GPU datasheet table, CPU GEMM calibration, override);
//! - `hardware`: what the record says about the machine;
//! - `verify`: a run's outputs measured against the reference's;
//! - `gates`: the thresholds, and the verdict they give;
//! - `report`: human formatting, progress bars and statistics.
//!
//! Telemetry (NVML during the runs), the validator daemon and the chain client arrive with
//! their issues (../shared/DESIGN.md).

pub mod chain;
pub mod commands;
pub mod flops;
pub mod gates;
pub mod hardware;
pub mod peak;
pub mod report;
pub mod validator;
pub mod verify;

/// A problem with what the user asked for or handed in (exit code 2), as opposed to a failure
/// of the harness itself (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Shorthand for returning an [`InputError`].
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::InputError(format!($($arg)*))))
    };
}
