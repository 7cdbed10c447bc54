-- crusades store, schema 3: the validator daemon's durable state. Every commitment it has
-- read from chain and where it stands, so that a restart after a crash neither evaluates
-- finished work again nor skips pending work; and a few named values (the last block polled).

-- One row per distinct commitment: (netuid, hotkey, raw). The same bytes committed again by
-- the same hotkey are the same row; a hotkey that commits something else gets a new one.
CREATE TABLE commitments (
    id                INTEGER PRIMARY KEY,
    netuid            INTEGER NOT NULL CHECK (netuid BETWEEN 0 AND 65535),
    -- The miner's hotkey (ss58).
    hotkey            TEXT    NOT NULL,
    -- Its uid when the commitment was read (NULL: not known then).
    uid               INTEGER CHECK (uid IS NULL OR uid BETWEEN 0 AND 65535),
    -- The block the commitment was made at, or the block it was first seen at.
    block             INTEGER NOT NULL CHECK (block >= 0),
    -- The committed bytes exactly as read from chain: anyone can write them, so they need
    -- not be text.
    raw               BLOB    NOT NULL,
    seen_at           TEXT    NOT NULL,
    -- invalid: did not parse (final); pending: to fetch and evaluate; done: evaluated (or
    -- linked to an existing evaluation of the same submission); failed: gave up (final).
    status            TEXT    NOT NULL
        CHECK (status IN ('invalid', 'pending', 'done', 'failed')),
    -- Why it is invalid or failed, or the last transient error of a pending or done one.
    reason            TEXT,
    -- From the parsed commitment; NULL exactly when it did not parse.
    sha256_prefix     TEXT,
    url               TEXT,
    -- The full sha256 of the fetched submission.
    sha256            TEXT,
    evaluation_id     INTEGER REFERENCES evaluations (id),
    -- Tries that ended (deferred, failed or done).
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- A deferred commitment is not due before this (unix seconds); NULL: due now.
    next_attempt_unix INTEGER,
    -- When its status, reason or attempts last changed.
    updated_at        TEXT    NOT NULL,
    UNIQUE (netuid, hotkey, raw),
    CHECK ((status = 'invalid') = (sha256_prefix IS NULL)),
    CHECK ((sha256_prefix IS NULL) = (url IS NULL)),
    CHECK (status NOT IN ('invalid', 'failed') OR reason IS NOT NULL),
    CHECK (status <> 'done' OR (sha256 IS NOT NULL AND evaluation_id IS NOT NULL))
) STRICT;

-- The daemon's queue: the due pending commitments, oldest block first.
CREATE INDEX commitments_due ON commitments (status, next_attempt_unix, block, id);
CREATE INDEX commitments_evaluation ON commitments (evaluation_id);

-- Named values the daemon keeps across restarts (the last block it polled, …).
CREATE TABLE daemon_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
