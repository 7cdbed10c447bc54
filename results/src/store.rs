//! The SQLite store: submissions, evaluations (each one's full record, plus the columns lists
//! and the leaderboard query by), the leader of each competition, the history of leader
//! changes and of weight vectors, and the validator daemon's state (`crate::queue`).
//!
//! - One file (`results.db`), SQLite bundled with the binary, in WAL mode with
//!   `synchronous=FULL`: a committed transaction survives a killed process and a power cut; a
//!   process killed in the middle of one leaves the file as it was before it.
//! - Every write goes through [`Store::write`]: one `BEGIN IMMEDIATE` transaction, all of it
//!   or nothing. The write methods of [`Ledger`] refuse to run outside one.
//! - The schema is versioned with `PRAGMA user_version` and marked as crusades' with
//!   `PRAGMA application_id`. [`Store::open`] applies the missing migrations, each in its own
//!   transaction with its version bump, and refuses a store written by a newer crusades, a
//!   file that is not SQLite and another program's database, before writing anything to them.
//! - Nothing read from the file is trusted: a malformed row is an error that says which row,
//!   never a panic.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::FromSql;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::leaderboard::{competition_of, LeaderChange, LeaderState, SubmissionScores};
use crate::record::{Record, RecordError, Verdict};
use crate::time::{block_at, parse_rfc3339};
use crate::weights::WeightsEntry;

/// The migrations, in order: (the schema version it brings the store to, its SQL).
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/0001_schema.sql")),
    (2, include_str!("../migrations/0002_validator.sql")),
    (3, include_str!("../migrations/0003_commitments.sql")),
];

/// The newest schema this crusades reads and writes: the last migration's number.
pub const SCHEMA_VERSION: u32 = 3;

const _: () = assert!(MIGRATIONS[MIGRATIONS.len() - 1].0 == SCHEMA_VERSION);

/// `PRAGMA application_id` of a crusades store: "CRUS".
pub const APPLICATION_ID: i32 = 0x4352_5553;

/// How long a write waits for another process's transaction before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order: (schema version, SQL). Migration N's SQL brings a store at
/// version N − 1 to N; the store applies it in one transaction with `PRAGMA user_version = N`.
pub fn migrations() -> &'static [(u32, &'static str)] {
    MIGRATIONS
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is not an SQLite database, so not a crusades store; it is left as it is: give \
         another --db",
        path.display()
    )]
    NotADatabase { path: PathBuf },
    #[error(
        "{} is an SQLite database but not a crusades store ({why}); it is left as it is: give \
         another --db",
        path.display()
    )]
    NotAStore { path: PathBuf, why: String },
    #[error(
        "{} was written by a newer crusades (schema {found}; this one reads up to {supported}): \
         upgrade crusades, or use another --db",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "upgrading {} to schema {version} failed: {error}; the store is left at schema {}",
        path.display(),
        version - 1
    )]
    Migration {
        path: PathBuf,
        version: u32,
        error: rusqlite::Error,
    },
    #[error("no evaluation or submission matches {0}; `crusades results list` shows them")]
    NotFound(String),
    #[error(
        "{0:?} is neither an evaluation id nor a sha256 prefix (hex digits, 4 or more to name \
         one submission); `crusades results list` shows them"
    )]
    InvalidKey(String),
    #[error("{key} matches more than one: {}; give more of the sha256", matches.join(", "))]
    Ambiguous { key: String, matches: Vec<String> },
    /// A value the store cannot keep (a malformed sha256, a time that is not RFC 3339 with no
    /// block given, a NaN, a record whose JSON would not read back).
    #[error("cannot store this: {0}")]
    Invalid(String),
    #[error(
        "submission {0} is not in the store; a leader must be a stored submission (insert its \
         evaluation first)"
    )]
    UnknownSubmission(String),
    #[error("a write to the store must run inside Store::write (one transaction)")]
    NotInTransaction,
    /// A row that does not read back: the file was damaged or edited by hand.
    #[error(
        "{store}: {what}: {detail}; the store is damaged (restore it from a backup, or delete \
         that row)"
    )]
    Corrupt {
        store: String,
        what: String,
        detail: String,
    },
    #[error("the store: {0}")]
    Sqlite(rusqlite::Error),
    #[error("the store: {0}")]
    Json(serde_json::Error),
    #[error("the store: {0}")]
    Record(RecordError),
}

// By hand rather than `#[from]`: the message already carries the cause, and `#[from]` would
// make it a `source` too, so `{:#}` (anyhow) would print it twice.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Json(e)
    }
}

impl From<RecordError> for StoreError {
    fn from(e: RecordError) -> Self {
        StoreError::Record(e)
    }
}

impl StoreError {
    /// Whether the error is about what the user asked for or handed in (exit code 2), rather
    /// than a failure of the store itself.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            StoreError::NotADatabase { .. }
                | StoreError::NotAStore { .. }
                | StoreError::TooNew { .. }
                | StoreError::NotFound(_)
                | StoreError::InvalidKey(_)
                | StoreError::Ambiguous { .. }
                | StoreError::Invalid(_)
                | StoreError::Record(_)
        )
    }
}

/// The store: one SQLite connection.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

impl Store {
    /// Opens the store at `path`, creating it (and its parent directories) if it does not
    /// exist, and upgrading it to [`SCHEMA_VERSION`] if it is older. A file that is not an
    /// SQLite database, another program's database and a store of a newer schema are refused
    /// before anything is written to them.
    ///
    /// Several stores of one file may be open in one process (the validator daemon keeps a
    /// few): nothing here opens the file except through SQLite, whose locks are shared among
    /// its connections.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_at_version(path, SCHEMA_VERSION)
    }

    /// A store in memory, at [`SCHEMA_VERSION`] (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let store = Store {
            conn: Connection::open_in_memory()?,
            path: None,
        };
        store.prepare(SCHEMA_VERSION)
    }

    /// [`Store::open`], migrating only up to `version`: for tests of the migrations. The
    /// write methods of [`Ledger`] need [`SCHEMA_VERSION`].
    #[doc(hidden)]
    pub fn open_at_version(path: &Path, version: u32) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| StoreError::Io {
                path: parent.to_path_buf(),
                error,
            })?;
        }
        // No header check of our own before SQLite opens the file: closing a handle of ours
        // would drop every POSIX lock this process holds on it, those of the store's other
        // open connections included (SQLite counts its locks per file and would not take them
        // again). SQLite reads the header itself and answers NOTADB, which `probe` turns into
        // the same refusal, before anything is written.
        // Not SQLITE_OPEN_URI: a --db of `file:x?mode=memory` is a file name, nothing more.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|error| StoreError::Open {
            path: path.to_path_buf(),
            error,
        })?;
        let store = Store {
            conn,
            path: Some(path.to_path_buf()),
        };
        store.prepare(version)
    }

    /// The file, or None in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version of the store (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = user_version(&self.conn)?;
        u32::try_from(v).map_err(|_| StoreError::NotAStore {
            path: self.display_path(),
            why: format!("its schema version is {v}"),
        })
    }

    /// Reads, outside a transaction: each query sees the store as of its own start.
    pub fn read(&self) -> Ledger<'_> {
        Ledger {
            conn: &self.conn,
            path: self.path.as_deref(),
        }
    }

    /// Runs `f` in one IMMEDIATE transaction: all of it lands, or none of it (an error from
    /// `f`, a panic or a killed process leave the store as it was).
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Ledger<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&Ledger {
            conn: &tx,
            path: self.path.as_deref(),
        })?;
        tx.commit()?;
        Ok(value)
    }

    fn display_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(":memory:"))
    }

    /// Checks what the file is (reading only), then sets the connection up and migrates.
    fn prepare(mut self, version: u32) -> Result<Store, StoreError> {
        self.probe()?;
        self.configure()?;
        self.migrate(version)?;
        Ok(self)
    }

    /// Refuses another program's database and a newer store. Reads only: nothing is written
    /// to the file before this passes.
    fn probe(&self) -> Result<(), StoreError> {
        let path = self.display_path();
        let open_error = |error: rusqlite::Error| {
            if error.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
                StoreError::NotADatabase { path: path.clone() }
            } else {
                StoreError::Open {
                    path: path.clone(),
                    error,
                }
            }
        };
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let version = user_version(&self.conn).map_err(open_error)?;
        let app_id: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(open_error)?;
        let objects: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .map_err(open_error)?;
        let ours = app_id == i64::from(APPLICATION_ID);
        if app_id != 0 && !ours {
            return Err(StoreError::NotAStore {
                path,
                why: format!("its application id is {app_id:#x}"),
            });
        }
        if version == 0 && objects > 0 {
            return Err(StoreError::NotAStore {
                path,
                why: format!("it holds {objects} tables and indexes of another program"),
            });
        }
        if version != 0 && !ours {
            return Err(StoreError::NotAStore {
                path,
                why: format!("its schema version is {version} but it is not marked as crusades'"),
            });
        }
        match u32::try_from(version) {
            Ok(found) if found > SCHEMA_VERSION => Err(StoreError::TooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            }),
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::NotAStore {
                path,
                why: format!("its schema version is {version}"),
            }),
        }
    }

    fn configure(&self) -> Result<(), StoreError> {
        let path = self.display_path();
        let open_error = |error| StoreError::Open {
            path: path.clone(),
            error,
        };
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        // WAL: readers do not block the writer, and a commit is one append to the log. Where
        // the file system cannot do WAL (SQLite answers with the mode it kept), the rollback
        // journal is just as crash-safe, so that is not an error. In memory it is `memory`.
        let _mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_error)?;
        // FULL: the log is synced at every commit, so a commit survives a power cut, not only
        // a killed process (for which NORMAL would do). A store takes a few writes a minute.
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(open_error)?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(open_error)?;
        // The file may come from anyone: its schema's views and triggers run no functions
        // with side effects.
        self.conn
            .pragma_update(None, "trusted_schema", false)
            .map_err(open_error)?;
        Ok(())
    }

    /// Applies the migrations up to `target`, each in its own IMMEDIATE transaction with its
    /// `user_version` bump. The version is read again inside each one: another process may
    /// have migrated the store meanwhile.
    fn migrate(&mut self, target: u32) -> Result<(), StoreError> {
        let path = self.display_path();
        let current = self.schema_version()?;
        if current >= target {
            return Ok(());
        }
        for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= target) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = user_version(&tx)?;
            if now > i64::from(SCHEMA_VERSION) {
                return Err(StoreError::TooNew {
                    path,
                    found: u32::try_from(now).unwrap_or(u32::MAX),
                    supported: SCHEMA_VERSION,
                });
            }
            if now >= i64::from(version) {
                continue;
            }
            let migration_error = |error| StoreError::Migration {
                path: path.clone(),
                version,
                error,
            };
            tx.execute_batch(sql).map_err(migration_error)?;
            tx.pragma_update(None, "user_version", version)
                .map_err(migration_error)?;
            tx.commit().map_err(migration_error)?;
        }
        Ok(())
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// The record as the store keeps it: JSON with every object's keys sorted and no whitespace,
/// so the same record always gives the same text (and the same sha256, which finds
/// duplicates).
pub fn canonical_json(record: &Record) -> Result<String, StoreError> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    Ok(serde_json::to_string(&sorted(serde_json::to_value(
        record,
    )?))?)
}

/// What the record does not say about an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvaluationMeta {
    /// The miner's hotkey (from the chain commitment); None for a local bench.
    pub hotkey: Option<String>,
    /// None: the record's `workload.uid`, if it fits a u16.
    pub uid: Option<u16>,
    /// None: the local block clock at the record's `created_at`.
    pub block: Option<u64>,
    /// The validator that ran it (its hotkey); None for a local bench.
    pub validator: Option<String>,
}

/// What [`Ledger::insert_evaluation`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inserted {
    /// The evaluation's id (the existing one for a duplicate).
    pub id: i64,
    /// The same record was already stored: nothing changed.
    pub duplicate: bool,
    /// Its submission was not in the store before.
    pub new_submission: bool,
    /// The block the evaluation is stored under.
    pub block: u64,
}

/// One evaluation's indexed columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRow {
    pub id: i64,
    pub sha256: String,
    pub hotkey: Option<String>,
    pub uid: Option<u16>,
    pub competition: String,
    pub workload_hash: String,
    pub preset: String,
    pub device: String,
    pub verdict: Verdict,
    pub error_code: Option<String>,
    /// The record's score (median MFU); None when no timed run completed.
    pub score: Option<f64>,
    /// The GPU's name, or the CPU's model ×logical CPUs for a CPU run.
    pub hardware: String,
    pub harness_version: String,
    pub created_at: String,
    pub block: u64,
    pub validator: Option<String>,
}

/// One evaluation: its columns and its full record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvaluation {
    pub row: EvaluationRow,
    pub record: Record,
}

/// Which evaluations [`Ledger::evaluations`] lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvaluationFilter {
    /// Hex digits the submission's sha256 starts with (any case).
    pub sha256_prefix: Option<String>,
    pub competition: Option<String>,
    pub verdict: Option<Verdict>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// One submission, over its evaluations (in one competition, or all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionRow {
    pub sha256: String,
    pub hotkey: Option<String>,
    pub uid: Option<u16>,
    pub bytes: u64,
    pub first_seen_at: String,
    pub first_seen_block: u64,
    pub evaluations: u64,
    pub accepted: u64,
    /// The highest score of its accepted evaluations.
    pub best_score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompetitionRow {
    pub competition: String,
    pub evaluations: u64,
    /// `created_at` of its newest evaluation.
    pub latest_at: String,
}

/// The store's reads and writes over one connection: a transaction inside [`Store::write`],
/// the bare connection from [`Store::read`].
pub struct Ledger<'c> {
    pub(crate) conn: &'c Connection,
    path: Option<&'c Path>,
}

impl fmt::Debug for Ledger<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("in_transaction", &!self.conn.is_autocommit())
            .finish()
    }
}

/// The columns of an [`EvaluationRow`], in `eval_row`'s order.
const EVAL_COLUMNS: &str = "id, sha256, hotkey, uid, competition, workload_hash, preset, device, \
     verdict, error_code, score, hardware, harness_version, created_at, block, validator";

/// The columns of a [`WeightsEntry`], in `weights_entry`'s order.
pub(crate) const WEIGHTS_COLUMNS: &str =
    "id, competition, block, at, uids, weights, leader_sha256, threshold, source";

/// Newest first.
pub(crate) const NEWEST_FIRST: &str = "created_unix DESC, created_at DESC, id DESC";

impl Ledger<'_> {
    // ---------------------------------------------------------------- writes

    /// Stores one evaluation: upserts its submission (first seen = the earliest evaluation by
    /// block, then by time; hotkey and uid filled where they were unknown) and inserts the
    /// evaluation with its record. The same record stored twice (identical canonical JSON) is
    /// a duplicate: the existing id comes back with `duplicate` and nothing changes.
    pub fn insert_evaluation(
        &self,
        record: &Record,
        meta: &EvaluationMeta,
    ) -> Result<Inserted, StoreError> {
        self.require_transaction()?;
        let sha256 = &record.submission.sha256;
        if !is_sha256(sha256) {
            return Err(StoreError::Invalid(format!(
                "the record's submission sha256 {sha256:?} is not 64 lowercase hex digits"
            )));
        }
        let json = canonical_json(record)?;
        // Every stored record must read back: a NaN or an infinity is written as null, which
        // the record's types refuse.
        Record::from_json(json.as_bytes()).map_err(|e| {
            StoreError::Invalid(format!(
                "the record of {sha256} would not read back ({e}); a NaN or infinite number in \
                 it is written as null"
            ))
        })?;
        let digest = hex::encode(Sha256::digest(json.as_bytes()));
        if let Some((id, block)) = self
            .conn
            .query_row(
                "SELECT id, block FROM evaluations WHERE record_sha256 = ?1",
                [&digest],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?
        {
            return Ok(Inserted {
                id,
                duplicate: true,
                new_submission: false,
                block: u64::try_from(block).map_err(|_| {
                    self.corrupt(format!("evaluation {id}"), format!("its block is {block}"))
                })?,
            });
        }

        let created_unix = parse_rfc3339(&record.created_at);
        let block = match (meta.block, created_unix) {
            (Some(block), _) => block,
            (None, Some(secs)) => block_at(secs),
            (None, None) => {
                return Err(StoreError::Invalid(format!(
                    "the record's created_at {:?} is not an RFC 3339 time, and no block was given",
                    record.created_at
                )))
            }
        };
        let block_i64 = to_i64(block, "block")?;
        let uid = meta.uid.or_else(|| u16::try_from(record.workload.uid).ok());
        let bytes = to_i64(record.submission.bytes, "submission bytes")?;
        if let Some(score) = record.score.as_ref().map(|s| s.mfu) {
            not_nan(score, "score")?;
        }

        let existing: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT first_seen_at, first_seen_block FROM submissions WHERE sha256 = ?1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let new_submission = existing.is_none();
        match existing {
            None => {
                self.conn.execute(
                    "INSERT INTO submissions \
                     (sha256, hotkey, uid, bytes, first_seen_at, first_seen_block) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        sha256,
                        meta.hotkey,
                        uid,
                        bytes,
                        record.created_at,
                        block_i64
                    ],
                )?;
            }
            Some((seen_at, seen_block)) => {
                let earlier = first_seen_key(block_i64, &record.created_at)
                    < first_seen_key(seen_block, &seen_at);
                self.conn.execute(
                    "UPDATE submissions SET hotkey = coalesce(hotkey, ?2), uid = coalesce(uid, ?3), \
                     first_seen_at = CASE WHEN ?4 THEN ?5 ELSE first_seen_at END, \
                     first_seen_block = CASE WHEN ?4 THEN ?6 ELSE first_seen_block END \
                     WHERE sha256 = ?1",
                    params![sha256, meta.hotkey, uid, earlier, record.created_at, block_i64],
                )?;
            }
        }

        self.conn.execute(
            "INSERT INTO evaluations (sha256, hotkey, uid, competition, workload_hash, preset, \
             device, verdict, error_code, score, hardware, harness_version, created_at, \
             created_unix, block, validator, record_sha256, record) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                sha256,
                meta.hotkey,
                uid,
                competition_of(record),
                record.workload.hash,
                record.workload.preset,
                record.workload.device,
                verdict_str(record.verdict),
                record.error_code,
                record.score.as_ref().map(|s| s.mfu),
                hardware_of(record),
                record.harness.version,
                record.created_at,
                created_unix,
                block_i64,
                meta.validator,
                digest,
                json,
            ],
        )?;
        Ok(Inserted {
            id: self.conn.last_insert_rowid(),
            duplicate: false,
            new_submission,
            block,
        })
    }

    /// Sets the leader of `competition` (a stored submission).
    pub fn put_leader(&self, competition: &str, state: &LeaderState) -> Result<(), StoreError> {
        self.require_transaction()?;
        not_nan(state.score, "the leader's score")?;
        not_nan(state.threshold, "the leader's threshold")?;
        if !self.has_submission(&state.sha256)? {
            return Err(StoreError::UnknownSubmission(state.sha256.clone()));
        }
        self.conn.execute(
            "INSERT INTO leaders (competition, sha256, score, threshold, crowned_block, crowned_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (competition) DO UPDATE SET sha256 = excluded.sha256, \
             score = excluded.score, threshold = excluded.threshold, \
             crowned_block = excluded.crowned_block, crowned_at = excluded.crowned_at",
            params![
                competition,
                state.sha256,
                state.score,
                state.threshold,
                to_i64(state.crowned_block, "crowned_block")?,
                state.crowned_at,
            ],
        )?;
        Ok(())
    }

    /// `competition` has no leader (any more).
    pub fn clear_leader(&self, competition: &str) -> Result<(), StoreError> {
        self.require_transaction()?;
        self.conn
            .execute("DELETE FROM leaders WHERE competition = ?1", [competition])?;
        Ok(())
    }

    pub fn append_leader_change(&self, change: &LeaderChange) -> Result<(), StoreError> {
        self.require_transaction()?;
        not_nan(change.score, "the leader change's score")?;
        not_nan(change.threshold, "the leader change's threshold")?;
        if let Some(previous) = change.previous_score {
            not_nan(previous, "the leader change's previous score")?;
        }
        self.conn.execute(
            "INSERT INTO leader_changes (competition, block, at, sha256, score, previous_sha256, \
             previous_score, threshold) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                change.competition,
                to_i64(change.block, "block")?,
                change.at,
                change.sha256,
                change.score,
                change.previous_sha256,
                change.previous_score,
                change.threshold,
            ],
        )?;
        Ok(())
    }

    /// Appends a weight vector; returns its id (`entry.id` is ignored).
    pub fn append_weights(&self, entry: &WeightsEntry) -> Result<i64, StoreError> {
        self.require_transaction()?;
        if entry.uids.len() != entry.weights.len() {
            return Err(StoreError::Invalid(format!(
                "a weight vector of {} uids and {} weights",
                entry.uids.len(),
                entry.weights.len()
            )));
        }
        if let Some(w) = entry.weights.iter().find(|w| !w.is_finite()) {
            return Err(StoreError::Invalid(format!("a weight of {w}")));
        }
        not_nan(entry.threshold, "the weights' threshold")?;
        self.conn.execute(
            "INSERT INTO weights (competition, block, at, uids, weights, leader_sha256, threshold, \
             source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                entry.competition,
                to_i64(entry.block, "block")?,
                entry.at,
                serde_json::to_string(&entry.uids)?,
                serde_json::to_string(&entry.weights)?,
                entry.leader_sha256,
                entry.threshold,
                entry.source,
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    // ---------------------------------------------------------------- reads

    /// The evaluations `filter` selects, newest first (by `created_at`, then id).
    pub fn evaluations(&self, filter: &EvaluationFilter) -> Result<Vec<EvaluationRow>, StoreError> {
        let mut clauses: Vec<&str> = Vec::new();
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        if let Some(prefix) = &filter.sha256_prefix {
            let prefix = prefix.trim().to_ascii_lowercase();
            if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StoreError::InvalidKey(prefix));
            }
            clauses.push("sha256 GLOB ?");
            args.push(Box::new(format!("{prefix}*")));
        }
        if let Some(competition) = &filter.competition {
            clauses.push("competition = ?");
            args.push(Box::new(competition.clone()));
        }
        if let Some(verdict) = filter.verdict {
            clauses.push("verdict = ?");
            args.push(Box::new(verdict_str(verdict)));
        }
        let limit = filter
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        args.push(Box::new(limit));
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {EVAL_COLUMNS} FROM evaluations {filter_sql} ORDER BY {NEWEST_FIRST} LIMIT ?"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(self.eval_row(row)?);
        }
        Ok(out)
    }

    /// One evaluation with its record.
    pub fn evaluation(&self, id: i64) -> Result<Option<StoredEvaluation>, StoreError> {
        let sql =
            format!("SELECT {EVAL_COLUMNS}, record_sha256, record FROM evaluations WHERE id = ?1");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let eval = self.eval_row(row)?;
        let what = || format!("evaluation {id}");
        let digest: String = self.column(row, 16, "record_sha256", &what)?;
        let json: String = self.column(row, 17, "record", &what)?;
        if hex::encode(Sha256::digest(json.as_bytes())) != digest {
            return Err(self.corrupt(
                what(),
                "its record is not the one stored (its sha256 differs from record_sha256)".into(),
            ));
        }
        let record = Record::from_json(json.as_bytes())
            .map_err(|e| self.corrupt(what(), format!("its record does not read: {e}")))?;
        Ok(Some(StoredEvaluation { row: eval, record }))
    }

    /// KEY is a decimal evaluation id, or a sha256 prefix (at least 4 hex digits, any case) of
    /// one submission → its evaluations, newest first. A key that is both an id and a prefix,
    /// or a prefix of several submissions, is [`StoreError::Ambiguous`] (naming them).
    pub fn resolve(&self, key: &str) -> Result<Vec<EvaluationRow>, StoreError> {
        let key = key.trim();
        let digits = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit());
        let prefix = key.to_ascii_lowercase();
        let is_prefix =
            (4..=64).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_hexdigit());
        if !digits && !is_prefix {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        let by_id = match key.parse::<i64>() {
            Ok(id) if digits => self.evaluation_row(id)?,
            _ => None,
        };
        let shas: Vec<String> = if is_prefix {
            let mut stmt = self.conn.prepare(
                "SELECT sha256 FROM submissions WHERE sha256 GLOB ?1 ORDER BY sha256 LIMIT 11",
            )?;
            let rows = stmt.query_map([format!("{prefix}*")], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        match (by_id, shas.as_slice()) {
            (Some(row), []) => Ok(vec![row]),
            (None, []) => Err(StoreError::NotFound(key.to_string())),
            (None, [sha]) => self.evaluations(&EvaluationFilter {
                sha256_prefix: Some(sha.clone()),
                ..EvaluationFilter::default()
            }),
            (by_id, shas) => {
                let mut matches: Vec<String> = by_id
                    .map(|r| format!("evaluation {}", r.id))
                    .into_iter()
                    .chain(shas.iter().take(10).map(|s| format!("submission {s}")))
                    .collect();
                if shas.len() > 10 {
                    matches.push("…".into());
                }
                Err(StoreError::Ambiguous {
                    key: key.to_string(),
                    matches,
                })
            }
        }
    }

    /// The submissions with at least one evaluation (in `competition`, or in any), counted
    /// over those evaluations: the best score first, then the first seen.
    pub fn submissions(&self, competition: Option<&str>) -> Result<Vec<SubmissionRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.sha256, s.hotkey, s.uid, s.bytes, s.first_seen_at, s.first_seen_block, \
             count(e.id), \
             coalesce(sum(e.verdict = 'accepted'), 0), \
             max(CASE WHEN e.verdict = 'accepted' THEN e.score END) AS best \
             FROM submissions s JOIN evaluations e ON e.sha256 = s.sha256 \
             WHERE ?1 IS NULL OR e.competition = ?1 \
             GROUP BY s.sha256 \
             ORDER BY best DESC NULLS LAST, s.first_seen_block, s.first_seen_at, s.sha256",
        )?;
        let mut rows = stmt.query([competition])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let sha256: String = self.column(row, 0, "sha256", &|| "a submission".into())?;
            let what = || format!("submission {sha256}");
            out.push(SubmissionRow {
                hotkey: self.column(row, 1, "hotkey", &what)?,
                uid: self.uid(row, 2, &what)?,
                bytes: self.unsigned(row, 3, "bytes", &what)?,
                first_seen_at: self.column(row, 4, "first_seen_at", &what)?,
                first_seen_block: self.unsigned(row, 5, "first_seen_block", &what)?,
                evaluations: self.unsigned(row, 6, "evaluations", &what)?,
                accepted: self.unsigned(row, 7, "accepted", &what)?,
                best_score: self.column(row, 8, "best score", &what)?,
                sha256,
            });
        }
        Ok(out)
    }

    /// Per submission with at least one evaluation in `competition`: the leaderboard's input
    /// (its accepted scores oldest first, its evaluations in that competition), in the order
    /// the submissions were first seen. First seen is over all competitions.
    pub fn scores(&self, competition: &str) -> Result<Vec<SubmissionScores>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.sha256, s.hotkey, s.uid, s.first_seen_block, s.first_seen_at, e.id, \
             e.verdict, e.score \
             FROM evaluations e JOIN submissions s ON s.sha256 = e.sha256 \
             WHERE e.competition = ?1 \
             ORDER BY s.first_seen_block, s.first_seen_at, s.sha256, \
             e.created_unix, e.created_at, e.id",
        )?;
        let mut rows = stmt.query([competition])?;
        let mut out: Vec<SubmissionScores> = Vec::new();
        while let Some(row) = rows.next()? {
            let sha256: String = self.column(row, 0, "sha256", &|| "a submission".into())?;
            let id: i64 = self.column(row, 5, "id", &|| format!("an evaluation of {sha256}"))?;
            let what = || format!("evaluation {id}");
            let verdict = self.verdict(row, 6, &what)?;
            let score: Option<f64> = self.column(row, 7, "score", &what)?;
            let entry = match out.last_mut() {
                Some(last) if last.sha256 == sha256 => last,
                _ => {
                    let what = || format!("submission {sha256}");
                    out.push(SubmissionScores {
                        hotkey: self.column(row, 1, "hotkey", &what)?,
                        uid: self.uid(row, 2, &what)?,
                        first_seen_block: self.unsigned(row, 3, "first_seen_block", &what)?,
                        first_seen_at: self.column(row, 4, "first_seen_at", &what)?,
                        accepted: Vec::new(),
                        evaluations: 0,
                        sha256: sha256.clone(),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            entry.evaluations += 1;
            if let (Verdict::Accepted, Some(score)) = (verdict, score) {
                entry.accepted.push(score);
            }
        }
        Ok(out)
    }

    /// Every competition with an evaluation, the one evaluated last first.
    pub fn competitions(&self) -> Result<Vec<CompetitionRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT c.competition, c.n, l.created_at FROM \
             (SELECT competition, count(*) AS n, \
              (SELECT id FROM evaluations x WHERE x.competition = e.competition \
               ORDER BY {NEWEST_FIRST} LIMIT 1) AS latest_id \
              FROM evaluations e GROUP BY competition) c \
             JOIN evaluations l ON l.id = c.latest_id \
             ORDER BY l.created_unix DESC, l.created_at DESC, l.id DESC"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let competition: String =
                self.column(row, 0, "competition", &|| "a competition".into())?;
            let what = || format!("competition {competition}");
            out.push(CompetitionRow {
                evaluations: self.unsigned(row, 1, "evaluations", &what)?,
                latest_at: self.column(row, 2, "latest_at", &what)?,
                competition,
            });
        }
        Ok(out)
    }

    pub fn leader(&self, competition: &str) -> Result<Option<LeaderState>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT sha256, score, threshold, crowned_block, crowned_at FROM leaders \
             WHERE competition = ?1",
        )?;
        let mut rows = stmt.query([competition])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let what = || format!("the leader of {competition}");
        Ok(Some(LeaderState {
            sha256: self.column(row, 0, "sha256", &what)?,
            score: self.column(row, 1, "score", &what)?,
            threshold: self.column(row, 2, "threshold", &what)?,
            crowned_block: self.unsigned(row, 3, "crowned_block", &what)?,
            crowned_at: self.column(row, 4, "crowned_at", &what)?,
        }))
    }

    /// The leader changes of `competition`, oldest first.
    pub fn leader_changes(&self, competition: &str) -> Result<Vec<LeaderChange>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, competition, block, at, sha256, score, previous_sha256, previous_score, \
             threshold FROM leader_changes WHERE competition = ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query([competition])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let id: i64 = self.column(row, 0, "id", &|| "a leader change".into())?;
            let what = || format!("leader change {id}");
            out.push(LeaderChange {
                competition: self.column(row, 1, "competition", &what)?,
                block: self.unsigned(row, 2, "block", &what)?,
                at: self.column(row, 3, "at", &what)?,
                sha256: self.column(row, 4, "sha256", &what)?,
                score: self.column(row, 5, "score", &what)?,
                previous_sha256: self.column(row, 6, "previous_sha256", &what)?,
                previous_score: self.column(row, 7, "previous_score", &what)?,
                threshold: self.column(row, 8, "threshold", &what)?,
            });
        }
        Ok(out)
    }

    /// The last `limit` weight vectors (of `competition`, or of all), newest first.
    pub fn weights_history(
        &self,
        competition: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WeightsEntry>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {WEIGHTS_COLUMNS} FROM weights WHERE ?1 IS NULL OR competition = ?1 \
             ORDER BY id DESC LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![competition, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(self.weights_entry(row)?);
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- helpers

    pub(crate) fn require_transaction(&self) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            Err(StoreError::NotInTransaction)
        } else {
            Ok(())
        }
    }

    fn has_submission(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM submissions WHERE sha256 = ?1",
                [sha256],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn evaluation_row(&self, id: i64) -> Result<Option<EvaluationRow>, StoreError> {
        let sql = format!("SELECT {EVAL_COLUMNS} FROM evaluations WHERE id = ?1");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some(self.eval_row(row)?)),
            None => Ok(None),
        }
    }

    /// An [`EvaluationRow`] from a row selected with [`EVAL_COLUMNS`].
    fn eval_row(&self, row: &Row<'_>) -> Result<EvaluationRow, StoreError> {
        let id: i64 = self.column(row, 0, "id", &|| "an evaluation".into())?;
        let what = || format!("evaluation {id}");
        Ok(EvaluationRow {
            id,
            sha256: self.column(row, 1, "sha256", &what)?,
            hotkey: self.column(row, 2, "hotkey", &what)?,
            uid: self.uid(row, 3, &what)?,
            competition: self.column(row, 4, "competition", &what)?,
            workload_hash: self.column(row, 5, "workload_hash", &what)?,
            preset: self.column(row, 6, "preset", &what)?,
            device: self.column(row, 7, "device", &what)?,
            verdict: self.verdict(row, 8, &what)?,
            error_code: self.column(row, 9, "error_code", &what)?,
            score: self.column(row, 10, "score", &what)?,
            hardware: self.column(row, 11, "hardware", &what)?,
            harness_version: self.column(row, 12, "harness_version", &what)?,
            created_at: self.column(row, 13, "created_at", &what)?,
            block: self.unsigned(row, 14, "block", &what)?,
            validator: self.column(row, 15, "validator", &what)?,
        })
    }

    /// A [`WeightsEntry`] from a row selected with [`WEIGHTS_COLUMNS`].
    pub(crate) fn weights_entry(&self, row: &Row<'_>) -> Result<WeightsEntry, StoreError> {
        let id: i64 = self.column(row, 0, "id", &|| "a weights entry".into())?;
        let what = || format!("weights entry {id}");
        let uids: String = self.column(row, 4, "uids", &what)?;
        let weights: String = self.column(row, 5, "weights", &what)?;
        Ok(WeightsEntry {
            id: Some(id),
            competition: self.column(row, 1, "competition", &what)?,
            block: self.unsigned(row, 2, "block", &what)?,
            at: self.column(row, 3, "at", &what)?,
            uids: serde_json::from_str(&uids)
                .map_err(|e| self.corrupt(what(), format!("its uids do not read: {e}")))?,
            weights: serde_json::from_str(&weights)
                .map_err(|e| self.corrupt(what(), format!("its weights do not read: {e}")))?,
            leader_sha256: self.column(row, 6, "leader_sha256", &what)?,
            threshold: self.column(row, 7, "threshold", &what)?,
            source: self.column(row, 8, "source", &what)?,
        })
    }

    pub(crate) fn column<T: FromSql>(
        &self,
        row: &Row<'_>,
        index: usize,
        name: &str,
        what: &dyn Fn() -> String,
    ) -> Result<T, StoreError> {
        row.get(index)
            .map_err(|e| self.corrupt(what(), format!("its {name} does not read: {e}")))
    }

    pub(crate) fn unsigned(
        &self,
        row: &Row<'_>,
        index: usize,
        name: &str,
        what: &dyn Fn() -> String,
    ) -> Result<u64, StoreError> {
        let v: i64 = self.column(row, index, name, what)?;
        u64::try_from(v).map_err(|_| self.corrupt(what(), format!("its {name} is {v}")))
    }

    pub(crate) fn uid(
        &self,
        row: &Row<'_>,
        index: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Option<u16>, StoreError> {
        let v: Option<i64> = self.column(row, index, "uid", what)?;
        v.map(|v| u16::try_from(v).map_err(|_| self.corrupt(what(), format!("its uid is {v}"))))
            .transpose()
    }

    fn verdict(
        &self,
        row: &Row<'_>,
        index: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Verdict, StoreError> {
        let v: String = self.column(row, index, "verdict", what)?;
        match v.as_str() {
            "accepted" => Ok(Verdict::Accepted),
            "rejected" => Ok(Verdict::Rejected),
            _ => Err(self.corrupt(what(), format!("its verdict is {v:?}"))),
        }
    }

    pub(crate) fn corrupt(&self, what: String, detail: String) -> StoreError {
        StoreError::Corrupt {
            store: self
                .path
                .map_or_else(|| "the in-memory store".into(), |p| p.display().to_string()),
            what,
            detail,
        }
    }
}

/// Earliest first: by block, then by time (a time that does not parse last), then by text.
fn first_seen_key(block: i64, created_at: &str) -> (i64, i64, &str) {
    (
        block,
        parse_rfc3339(created_at).unwrap_or(i64::MAX),
        created_at,
    )
}

/// "AMD EPYC 7B13 ×2" for a CPU run, the GPU's name for a CUDA run.
pub fn hardware_of(record: &Record) -> String {
    match &record.hardware.gpu {
        Some(gpu) if record.workload.device.starts_with("cuda") => gpu.name.clone(),
        _ => format!(
            "{} ×{}",
            record.hardware.cpu.model, record.hardware.cpu.logical_cpus
        ),
    }
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Accepted => "accepted",
        Verdict::Rejected => "rejected",
    }
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn to_i64(v: u64, name: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("a {name} of {v} (too large)")))
}

fn not_nan(v: f64, name: &str) -> Result<(), StoreError> {
    if v.is_nan() {
        Err(StoreError::Invalid(format!("{name} is NaN")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one() {
        for (i, (v, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*v as usize, i + 1);
            assert!(!sql.trim().is_empty());
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut record = crate::testing::sample_record(
            &"ab".repeat(32),
            0.4,
            Verdict::Accepted,
            "2026-11-25T12:00:00Z",
        );
        record.workload.config =
            serde_json::json!({"z": {"b": 1, "a": [{"y": 1, "x": 2}]}, "a": 0});
        let json = canonical_json(&record).unwrap();
        assert!(json.contains(r#""config":{"a":0,"z":{"a":[{"x":2,"y":1}],"b":1}}"#));
        assert!(json.find("\"created_at\"") < json.find("\"schema\""));
        let back = Record::from_json(json.as_bytes()).unwrap();
        assert_eq!(back, record);
        assert_eq!(canonical_json(&back).unwrap(), json);
    }

    #[test]
    fn hardware_names_the_device_that_ran() {
        let mut record = crate::testing::sample_record(
            &"ab".repeat(32),
            0.4,
            Verdict::Accepted,
            "2026-11-25T12:00:00Z",
        );
        assert_eq!(hardware_of(&record), "AMD EPYC 7B13 ×2");
        record.hardware.gpu = Some(crate::testing::gpu("NVIDIA H100 80GB HBM3"));
        assert_eq!(hardware_of(&record), "AMD EPYC 7B13 ×2");
        record.workload.device = "cuda:0".into();
        assert_eq!(hardware_of(&record), "NVIDIA H100 80GB HBM3");
    }
}
