//! The validator daemon (`crusades validate`): it polls the chain for commitments, fetches
//! the submissions they name, evaluates them one at a time per device through `bench`, keeps
//! the results in the store and sets weights every `set_weights_interval_blocks`.

pub mod config;
pub mod daemon;
pub mod fetch;
pub mod metrics;
pub mod setter;
pub mod source;
