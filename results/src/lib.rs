//! crusades-results: result records, the store, the leaderboard and the weights rule.
//!
//! Not built yet; it arrives with the bench and results issues. It will hold the versioned
//! record schema (serde_json), the SQLite store, the leaderboard and Crusades' winner-takes-all
//! weights rule. Published records that CI reproduces live in `results/records/`.
