//! The chain side of a validator (../shared/DESIGN.md, "Chain"): what miners commit and what
//! a validator sends back. So far the parts that need no node: the strict commitment parser
//! and the u16 weight encoding that `set_weights` takes. The subxt client and the daemon
//! build on these.

pub mod client;
pub mod commitment;
pub mod keys;
pub mod weights;
