//! Why a run failed: one code from a closed set, and a message that says what to do.

use serde::{Deserialize, Serialize};

use crate::registry::{Code, OpError};

/// Every way a run can fail. Codes are stable: records and scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCode {
    // The artifact.
    /// Not a WebAssembly binary at all.
    NotWasm,
    /// A core wasm module rather than a component.
    CoreModule,
    /// A component that does not validate or compile.
    InvalidComponent,
    /// Imports something outside the contract (WASI, or anything else).
    ForbiddenImport,
    /// Does not export the contract's `run` with its type.
    WrongWorld,
    // The guest's behaviour.
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access).
    GuestTrap,
    /// The guest used a tensor handle that is dropped or was never its own.
    BadHandle,
    /// The guest's `run` returned an error of its own.
    GuestError,
    /// An op was called with the wrong number or kind of arguments.
    BadArguments,
    ShapeMismatch,
    WrongDtype,
    UnknownOp,
    /// libtorch refused an op whose arguments passed the checks.
    OpFailed,
    /// The workload interface was used out of order, or not every window was submitted.
    Protocol,
    /// A submitted upload does not decode (indices out of range, codes past the bins).
    InvalidUpload,
    // Limits.
    FuelExhausted,
    DeadlineExceeded,
    GuestMemoryLimit,
    TensorMemoryLimit,
    OpLimit,
    HandleLimit,
    // The worker process.
    /// The worker died from a signal (segfault, abort, device-side assert).
    WorkerCrashed,
    /// The worker was killed, most likely by the kernel's OOM killer.
    WorkerKilled,
    /// The worker outlived the run's timeout and was killed by the parent.
    WorkerTimeout,
    /// The requested device is unavailable.
    Device,
    /// The harness itself failed: a bug, or a broken installation.
    Internal,
}

impl FailureCode {
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{self:?}"))
    }

    /// The submission's fault (as opposed to the harness's or the machine's).
    pub fn is_submission_fault(self) -> bool {
        !matches!(
            self,
            FailureCode::Device | FailureCode::Internal | FailureCode::WorkerKilled
        )
    }
}

impl From<Code> for FailureCode {
    fn from(c: Code) -> Self {
        match c {
            Code::UnknownOp => FailureCode::UnknownOp,
            Code::BadArguments => FailureCode::BadArguments,
            Code::ShapeMismatch => FailureCode::ShapeMismatch,
            Code::WrongDtype => FailureCode::WrongDtype,
            Code::OpFailed => FailureCode::OpFailed,
            Code::Protocol => FailureCode::Protocol,
            Code::Guest => FailureCode::GuestError,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} [{}]", code.as_str())]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(FailureCode::Internal, message)
    }
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        Failure::new(e.code.into(), e.message)
    }
}
