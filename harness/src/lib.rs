//! The `crusades` binary's library: its commands and their reports.
//!
//! For now it drives the reference workload (`reference`, `compress`, `aggregate`,
//! `compress-bench`). Bench orchestration, timing, telemetry, the FLOP model, the gates, the
//! validator daemon and the chain client arrive with their issues (../shared/DESIGN.md).

pub mod commands;
pub mod flops;
pub mod gates;
pub mod hardware;
pub mod peak;
pub mod report;
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
