//! The validator daemon's state in the store: a commitment's life (observed, due, deferred,
//! done or failed, final after that), what survives a restart, exact bytes, links to
//! existing evaluations, the last weights set on chain, and damaged rows.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crusades_results::queue::{
    CommitmentCounts, CommitmentRow, CommitmentStatus, NewCommitment, Observed,
};
use crusades_results::record::{Record, Verdict};
use crusades_results::store::{EvaluationMeta, Store, StoreError};
use crusades_results::testing::sample_record;
use crusades_results::time::rfc3339;
use crusades_results::weights::WeightsEntry;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const CPU: &str = "0.2.0/tiny/cpu";
const CUDA: &str = "0.2.0/tiny/cuda";
const NETUID: u16 = 3;
const URL: &str = "https://example.com/s.wasm";

fn sha(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

fn at(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(1_790_000_000 + secs))
}

fn record(name: &str, verdict: Verdict, secs: u64) -> Record {
    sample_record(&sha(name), 0.3, verdict, &at(secs))
}

/// A well-formed commitment of `prefix` (the first 32 hex digits of a sha256).
fn parsed<'a>(hotkey: &'a str, block: u64, raw: &'a [u8], prefix: &'a str) -> NewCommitment<'a> {
    NewCommitment {
        netuid: NETUID,
        hotkey,
        uid: Some(7),
        block,
        raw,
        parsed: Ok((prefix, URL)),
    }
}

fn observe(store: &mut Store, c: &NewCommitment<'_>) -> Observed {
    store.write(|l| l.observe_commitment(c)).unwrap()
}

/// Stores an evaluation of submission `name` by `validator`; its id.
fn evaluate(store: &mut Store, r: &Record, validator: Option<&str>) -> i64 {
    let meta = EvaluationMeta {
        validator: validator.map(Into::into),
        ..EvaluationMeta::default()
    };
    store.write(|l| l.insert_evaluation(r, &meta)).unwrap().id
}

fn due(store: &Store, now: i64) -> Vec<i64> {
    store
        .read()
        .due_commitments(now, 100)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect()
}

fn row(store: &Store, id: i64) -> CommitmentRow {
    store.read().commitment(id).unwrap().unwrap()
}

fn refused(e: StoreError, says: &str) {
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert!(e.to_string().contains(says), "{e}");
}

#[test]
fn a_commitment_goes_from_pending_to_done_or_failed_and_stays_there() {
    let mut store = Store::open_in_memory().unwrap();
    let (pa, pb) = (sha("a")[..32].to_string(), sha("b")[..32].to_string());
    let raw_a = format!("{pa}:{URL}");
    let raw_b = format!("{pb}:{URL}");
    let a = observe(&mut store, &parsed("5Fa", 10, raw_a.as_bytes(), &pa));
    let b = observe(&mut store, &parsed("5Fb", 5, raw_b.as_bytes(), &pb));
    let c = observe(
        &mut store,
        &NewCommitment {
            netuid: NETUID,
            hotkey: "5Fc",
            uid: None,
            block: 1,
            raw: b"garbage",
            parsed: Err("no ':' after the hash"),
        },
    );
    assert!(a.new && b.new && c.new);
    assert_eq!(
        (a.status, b.status, c.status),
        (
            CommitmentStatus::Pending,
            CommitmentStatus::Pending,
            CommitmentStatus::Invalid
        )
    );
    let ra = row(&store, a.id);
    assert_eq!(
        (ra.netuid, ra.hotkey.as_str(), ra.uid, ra.block),
        (NETUID, "5Fa", Some(7), 10)
    );
    assert_eq!(ra.raw, raw_a.as_bytes());
    assert_eq!(
        (ra.sha256_prefix.as_deref(), ra.url.as_deref()),
        (Some(pa.as_str()), Some(URL))
    );
    assert_eq!((ra.sha256, ra.evaluation_id, ra.reason), (None, None, None));
    assert_eq!((ra.attempts, ra.next_attempt_unix), (0, None));
    assert!(crusades_results::time::parse_rfc3339(&ra.seen_at).is_some());
    assert_eq!(ra.updated_at, ra.seen_at);
    let rc = row(&store, c.id);
    assert_eq!(rc.reason.as_deref(), Some("no ':' after the hash"));
    assert_eq!((rc.sha256_prefix, rc.url, rc.uid), (None, None, None));

    // Oldest block first; an invalid one is never due.
    assert_eq!(due(&store, 0), vec![b.id, a.id]);
    assert_eq!(
        store.read().due_commitments(0, 1).unwrap()[0].id,
        b.id,
        "the limit keeps the oldest"
    );
    assert_eq!(store.read().pending_count().unwrap(), 2);
    assert_eq!(
        store.read().commitment_counts().unwrap(),
        CommitmentCounts {
            invalid: 1,
            pending: 2,
            done: 0,
            failed: 0
        }
    );

    // Deferred: not due before its time, due from then on.
    store
        .write(|l| l.defer_commitment(a.id, "connection reset", 2_000))
        .unwrap();
    assert_eq!(due(&store, 1_999), vec![b.id]);
    assert_eq!(due(&store, 2_000), vec![b.id, a.id]);
    let ra = row(&store, a.id);
    assert_eq!(ra.status, CommitmentStatus::Pending);
    assert_eq!(
        (ra.attempts, ra.next_attempt_unix, ra.reason.as_deref()),
        (1, Some(2_000), Some("connection reset"))
    );
    assert_eq!(
        store.read().pending_count().unwrap(),
        2,
        "deferred is still queued"
    );

    // Done, with its evaluation stored in the same write.
    let ra_record = record("a", Verdict::Accepted, 0);
    let eval = store
        .write(|l| {
            let id = l
                .insert_evaluation(&ra_record, &EvaluationMeta::default())?
                .id;
            l.finish_commitment(a.id, &sha("a"), id)?;
            Ok(id)
        })
        .unwrap();
    let ra = row(&store, a.id);
    assert_eq!(ra.status, CommitmentStatus::Done);
    assert_eq!(
        (
            ra.sha256.as_deref(),
            ra.evaluation_id,
            ra.attempts,
            ra.next_attempt_unix
        ),
        (Some(sha("a").as_str()), Some(eval), 2, None)
    );
    assert_eq!(due(&store, 10_000), vec![b.id]);

    // Failed: for good.
    store
        .write(|l| l.fail_commitment(b.id, "the fetched sha256 is not the committed one"))
        .unwrap();
    let rb = row(&store, b.id);
    assert_eq!(rb.status, CommitmentStatus::Failed);
    assert_eq!(
        (rb.attempts, rb.reason.as_deref()),
        (1, Some("the fetched sha256 is not the committed one"))
    );
    assert!(due(&store, i64::MAX).is_empty());
    assert_eq!(store.read().pending_count().unwrap(), 0);
    assert_eq!(
        store.read().commitment_counts().unwrap(),
        CommitmentCounts {
            invalid: 1,
            pending: 0,
            done: 1,
            failed: 1
        }
    );

    // Done, failed and invalid are final; the refusals change nothing.
    let before: Vec<CommitmentRow> = store.read().commitments(None, None).unwrap();
    let e = store
        .write(|l| l.finish_commitment(a.id, &sha("a"), eval))
        .unwrap_err();
    refused(e, &format!("commitment {} is done, not pending", a.id));
    let e = store
        .write(|l| l.defer_commitment(b.id, "again", 0))
        .unwrap_err();
    refused(e, &format!("commitment {} is failed, not pending", b.id));
    let e = store.write(|l| l.fail_commitment(c.id, "no")).unwrap_err();
    refused(e, &format!("commitment {} is invalid, not pending", c.id));
    let e = store.write(|l| l.fail_commitment(999, "no")).unwrap_err();
    refused(e, "there is no commitment 999");
    assert_eq!(store.read().commitments(None, None).unwrap(), before);

    // Seen again: the same row, untouched; a new uid fills only an unknown one.
    let again = observe(&mut store, &parsed("5Fa", 99, raw_a.as_bytes(), &pa));
    assert_eq!(
        again,
        Observed {
            id: a.id,
            new: false,
            status: CommitmentStatus::Done
        }
    );
    let c_again = observe(
        &mut store,
        &NewCommitment {
            netuid: NETUID,
            hotkey: "5Fc",
            uid: Some(12),
            block: 50,
            raw: b"garbage",
            parsed: Err("another reason"),
        },
    );
    assert_eq!((c_again.id, c_again.new), (c.id, false));
    let rc = row(&store, c.id);
    assert_eq!(
        (rc.uid, rc.block, rc.reason.as_deref()),
        (Some(12), 1, Some("no ':' after the hash"))
    );
    observe(
        &mut store,
        &NewCommitment {
            uid: Some(13),
            ..parsed("5Fa", 99, raw_a.as_bytes(), &pa)
        },
    );
    assert_eq!(row(&store, a.id).uid, Some(7), "a known uid is kept");
    assert_eq!(
        row(&store, a.id),
        before.iter().find(|r| r.id == a.id).unwrap().clone()
    );
    assert_eq!(store.read().commitments(None, None).unwrap().len(), 3);

    // Other bytes from the same hotkey, the same bytes from another hotkey or on another
    // subnet: each a new commitment.
    let raw_a2 = format!("{pa}:{URL}?v=2");
    let n1 = observe(&mut store, &parsed("5Fa", 100, raw_a2.as_bytes(), &pa));
    let n2 = observe(&mut store, &parsed("5Fz", 101, raw_a.as_bytes(), &pa));
    let n3 = observe(
        &mut store,
        &NewCommitment {
            netuid: NETUID + 1,
            ..parsed("5Fa", 102, raw_a.as_bytes(), &pa)
        },
    );
    assert!(n1.new && n2.new && n3.new);
    assert_eq!(due(&store, 0), vec![n1.id, n2.id, n3.id]);

    // Newest first, by status, with a limit.
    let ids = |rows: Vec<CommitmentRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    let read = store.read();
    assert_eq!(
        ids(read.commitments(None, None).unwrap()),
        vec![n3.id, n2.id, n1.id, a.id, b.id, c.id]
    );
    assert_eq!(
        ids(read.commitments(None, Some(2)).unwrap()),
        vec![n3.id, n2.id]
    );
    assert_eq!(
        ids(read
            .commitments(Some(CommitmentStatus::Done), None)
            .unwrap()),
        vec![a.id]
    );
    assert_eq!(
        ids(read
            .commitments(Some(CommitmentStatus::Invalid), None)
            .unwrap()),
        vec![c.id]
    );
    assert_eq!(read.commitment(999).unwrap(), None);
}

#[test]
fn finishing_checks_the_submission_and_its_evaluation() {
    let mut store = Store::open_in_memory().unwrap();
    let pa = sha("a")[..32].to_string();
    let id = observe(&mut store, &parsed("5Fa", 1, b"x", &pa)).id;
    let ea = evaluate(&mut store, &record("a", Verdict::Accepted, 0), None);
    let eb = evaluate(&mut store, &record("b", Verdict::Accepted, 0), None);
    let e = store
        .write(|l| l.finish_commitment(id, &sha("a").to_uppercase(), ea))
        .unwrap_err();
    refused(e, "is not 64 lowercase hex digits");
    let e = store
        .write(|l| l.finish_commitment(id, &sha("b"), eb))
        .unwrap_err();
    refused(
        e,
        &format!(
            "submission {} is not the one commitment {id} names",
            sha("b")
        ),
    );
    let e = store
        .write(|l| l.finish_commitment(id, &sha("a"), eb))
        .unwrap_err();
    refused(e, &format!("evaluation {eb} is of submission {}", sha("b")));
    let e = store
        .write(|l| l.finish_commitment(id, &sha("a"), eb + 10))
        .unwrap_err();
    refused(e, "there is no such evaluation");
    // An evaluation and its commitment land together or not at all.
    let e = store
        .write(|l| {
            let eval = l
                .insert_evaluation(
                    &record("a", Verdict::Rejected, 60),
                    &EvaluationMeta::default(),
                )?
                .id;
            l.finish_commitment(id, &sha("a"), eval)?;
            Err::<(), _>(StoreError::Invalid("killed here".into()))
        })
        .unwrap_err();
    refused(e, "killed here");
    assert_eq!(row(&store, id).status, CommitmentStatus::Pending);
    assert_eq!(store.read().evaluation(eb + 1).unwrap(), None);

    // What cannot be a commitment is refused.
    for (c, says) in [
        (parsed("", 1, b"y", &pa), "empty hotkey"),
        (
            parsed("5Fa", 1, b"y", "ABC"),
            "is not 1 to 64 lowercase hex digits",
        ),
        (
            parsed("5Fa", 1, b"y", ""),
            "is not 1 to 64 lowercase hex digits",
        ),
        (
            NewCommitment {
                parsed: Ok((&pa, "")),
                ..parsed("5Fa", 1, b"y", &pa)
            },
            "empty URL",
        ),
        (parsed("5Fa", u64::MAX, b"y", &pa), "too large"),
    ] {
        let e = store.write(|l| l.observe_commitment(&c)).unwrap_err();
        refused(e, says);
    }
    // Writes outside Store::write are refused: they would not be one transaction.
    let read = store.read();
    let not_in_tx = |e: StoreError| assert!(matches!(e, StoreError::NotInTransaction), "{e}");
    not_in_tx(
        read.observe_commitment(&parsed("5Fa", 1, b"z", &pa))
            .unwrap_err(),
    );
    not_in_tx(read.finish_commitment(id, &sha("a"), ea).unwrap_err());
    not_in_tx(read.defer_commitment(id, "x", 0).unwrap_err());
    not_in_tx(read.fail_commitment(id, "x").unwrap_err());
    not_in_tx(read.set_state("k", "v").unwrap_err());
    assert_eq!(read.commitments(None, None).unwrap().len(), 1);
}

#[test]
fn a_restarted_store_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let prefixes: Vec<String> = ["x", "y", "z"]
        .iter()
        .map(|n| sha(n)[..32].to_string())
        .collect();
    let raws: Vec<String> = prefixes.iter().map(|p| format!("{p}:{URL}")).collect();
    let blocks = [30, 10, 20];
    let ids: Vec<i64> = {
        let mut store = Store::open(&path).unwrap();
        let ids: Vec<i64> = (0..3)
            .map(|i| {
                let hotkey = format!("5F{i}");
                observe(
                    &mut store,
                    &parsed(&hotkey, blocks[i], raws[i].as_bytes(), &prefixes[i]),
                )
                .id
            })
            .collect();
        let r = record("y", Verdict::Accepted, 0);
        store
            .write(|l| {
                let eval = l.insert_evaluation(&r, &EvaluationMeta::default())?.id;
                l.finish_commitment(ids[1], &sha("y"), eval)?;
                l.set_state("last_block", "30")
            })
            .unwrap();
        store
            .write(|l| l.defer_commitment(ids[0], "timeout", 500))
            .unwrap();
        ids
    };

    let mut store = Store::open(&path).unwrap();
    assert_eq!(due(&store, 0), vec![ids[2]]);
    assert_eq!(
        due(&store, 500),
        vec![ids[2], ids[0]],
        "by block: 20, then 30"
    );
    assert_eq!(row(&store, ids[0]).attempts, 1);
    assert_eq!(row(&store, ids[1]).status, CommitmentStatus::Done);
    assert_eq!(
        store.read().state("last_block").unwrap().as_deref(),
        Some("30")
    );
    // Polling the chain again after the restart finds nothing new.
    for i in 0..3 {
        let hotkey = format!("5F{i}");
        let seen = observe(
            &mut store,
            &parsed(&hotkey, 40, raws[i].as_bytes(), &prefixes[i]),
        );
        assert_eq!((seen.id, seen.new), (ids[i], false));
    }
    assert_eq!(store.read().pending_count().unwrap(), 2);
}

#[test]
fn a_submission_already_evaluated_is_found_not_evaluated_again() {
    let mut store = Store::open_in_memory().unwrap();
    let cuda = |mut r: Record| {
        r.workload.device = "cuda:0".into();
        r
    };
    // The later one stored first: "newest" is by time, not by insertion.
    let late = evaluate(
        &mut store,
        &record("a", Verdict::Rejected, 100),
        Some("5Fval"),
    );
    let early = evaluate(
        &mut store,
        &record("a", Verdict::Accepted, 0),
        Some("5Fval"),
    );
    let other_validator = evaluate(
        &mut store,
        &record("a", Verdict::Accepted, 200),
        Some("5Fother"),
    );
    let on_cuda = evaluate(
        &mut store,
        &cuda(record("a", Verdict::Accepted, 300)),
        Some("5Fval"),
    );
    let local = evaluate(&mut store, &record("a", Verdict::Accepted, 400), None);
    let b = evaluate(
        &mut store,
        &record("b", Verdict::Accepted, 500),
        Some("5Fval"),
    );
    assert!(early > late);
    let read = store.read();
    let find = |name: &str, competition: &str, validator: Option<&str>| {
        read.evaluation_of_submission(&sha(name), competition, validator)
            .unwrap()
    };
    assert_eq!(
        find("a", CPU, Some("5Fval")),
        Some(late),
        "the newest, whatever its verdict"
    );
    assert_eq!(find("a", CPU, Some("5Fother")), Some(other_validator));
    assert_eq!(find("a", CUDA, Some("5Fval")), Some(on_cuda));
    assert_eq!(find("a", CPU, None), Some(local));
    assert_eq!(find("b", CPU, Some("5Fval")), Some(b));
    assert_eq!(find("a", CUDA, Some("5Fother")), None);
    assert_eq!(find("b", CPU, None), None);
    assert_eq!(find("c", CPU, Some("5Fval")), None);

    // Two hotkeys commit the same submission: both link to the one evaluation.
    let pa = sha("a")[..32].to_string();
    let one = observe(&mut store, &parsed("5Fone", 1, b"one", &pa)).id;
    let two = observe(&mut store, &parsed("5Ftwo", 2, b"two", &pa)).id;
    store
        .write(|l| {
            for id in [one, two] {
                let eval = l
                    .evaluation_of_submission(&sha("a"), CPU, Some("5Fval"))?
                    .expect("evaluated");
                l.finish_commitment(id, &sha("a"), eval)?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(row(&store, one).evaluation_id, Some(late));
    assert_eq!(row(&store, two).evaluation_id, Some(late));
}

#[test]
fn the_last_weights_set_skips_computed_and_dry_run_ones() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.read().last_weights_set(None).unwrap(), None);
    let entry = |competition: &str, block: u64, source: &str| WeightsEntry {
        id: None,
        competition: competition.into(),
        block,
        at: at(block),
        uids: vec![1, 7],
        weights: vec![0.95, 0.05],
        leader_sha256: Some(sha("a")),
        threshold: 0.01,
        source: source.into(),
    };
    let ids = store
        .write(|l| {
            [
                entry(CPU, 1, "computed"),
                entry(CPU, 2, "set"),
                entry(CPU, 3, "dry-run"),
                entry(CUDA, 4, "set"),
                entry(CPU, 5, "computed"),
                entry(CUDA, 6, "dry-run"),
            ]
            .iter()
            .map(|e| l.append_weights(e))
            .collect::<Result<Vec<i64>, _>>()
        })
        .unwrap();
    let read = store.read();
    assert_eq!(
        read.last_weights_set(Some(CPU)).unwrap(),
        Some(WeightsEntry {
            id: Some(ids[1]),
            ..entry(CPU, 2, "set")
        })
    );
    let newest = read.last_weights_set(None).unwrap().unwrap();
    assert_eq!(
        (newest.id, newest.competition.as_str()),
        (Some(ids[3]), CUDA)
    );
    assert_eq!(read.last_weights_set(Some(CUDA)).unwrap(), Some(newest));
    assert_eq!(read.last_weights_set(Some("0.1.0/tiny/cpu")).unwrap(), None);
}

#[test]
fn daemon_state_is_a_small_key_value_table() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.read().state("last_block").unwrap(), None);
    store.write(|l| l.set_state("last_block", "100")).unwrap();
    store
        .write(|l| {
            l.set_state("last_block", "101")?;
            l.set_state("other", "")
        })
        .unwrap();
    let read = store.read();
    assert_eq!(read.state("last_block").unwrap().as_deref(), Some("101"));
    assert_eq!(read.state("other").unwrap().as_deref(), Some(""));
    assert_eq!(read.state("Last_block").unwrap(), None);
}

#[test]
fn json_shows_the_bytes_as_text_and_as_hex() {
    let mut store = Store::open_in_memory().unwrap();
    let id = observe(
        &mut store,
        &NewCommitment {
            netuid: NETUID,
            hotkey: "5Fg",
            uid: None,
            block: 4,
            raw: b"ab\xff\0",
            parsed: Err("not printable ASCII (byte 2: 0xff)"),
        },
    )
    .id;
    let r = row(&store, id);
    assert_eq!(r.raw_display(), "ab\\xff\\u{0}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["raw"], "ab\\xff\\u{0}");
    assert_eq!(json["raw_hex"], "6162ff00");
    assert_eq!(json["status"], "invalid");
    assert_eq!(json["netuid"], NETUID);
    assert_eq!(json["uid"], serde_json::Value::Null);
    assert_eq!(json["reason"], "not printable ASCII (byte 2: 0xff)");
    assert_eq!(json.as_object().unwrap().len(), 17);
}

// ------------------------------------------------------------------ the file

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// The table's CHECKs keep a row's columns consistent with its status, so most damage
/// cannot be written at all; what can (with the CHECKs switched off) reads as an error.
#[test]
fn inconsistent_rows_cannot_be_written_and_damaged_ones_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let mut store = Store::open(&path).unwrap();
    let p = sha("a")[..32].to_string();
    let ids: Vec<i64> = (0..5u8)
        .map(|i| observe(&mut store, &parsed("5Fa", u64::from(i), &[i], &p)).id)
        .collect();
    let conn = raw(&path);
    let bad = [
        "UPDATE commitments SET status = 'maybe' WHERE id = ?1",
        "UPDATE commitments SET status = 'done' WHERE id = ?1",
        "UPDATE commitments SET status = 'invalid' WHERE id = ?1",
        "UPDATE commitments SET status = 'failed' WHERE id = ?1",
        "UPDATE commitments SET sha256_prefix = NULL WHERE id = ?1",
        "UPDATE commitments SET netuid = 70000 WHERE id = ?1",
        "UPDATE commitments SET uid = -1 WHERE id = ?1",
        "UPDATE commitments SET block = -3 WHERE id = ?1",
        "UPDATE commitments SET attempts = -1 WHERE id = ?1",
        "UPDATE commitments SET raw = 'text' WHERE id = ?1",
        "UPDATE commitments SET attempts = 'many' WHERE id = ?1",
    ];
    for sql in bad {
        assert!(conn.execute(sql, [ids[0]]).is_err(), "{sql}");
    }
    assert!(
        conn.execute(
            "UPDATE commitments SET raw = ?1 WHERE id = ?2",
            rusqlite::params![vec![1u8], ids[0]]
        )
        .is_err(),
        "(netuid, hotkey, raw) is unique"
    );

    conn.execute_batch("PRAGMA ignore_check_constraints = ON")
        .unwrap();
    for (sql, id) in [
        (
            "UPDATE commitments SET status = 'maybe' WHERE id = ?1",
            ids[0],
        ),
        (
            "UPDATE commitments SET netuid = 70000 WHERE id = ?1",
            ids[1],
        ),
        ("UPDATE commitments SET block = -3 WHERE id = ?1", ids[2]),
        ("UPDATE commitments SET attempts = -1 WHERE id = ?1", ids[3]),
        ("UPDATE commitments SET uid = 65536 WHERE id = ?1", ids[4]),
    ] {
        conn.execute(sql, [id]).unwrap();
    }
    drop(conn);

    let read = store.read();
    for (id, says) in [
        (ids[0], "its status is \"maybe\""),
        (ids[1], "its netuid is 70000"),
        (ids[2], "its block is -3"),
        (ids[3], "its attempts is -1"),
        (ids[4], "its uid is 65536"),
    ] {
        let e = read.commitment(id).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("commitment {id}: {says}"))
                && text.contains(&path.display().to_string()),
            "{text}"
        );
    }
    assert!(matches!(
        read.commitments(None, None).unwrap_err(),
        StoreError::Corrupt { .. }
    ));
    assert!(matches!(
        read.due_commitments(0, 10).unwrap_err(),
        StoreError::Corrupt { .. }
    ));
    assert!(matches!(
        read.commitment_counts().unwrap_err(),
        StoreError::Corrupt { .. }
    ));
    let e = store
        .write(|l| l.observe_commitment(&parsed("5Fa", 0, &[0], &p)))
        .unwrap_err();
    assert!(e.to_string().contains("its status is \"maybe\""), "{e}");
    let e = store.write(|l| l.fail_commitment(ids[1], "x")).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
}

/// A commitment's identity: (netuid, hotkey, raw).
type Key = (u16, String, Vec<u8>);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any bytes and any hotkey come back exactly; the same (netuid, hotkey, raw) seen again is
    /// the same row, anything else a new one.
    #[test]
    fn commitments_round_trip_exactly(
        seen in prop::collection::vec(
            (
                0u16..3,
                prop_oneof![Just("5Fa".to_string()), any::<String>().prop_filter("a hotkey", |s| !s.is_empty())],
                prop_oneof![Just(vec![0xffu8, 0]), prop::collection::vec(any::<u8>(), 0..300)],
                any::<Option<u16>>(),
                0u64..=i64::MAX as u64,
                any::<bool>(),
            ),
            1..12,
        )
    ) {
        let mut store = Store::open_in_memory().unwrap();
        let prefix = sha("p")[..32].to_string();
        // Its id and its uid, as first seen (a uid unknown then is filled later).
        let mut first: HashMap<Key, (i64, Option<u16>)> = HashMap::new();
        for (netuid, hotkey, bytes, uid, block, ok) in &seen {
            let c = NewCommitment {
                netuid: *netuid,
                hotkey,
                uid: *uid,
                block: *block,
                raw: bytes,
                parsed: if *ok { Ok((&prefix, URL)) } else { Err("bad") },
            };
            let o = observe(&mut store, &c);
            let key = (*netuid, hotkey.clone(), bytes.clone());
            match first.get_mut(&key) {
                Some((id, known_uid)) => {
                    prop_assert_eq!((o.id, o.new), (*id, false));
                    *known_uid = known_uid.or(*uid);
                }
                None => {
                    prop_assert!(o.new);
                    first.insert(key, (o.id, *uid));
                    let r = row(&store, o.id);
                    prop_assert_eq!(r.netuid, *netuid);
                    prop_assert_eq!(&r.hotkey, hotkey);
                    prop_assert_eq!(&r.raw, bytes);
                    prop_assert_eq!(r.block, *block);
                    prop_assert_eq!(r.status, if *ok { CommitmentStatus::Pending } else { CommitmentStatus::Invalid });
                }
            }
        }
        let rows = store.read().commitments(None, None).unwrap();
        prop_assert_eq!(rows.len(), first.len());
        for r in rows {
            let (id, uid) = first[&(r.netuid, r.hotkey.clone(), r.raw.clone())];
            prop_assert_eq!((r.id, r.uid), (id, uid));
            let hex_raw = hex::encode(&r.raw);
            let json = serde_json::to_value(&r).unwrap();
            prop_assert_eq!(json["raw_hex"].as_str(), Some(hex_raw.as_str()));
        }
    }
}
