//! crusades-sandbox: the wasmtime host that runs submissions.
//!
//! Not built yet; it arrives with the sandbox issue. It will hold the WIT contract
//! (`sandbox/wit/`), the op registry (name, FLOP formula, executor over tch), the limits (fuel,
//! epoch deadline, guest memory, host tensor bytes, op and handle counts), the per-op
//! accounting, and the worker-process protocol. See ../shared/DESIGN.md, "Layout".
