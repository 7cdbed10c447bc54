//! crusades-reference: the trusted reference workload.
//!
//! Templar's DCT-compressed gradient training (DeMo) exactly as `../shared/WORKLOAD.md` states
//! it: a LLaMA-style decoder in tch ([`model`]), the synthetic and file corpora with Templar's
//! page draw ([`corpus`]), the compressor ([`compress`]), one window step and a whole run
//! ([`window`]), and the safetensors formats ([`io`]). No process, network or CLI code lives
//! here; the `crusades` binary drives it.

pub mod compress;
pub mod config;
pub mod corpus;
pub mod device;
pub mod error;
pub mod io;
pub mod model;
pub mod rng;
pub mod window;

pub use config::{HyperParams, ModelConfig, WorkloadConfig, PRESETS};
pub use error::{Error, Result};
