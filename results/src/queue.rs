//! The validator daemon's state in the store: every commitment it has read from chain and
//! where it stands (the queue), and a few named values (the last block it polled).
//!
//! - A restart after a crash neither evaluates finished work again nor skips pending work:
//!   a commitment is a row from the moment it is seen, and each step that moves it (done,
//!   deferred, failed) is one write. A crash between the evaluation and that write leaves it
//!   pending; the daemon then finds the stored evaluation with
//!   [`Ledger::evaluation_of_submission`] instead of running it again.
//! - A commitment is identified by (netuid, hotkey, raw bytes): seeing it again on every poll
//!   changes nothing. Its bytes are kept exactly, garbage included, since anyone can write
//!   them.
//! - `invalid`, `done` and `failed` are final: only a `pending` commitment moves, and a move
//!   of any other is refused rather than silently undoing a verdict.
//! - Nothing read from the file is trusted: a malformed row is [`StoreError::Corrupt`], naming
//!   it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize, Serializer};

use crate::store::{is_sha256, to_i64, Ledger, StoreError, NEWEST_FIRST, WEIGHTS_COLUMNS};
use crate::time::rfc3339;
use crate::weights::WeightsEntry;

/// Where a commitment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitmentStatus {
    /// It did not parse; never fetched.
    Invalid,
    /// To fetch and evaluate (now, or after `next_attempt_unix` when deferred).
    Pending,
    /// Evaluated, or linked to an existing evaluation of the same submission.
    Done,
    /// Given up on: a fatal error (a hash mismatch, an unfetchable URL, …).
    Failed,
}

impl CommitmentStatus {
    pub const ALL: [CommitmentStatus; 4] = [
        CommitmentStatus::Invalid,
        CommitmentStatus::Pending,
        CommitmentStatus::Done,
        CommitmentStatus::Failed,
    ];

    /// The name the store and `--json` use.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitmentStatus::Invalid => "invalid",
            CommitmentStatus::Pending => "pending",
            CommitmentStatus::Done => "done",
            CommitmentStatus::Failed => "failed",
        }
    }

    /// Whether a commitment in this status never moves again.
    pub fn is_final(self) -> bool {
        self != CommitmentStatus::Pending
    }
}

impl fmt::Display for CommitmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a commitment status: give invalid, pending, done or failed")]
pub struct UnknownStatus(pub String);

impl FromStr for CommitmentStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommitmentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// A commitment as read from chain, for [`Ledger::observe_commitment`]. The caller parses
/// it (the parser belongs to the chain client, not to the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCommitment<'a> {
    pub netuid: u16,
    /// The miner's hotkey (ss58).
    pub hotkey: &'a str,
    /// Its uid now, if known.
    pub uid: Option<u16>,
    /// The block the commitment was made at, or the block it was first seen at.
    pub block: u64,
    /// The committed bytes, exactly.
    pub raw: &'a [u8],
    /// Ok((sha256 prefix, url)) when it parsed, Err(why not) when it did not.
    pub parsed: Result<(&'a str, &'a str), &'a str>,
}

/// What [`Ledger::observe_commitment`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub id: i64,
    /// It was not in the store before.
    pub new: bool,
    /// Its status now (a seen one keeps its own).
    pub status: CommitmentStatus,
}

/// One commitment: every column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentRow {
    pub id: i64,
    pub netuid: u16,
    pub hotkey: String,
    pub uid: Option<u16>,
    pub block: u64,
    /// The committed bytes, exactly; [`CommitmentRow::raw_display`] for people.
    pub raw: Vec<u8>,
    pub seen_at: String,
    pub status: CommitmentStatus,
    /// Why it is invalid or failed, or the last transient error.
    pub reason: Option<String>,
    /// From the parsed commitment; None when it is invalid.
    pub sha256_prefix: Option<String>,
    pub url: Option<String>,
    /// The full sha256 of the fetched submission (set when done).
    pub sha256: Option<String>,
    pub evaluation_id: Option<i64>,
    /// Tries that ended: deferred, failed or done.
    pub attempts: u64,
    /// When a deferred commitment is due again (unix seconds).
    pub next_attempt_unix: Option<i64>,
    pub updated_at: String,
}

impl CommitmentRow {
    /// The committed bytes as text: as they are when they are printable UTF-8, escaped
    /// (`\xff`, `\u{0}`, `\\`) when not. For people; `raw` is the exact value.
    pub fn raw_display(&self) -> Cow<'_, str> {
        display_bytes(&self.raw)
    }
}

/// `--json` gives the bytes twice: as text to read (`raw`) and as hex to compare (`raw_hex`),
/// since JSON cannot carry arbitrary bytes as a string.
impl Serialize for CommitmentRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            id: i64,
            netuid: u16,
            hotkey: &'a str,
            uid: Option<u16>,
            block: u64,
            raw: Cow<'a, str>,
            raw_hex: String,
            seen_at: &'a str,
            status: CommitmentStatus,
            reason: Option<&'a str>,
            sha256_prefix: Option<&'a str>,
            url: Option<&'a str>,
            sha256: Option<&'a str>,
            evaluation_id: Option<i64>,
            attempts: u64,
            next_attempt_unix: Option<i64>,
            updated_at: &'a str,
        }
        Out {
            id: self.id,
            netuid: self.netuid,
            hotkey: &self.hotkey,
            uid: self.uid,
            block: self.block,
            raw: self.raw_display(),
            raw_hex: hex::encode(&self.raw),
            seen_at: &self.seen_at,
            status: self.status,
            reason: self.reason.as_deref(),
            sha256_prefix: self.sha256_prefix.as_deref(),
            url: self.url.as_deref(),
            sha256: self.sha256.as_deref(),
            evaluation_id: self.evaluation_id,
            attempts: self.attempts,
            next_attempt_unix: self.next_attempt_unix,
            updated_at: &self.updated_at,
        }
        .serialize(serializer)
    }
}

/// Bytes as text: unchanged when they are UTF-8 with no control characters; otherwise
/// escaped, with each byte that is not UTF-8 as `\xNN`, control characters as Rust escapes
/// and `\` doubled, so that garbage cannot pass for text or move a terminal's cursor.
pub fn display_bytes(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(text) if !text.chars().any(char::is_control) => Cow::Borrowed(text),
        _ => {
            let mut out = String::with_capacity(raw.len() + 8);
            for chunk in raw.utf8_chunks() {
                for c in chunk.valid().chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        c if c.is_control() => out.extend(c.escape_default()),
                        c => out.push(c),
                    }
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            Cow::Owned(out)
        }
    }
}

/// How many commitments are in each status (the daemon's metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentCounts {
    pub invalid: u64,
    pub pending: u64,
    pub done: u64,
    pub failed: u64,
}

impl CommitmentCounts {
    pub fn get(&self, status: CommitmentStatus) -> u64 {
        match status {
            CommitmentStatus::Invalid => self.invalid,
            CommitmentStatus::Pending => self.pending,
            CommitmentStatus::Done => self.done,
            CommitmentStatus::Failed => self.failed,
        }
    }

    pub fn total(&self) -> u64 {
        CommitmentStatus::ALL.iter().map(|&s| self.get(s)).sum()
    }

    fn get_mut(&mut self, status: CommitmentStatus) -> &mut u64 {
        match status {
            CommitmentStatus::Invalid => &mut self.invalid,
            CommitmentStatus::Pending => &mut self.pending,
            CommitmentStatus::Done => &mut self.done,
            CommitmentStatus::Failed => &mut self.failed,
        }
    }
}

/// The columns of a [`CommitmentRow`], in `commitment_row`'s order.
const COMMITMENT_COLUMNS: &str = "id, netuid, hotkey, uid, block, raw, seen_at, status, reason, \
     sha256_prefix, url, sha256, evaluation_id, attempts, next_attempt_unix, updated_at";

fn now() -> String {
    rfc3339(SystemTime::now())
}

impl Ledger<'_> {
    // ---------------------------------------------------------------- writes

    /// Records a commitment read from chain. One not seen before, by (netuid, hotkey, raw),
    /// is inserted: pending when it parsed, invalid (with its reason) when not. One seen
    /// before comes back as it is; only a uid unknown then is filled in. Its verdict stands
    /// even if the parser would now judge the bytes otherwise: a commitment is judged once.
    pub fn observe_commitment(&self, c: &NewCommitment<'_>) -> Result<Observed, StoreError> {
        self.require_transaction()?;
        if c.hotkey.is_empty() {
            return Err(StoreError::Invalid(
                "a commitment with an empty hotkey".into(),
            ));
        }
        let block = to_i64(c.block, "block")?;
        let (status, reason, sha256_prefix, url) = match c.parsed {
            Ok((prefix, url)) => {
                if prefix.is_empty()
                    || prefix.len() > 64
                    || !prefix
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(StoreError::Invalid(format!(
                        "the commitment's sha256 prefix {prefix:?} is not 1 to 64 lowercase hex \
                         digits"
                    )));
                }
                if url.is_empty() {
                    return Err(StoreError::Invalid("a commitment with an empty URL".into()));
                }
                (CommitmentStatus::Pending, None, Some(prefix), Some(url))
            }
            Err(reason) => (CommitmentStatus::Invalid, Some(reason), None, None),
        };

        let existing: Option<(i64, String, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT id, status, uid FROM commitments \
                 WHERE netuid = ?1 AND hotkey = ?2 AND raw = ?3",
                params![c.netuid, c.hotkey, c.raw],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((id, status, uid)) = existing {
            let status = status.parse().map_err(|_| {
                self.corrupt(
                    format!("commitment {id}"),
                    format!("its status is {status:?}"),
                )
            })?;
            if let (None, Some(new_uid)) = (uid, c.uid) {
                self.conn.execute(
                    "UPDATE commitments SET uid = ?2 WHERE id = ?1",
                    params![id, new_uid],
                )?;
            }
            return Ok(Observed {
                id,
                new: false,
                status,
            });
        }

        let now = now();
        self.conn.execute(
            "INSERT INTO commitments (netuid, hotkey, uid, block, raw, seen_at, status, reason, \
             sha256_prefix, url, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?6)",
            params![
                c.netuid,
                c.hotkey,
                c.uid,
                block,
                c.raw,
                now,
                status.as_str(),
                reason,
                sha256_prefix,
                url,
            ],
        )?;
        Ok(Observed {
            id: self.conn.last_insert_rowid(),
            new: true,
            status,
        })
    }

    /// A pending commitment is done: its submission (full `sha256`, which must start with
    /// the committed prefix) was evaluated as `evaluation_id`, a stored evaluation of that
    /// submission.
    pub fn finish_commitment(
        &self,
        id: i64,
        sha256: &str,
        evaluation_id: i64,
    ) -> Result<(), StoreError> {
        self.require_transaction()?;
        if !is_sha256(sha256) {
            return Err(StoreError::Invalid(format!(
                "the sha256 {sha256:?} is not 64 lowercase hex digits"
            )));
        }
        let row = self.pending_commitment(id, "finished")?;
        if let Some(prefix) = &row.sha256_prefix {
            if !sha256.starts_with(prefix.as_str()) {
                return Err(StoreError::Invalid(format!(
                    "submission {sha256} is not the one commitment {id} names ({prefix}…); \
                     fail the commitment instead"
                )));
            }
        }
        let evaluated: Option<String> = self
            .conn
            .query_row(
                "SELECT sha256 FROM evaluations WHERE id = ?1",
                [evaluation_id],
                |r| r.get(0),
            )
            .optional()?;
        match evaluated {
            None => {
                return Err(StoreError::Invalid(format!(
                    "commitment {id} cannot be done with evaluation {evaluation_id}: there is \
                     no such evaluation (store it first, in the same write)"
                )))
            }
            Some(other) if other != sha256 => {
                return Err(StoreError::Invalid(format!(
                    "evaluation {evaluation_id} is of submission {other}, not of {sha256}"
                )))
            }
            Some(_) => {}
        }
        self.conn.execute(
            "UPDATE commitments SET status = 'done', sha256 = ?2, evaluation_id = ?3, \
             attempts = attempts + 1, next_attempt_unix = NULL, updated_at = ?4 WHERE id = ?1",
            params![id, sha256, evaluation_id, now()],
        )?;
        Ok(())
    }

    /// A pending commitment met a transient error: it stays pending, is not due before
    /// `next_attempt_unix`, and keeps `reason` as its last error.
    pub fn defer_commitment(
        &self,
        id: i64,
        reason: &str,
        next_attempt_unix: i64,
    ) -> Result<(), StoreError> {
        self.require_transaction()?;
        self.pending_commitment(id, "deferred")?;
        self.conn.execute(
            "UPDATE commitments SET attempts = attempts + 1, reason = ?2, \
             next_attempt_unix = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, reason, next_attempt_unix, now()],
        )?;
        Ok(())
    }

    /// A pending commitment met a fatal error: it is failed, for good, because of `reason`.
    pub fn fail_commitment(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.require_transaction()?;
        self.pending_commitment(id, "failed")?;
        self.conn.execute(
            "UPDATE commitments SET status = 'failed', attempts = attempts + 1, reason = ?2, \
             next_attempt_unix = NULL, updated_at = ?3 WHERE id = ?1",
            params![id, reason, now()],
        )?;
        Ok(())
    }

    /// Sets the daemon's value `key`.
    pub fn set_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.require_transaction()?;
        self.conn.execute(
            "INSERT INTO daemon_state (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    /// The pending commitments due at `now_unix` (never deferred, or deferred until then at
    /// the latest), oldest block first: at most `limit`.
    pub fn due_commitments(
        &self,
        now_unix: i64,
        limit: usize,
    ) -> Result<Vec<CommitmentRow>, StoreError> {
        self.commitment_rows(
            &format!(
                "SELECT {COMMITMENT_COLUMNS} FROM commitments WHERE status = 'pending' \
                 AND (next_attempt_unix IS NULL OR next_attempt_unix <= ?1) \
                 ORDER BY block, id LIMIT ?2"
            ),
            params![now_unix, sql_limit(Some(limit))],
        )
    }

    /// How many commitments are pending, due or deferred: the queue's depth.
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM commitments WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many commitments are in each status.
    pub fn commitment_counts(&self) -> Result<CommitmentCounts, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, count(*) FROM commitments GROUP BY status")?;
        let mut rows = stmt.query([])?;
        let mut counts = CommitmentCounts::default();
        while let Some(row) = rows.next()? {
            let what = || "a commitment".to_string();
            let status = self.status(row, 0, &what)?;
            *counts.get_mut(status) = self.unsigned(row, 1, "count", &what)?;
        }
        Ok(counts)
    }

    pub fn commitment(&self, id: i64) -> Result<Option<CommitmentRow>, StoreError> {
        Ok(self
            .commitment_rows(
                &format!("SELECT {COMMITMENT_COLUMNS} FROM commitments WHERE id = ?1"),
                params![id],
            )?
            .pop())
    }

    /// The commitments (in `status`, or all), newest block first: at most `limit`.
    pub fn commitments(
        &self,
        status: Option<CommitmentStatus>,
        limit: Option<usize>,
    ) -> Result<Vec<CommitmentRow>, StoreError> {
        self.commitment_rows(
            &format!(
                "SELECT {COMMITMENT_COLUMNS} FROM commitments WHERE ?1 IS NULL OR status = ?1 \
                 ORDER BY block DESC, id DESC LIMIT ?2"
            ),
            params![status.map(CommitmentStatus::as_str), sql_limit(limit)],
        )
    }

    /// The newest evaluation of submission `sha256` in `competition` by `validator` (None:
    /// by none, as a local bench stores it), whatever its verdict. A commitment of a
    /// submission already evaluated (by another hotkey, or committed again) is linked to it
    /// rather than evaluated again, and so is one whose evaluation was stored just before a
    /// crash.
    pub fn evaluation_of_submission(
        &self,
        sha256: &str,
        competition: &str,
        validator: Option<&str>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT id FROM evaluations \
                     WHERE sha256 = ?1 AND competition = ?2 AND validator IS ?3 \
                     ORDER BY {NEWEST_FIRST} LIMIT 1"
                ),
                params![sha256, competition, validator],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The daemon's value `key`, if set.
    pub fn state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT value FROM daemon_state WHERE key = ?1")?;
        let mut rows = stmt.query([key])?;
        match rows.next()? {
            Some(row) => {
                Ok(Some(self.column(row, 0, "value", &|| {
                    format!("daemon state {key:?}")
                })?))
            }
            None => Ok(None),
        }
    }

    /// The newest weight vector set on chain (of `competition`, or of any): the weights the
    /// chain holds now, as far as this validator knows. Computed and dry-run ones do not
    /// count.
    pub fn last_weights_set(
        &self,
        competition: Option<&str>,
    ) -> Result<Option<WeightsEntry>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {WEIGHTS_COLUMNS} FROM weights \
             WHERE source = 'set' AND (?1 IS NULL OR competition = ?1) \
             ORDER BY id DESC LIMIT 1"
        ))?;
        let mut rows = stmt.query([competition])?;
        match rows.next()? {
            Some(row) => Ok(Some(self.weights_entry(row)?)),
            None => Ok(None),
        }
    }

    // ---------------------------------------------------------------- helpers

    /// Commitment `id`, which must be pending to be `moved` (finished, deferred, failed).
    fn pending_commitment(&self, id: i64, moved: &str) -> Result<CommitmentRow, StoreError> {
        match self.commitment(id)? {
            None => Err(StoreError::Invalid(format!(
                "there is no commitment {id} to be {moved}"
            ))),
            Some(row) if row.status != CommitmentStatus::Pending => {
                Err(StoreError::Invalid(format!(
                    "commitment {id} is {}, not pending, so it cannot be {moved}: invalid, done \
                     and failed commitments are final",
                    row.status
                )))
            }
            Some(row) => Ok(row),
        }
    }

    fn commitment_rows(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<CommitmentRow>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(self.commitment_row(row)?);
        }
        Ok(out)
    }

    /// A [`CommitmentRow`] from a row selected with [`COMMITMENT_COLUMNS`].
    fn commitment_row(&self, row: &Row<'_>) -> Result<CommitmentRow, StoreError> {
        let id: i64 = self.column(row, 0, "id", &|| "a commitment".into())?;
        let what = || format!("commitment {id}");
        let netuid: i64 = self.column(row, 1, "netuid", &what)?;
        Ok(CommitmentRow {
            id,
            netuid: u16::try_from(netuid)
                .map_err(|_| self.corrupt(what(), format!("its netuid is {netuid}")))?,
            hotkey: self.column(row, 2, "hotkey", &what)?,
            uid: self.uid(row, 3, &what)?,
            block: self.unsigned(row, 4, "block", &what)?,
            raw: self.column(row, 5, "raw", &what)?,
            seen_at: self.column(row, 6, "seen_at", &what)?,
            status: self.status(row, 7, &what)?,
            reason: self.column(row, 8, "reason", &what)?,
            sha256_prefix: self.column(row, 9, "sha256_prefix", &what)?,
            url: self.column(row, 10, "url", &what)?,
            sha256: self.column(row, 11, "sha256", &what)?,
            evaluation_id: self.column(row, 12, "evaluation_id", &what)?,
            attempts: self.unsigned(row, 13, "attempts", &what)?,
            next_attempt_unix: self.column(row, 14, "next_attempt_unix", &what)?,
            updated_at: self.column(row, 15, "updated_at", &what)?,
        })
    }

    fn status(
        &self,
        row: &Row<'_>,
        index: usize,
        what: &dyn Fn() -> String,
    ) -> Result<CommitmentStatus, StoreError> {
        let v: String = self.column(row, index, "status", what)?;
        v.parse()
            .map_err(|_| self.corrupt(what(), format!("its status is {v:?}")))
    }
}

/// SQLite's LIMIT: -1 for none.
fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_by_name() {
        for status in CommitmentStatus::ALL {
            assert_eq!(status.as_str().parse::<CommitmentStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
            assert_eq!(status.is_final(), status != CommitmentStatus::Pending);
        }
        let e = "Done".parse::<CommitmentStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"Done\" is not a commitment status: give invalid, pending, done or failed"
        );
    }

    #[test]
    fn bytes_display_as_text_or_escaped() {
        assert_eq!(display_bytes(b"abc:https://x/y"), "abc:https://x/y");
        assert!(matches!(
            display_bytes(b"caf\xc3\xa9"),
            Cow::Borrowed("café")
        ));
        assert_eq!(display_bytes(b""), "");
        assert_eq!(display_bytes(b"a\xffb\\"), "a\\xffb\\\\");
        assert_eq!(display_bytes(b"a\0b\n"), "a\\u{0}b\\n");
        assert_eq!(display_bytes(b"\xe2\x82"), "\\xe2\\x82");
        // Printable text keeps its backslashes: it is shown as it is.
        assert_eq!(display_bytes(b"a\\xffb"), "a\\xffb");
    }
}
