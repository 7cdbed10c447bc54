//! crusades-results: the result record every later feature reads (store, leaderboard,
//! reproduce, chain), and its JSON Schema. The SQLite store, the leaderboard and Crusades'
//! weights rule arrive with their issues (../shared/DESIGN.md). Published records that CI
//! reproduces live in `results/records/`.

pub mod record;

pub use record::{GateCode, Record, Verdict, SCHEMA};

/// The committed JSON Schema of [`Record`] (regenerate with
/// `CRUSADES_BLESS=1 cargo test -p crusades-results`).
pub const RECORD_SCHEMA: &str = include_str!("../schema/record-v1.schema.json");
