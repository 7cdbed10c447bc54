//! crusades-results: what outlives an evaluation.
//!
//! - `record`: the versioned result record every later feature reads, and its JSON Schema;
//! - `store`: the SQLite store (submissions, evaluations, leader state, weights history);
//! - `queue`: the validator daemon's state in the store (commitments seen on chain and where
//!   each stands, named values such as the last block polled);
//! - `leaderboard`: ranking by median score and Crusades' adaptive threshold;
//! - `weights`: winner-takes-all with burn;
//! - `time`: RFC 3339 and the block clock.
//!
//! Published records that CI reproduces live in `results/records/`.

pub mod leaderboard;
pub mod queue;
pub mod record;
pub mod store;
pub mod time;
pub mod weights;

#[doc(hidden)]
pub mod testing;

pub use record::{GateCode, Record, Verdict, SCHEMA};

/// The committed JSON Schema of [`Record`] (regenerate with
/// `CRUSADES_BLESS=1 cargo test -p crusades-results`).
pub const RECORD_SCHEMA: &str = include_str!("../schema/record-v1.schema.json");
