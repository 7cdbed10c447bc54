-- crusades store, schema 1: submissions, evaluations, the leader of each competition, the
-- history of leader changes and of weight vectors.
--
-- Applied in one transaction together with `PRAGMA user_version = 1`. Tables are STRICT:
-- SQLite refuses a value of the wrong type instead of storing it.

-- 'CRUS': marks the file as a crusades store (`PRAGMA application_id`).
PRAGMA application_id = 1129469267;

-- One row per submitted component (its sha256 is its identity).
CREATE TABLE submissions (
    sha256           TEXT    NOT NULL PRIMARY KEY,
    hotkey           TEXT,
    uid              INTEGER CHECK (uid IS NULL OR uid BETWEEN 0 AND 65535),
    bytes            INTEGER NOT NULL CHECK (bytes >= 0),
    -- The earliest evaluation seen of it, by (block, time).
    first_seen_at    TEXT    NOT NULL,
    first_seen_block INTEGER NOT NULL CHECK (first_seen_block >= 0)
) STRICT;

CREATE INDEX submissions_hotkey ON submissions (hotkey);
CREATE INDEX submissions_uid ON submissions (uid);

-- One row per evaluation: the full record (canonical JSON: keys sorted, no whitespace) and
-- the columns lists and the leaderboard query by.
CREATE TABLE evaluations (
    id              INTEGER PRIMARY KEY,
    sha256          TEXT    NOT NULL REFERENCES submissions (sha256),
    hotkey          TEXT,
    uid             INTEGER CHECK (uid IS NULL OR uid BETWEEN 0 AND 65535),
    -- contract/preset/device kind (`leaderboard::competition_of`).
    competition     TEXT    NOT NULL,
    workload_hash   TEXT    NOT NULL,
    preset          TEXT    NOT NULL,
    device          TEXT    NOT NULL,
    verdict         TEXT    NOT NULL CHECK (verdict IN ('accepted', 'rejected')),
    error_code      TEXT,
    -- The record's score (median MFU); NULL when no timed run completed.
    score           REAL,
    -- The GPU's name, or the CPU's model ×logical CPUs on a CPU run.
    hardware        TEXT    NOT NULL,
    harness_version TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    -- created_at in unix seconds (NULL if it does not parse), for ordering across offsets.
    created_unix    INTEGER,
    block           INTEGER NOT NULL CHECK (block >= 0),
    -- sha256 of `record`: the same record imported twice is one row.
    record_sha256   TEXT    NOT NULL UNIQUE,
    record          TEXT    NOT NULL
) STRICT;

CREATE INDEX evaluations_sha256 ON evaluations (sha256, created_unix);
CREATE INDEX evaluations_hotkey ON evaluations (hotkey);
CREATE INDEX evaluations_uid ON evaluations (uid);
CREATE INDEX evaluations_competition ON evaluations (competition, verdict, score);
CREATE INDEX evaluations_workload_hash ON evaluations (workload_hash);
CREATE INDEX evaluations_verdict ON evaluations (verdict, score);
CREATE INDEX evaluations_score ON evaluations (score);
CREATE INDEX evaluations_hardware ON evaluations (hardware);
CREATE INDEX evaluations_harness_version ON evaluations (harness_version);
CREATE INDEX evaluations_created ON evaluations (created_unix, created_at);

-- The leader of each competition now (`leaderboard::LeaderState`).
CREATE TABLE leaders (
    competition   TEXT    NOT NULL PRIMARY KEY,
    sha256        TEXT    NOT NULL REFERENCES submissions (sha256),
    score         REAL    NOT NULL,
    threshold     REAL    NOT NULL,
    crowned_block INTEGER NOT NULL CHECK (crowned_block >= 0),
    crowned_at    TEXT    NOT NULL
) STRICT;

-- Every change of leader (`leaderboard::LeaderChange`), in order.
CREATE TABLE leader_changes (
    id              INTEGER PRIMARY KEY,
    competition     TEXT    NOT NULL,
    block           INTEGER NOT NULL CHECK (block >= 0),
    at              TEXT    NOT NULL,
    sha256          TEXT    NOT NULL,
    score           REAL    NOT NULL,
    previous_sha256 TEXT,
    previous_score  REAL,
    threshold       REAL    NOT NULL
) STRICT;

CREATE INDEX leader_changes_competition ON leader_changes (competition, id);

-- Every weight vector computed or set (`weights::WeightsEntry`); uids and weights are JSON
-- arrays of the same length.
CREATE TABLE weights (
    id            INTEGER PRIMARY KEY,
    competition   TEXT    NOT NULL,
    block         INTEGER NOT NULL CHECK (block >= 0),
    at            TEXT    NOT NULL,
    uids          TEXT    NOT NULL,
    weights       TEXT    NOT NULL,
    leader_sha256 TEXT,
    threshold     REAL    NOT NULL,
    source        TEXT    NOT NULL
) STRICT;

CREATE INDEX weights_competition ON weights (competition, id);
