//! The crusades guest SDK: a typed Rust API over the WIT contract
//! (`sandbox/wit/crusades.wit`, package `crusades:submission@0.2.0`, world `submission`).
//!
//! A submission is a `wasm32-unknown-unknown` cdylib that implements [`Submission`] and exports
//! itself with [`export!`]:
//!
//! ```ignore
//! struct MySub;
//! impl crusades_sdk::Submission for MySub {
//!     fn run() -> crusades_sdk::Result<()> {
//!         let cfg = crusades_sdk::workload::config();
//!         // ... train every window, submitting each ...
//!         Ok(())
//!     }
//! }
//! crusades_sdk::export!(MySub);
//! ```
//!
//! Tensors live on the host; [`Tensor`] is an opaque handle whose methods call the host's op
//! registry (`sandbox/src/registry.rs`) by name. Every op id is resolved once and cached in a
//! static ([`Op`]), so a call costs one host round trip. Whatever the host refuses comes back as
//! an [`Error`] (the contract's `op-error`); nothing in this crate unwraps a host result.
//!
//! Modules: [`workload`] (config, parameters, batches, peer uploads, submit), [`nn`] (the
//! LLaMA building blocks), [`compress`] (Templar's DeMo compressor).

#![deny(unsafe_op_in_unsafe_fn)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "submission",
        path: "../../sandbox/wit",
        pub_export_macro: true,
        default_bindings_module: "crusades_sdk::bindings",
    });
}

pub mod compress;
pub mod math;
pub mod nn;
mod tensor;
pub mod workload;

pub use tensor::{noop, ops, Arg, Op, Operand, Tensor};

/// The contract's dtypes: `F32`, `Bf16`, `F16`, `I64`, `U8`, `Boolean`.
pub use bindings::crusades::submission::tensors::Dtype;
/// Why an op (or the guest) failed: the contract's `error-code`.
pub use bindings::crusades::submission::tensors::ErrorCode;
/// The contract's `op-error`: a code and a message. Host refusals arrive as this type and a
/// submission's own failures are made with [`Error::guest`].
pub use bindings::crusades::submission::tensors::OpError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error raised by the submission itself (code `guest`).
    pub fn guest(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Guest, message)
    }
}

/// Adds what was being done to an error's message, keeping its code.
pub trait Context<T> {
    fn context(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(e.code, format!("{what}: {}", e.message)))
    }
}

impl Dtype {
    /// f32, bf16 or f16.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::Bf16 | Dtype::F16)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
            Dtype::I64 => 8,
            Dtype::U8 | Dtype::Boolean => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::I64 => "i64",
            Dtype::U8 => "u8",
            Dtype::Boolean => "bool",
        }
    }
}

/// A no-grad scope on the host: entered by [`no_grad`], left when the guard drops (or
/// explicitly with [`NoGrad::exit`], which reports a failure that `Drop` has to swallow).
#[must_use = "the no-grad scope ends when the guard is dropped"]
pub struct NoGrad {
    active: bool,
}

/// Enters a host no-grad scope (`no_grad_enter`); the scope lasts as long as the guard.
pub fn no_grad() -> Result<NoGrad> {
    ops::NO_GRAD_ENTER.call0(&[])?;
    Ok(NoGrad { active: true })
}

impl NoGrad {
    pub fn exit(mut self) -> Result<()> {
        self.active = false;
        ops::NO_GRAD_EXIT.call0(&[])
    }
}

impl Drop for NoGrad {
    fn drop(&mut self) {
        if self.active {
            // Nothing to report to from a destructor; `exit` is the checked form.
            let _ = ops::NO_GRAD_EXIT.call0(&[]);
        }
    }
}

/// What a submission implements: train every window of the workload, in order.
pub trait Submission {
    fn run() -> Result<()>;
}

/// Exports a [`Submission`] as the component's `run`.
///
/// ```ignore
/// struct MySub;
/// impl crusades_sdk::Submission for MySub { fn run() -> crusades_sdk::Result<()> { Ok(()) } }
/// crusades_sdk::export!(MySub);
/// ```
#[macro_export]
#[rustfmt::skip]
macro_rules! export {
    ($ty:ty) => {
        const _: () = {
            struct __CrusadesExport;
            impl $crate::bindings::Guest for __CrusadesExport {
                fn run() -> ::core::result::Result<(), $crate::Error> {
                    <$ty as $crate::Submission>::run()
                }
            }
            $crate::bindings::export!(__CrusadesExport with_types_in $crate::bindings);
        };
    };
}
