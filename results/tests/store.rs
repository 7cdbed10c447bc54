//! The SQLite store: records round-trip, duplicates, lookups, the leaderboard's input,
//! migrations (an old store upgrades, a newer one and foreign files are refused untouched),
//! damaged rows are errors, and a writer killed mid-transaction leaves a consistent store.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crusades_results::leaderboard::{LeaderChange, LeaderState};
use crusades_results::record::{Record, Verdict};
use crusades_results::store::{
    canonical_json, migrations, EvaluationFilter, EvaluationMeta, Inserted, Store, StoreError,
    SCHEMA_VERSION,
};
use crusades_results::testing::sample_record;
use crusades_results::time::{block_at, parse_rfc3339, rfc3339};
use crusades_results::weights::WeightsEntry;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const CPU: &str = "0.2.0/tiny/cpu";
const CUDA: &str = "0.2.0/tiny/cuda";

/// A submission's sha256, from a name.
fn sha(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

fn at(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(1_790_000_000 + secs))
}

fn record(name: &str, score: f64, verdict: Verdict, secs: u64) -> Record {
    sample_record(&sha(name), score, verdict, &at(secs))
}

fn on_cuda(mut r: Record) -> Record {
    r.workload.device = "cuda:0".into();
    r
}

fn insert(store: &mut Store, r: &Record, meta: &EvaluationMeta) -> Inserted {
    store.write(|l| l.insert_evaluation(r, meta)).unwrap()
}

fn put(store: &mut Store, r: &Record) -> i64 {
    insert(store, r, &EvaluationMeta::default()).id
}

fn change(sha256: &str, block: u64, previous: Option<&str>) -> LeaderChange {
    LeaderChange {
        competition: CPU.into(),
        block,
        at: at(block),
        sha256: sha256.into(),
        score: 0.4,
        previous_sha256: previous.map(Into::into),
        previous_score: previous.map(|_| 0.3),
        threshold: 0.01,
    }
}

fn weights(block: u64, leader: &str, competition: &str) -> WeightsEntry {
    WeightsEntry {
        id: None,
        competition: competition.into(),
        block,
        at: at(block),
        uids: vec![0, 7],
        weights: vec![0.1, 0.9],
        leader_sha256: Some(leader.into()),
        threshold: 0.01,
        source: "computed".into(),
    }
}

#[test]
fn an_evaluation_round_trips_its_record_and_columns() {
    let mut store = Store::open_in_memory().unwrap();
    let r = record("a", 0.137, Verdict::Accepted, 0);
    let meta = EvaluationMeta {
        hotkey: Some("5Fhot".into()),
        uid: Some(7),
        block: None,
        validator: Some("5Fval".into()),
    };
    let ins = insert(&mut store, &r, &meta);
    assert!(!ins.duplicate && ins.new_submission);
    let stored = store.read().evaluation(ins.id).unwrap().unwrap();
    assert_eq!(stored.record, r);
    let row = stored.row;
    assert_eq!(row.id, ins.id);
    assert_eq!(row.sha256, sha("a"));
    assert_eq!(row.hotkey.as_deref(), Some("5Fhot"));
    assert_eq!(row.uid, Some(7));
    assert_eq!(row.competition, CPU);
    assert_eq!(row.workload_hash, "6c83a1e87b0bea27");
    assert_eq!((row.preset.as_str(), row.device.as_str()), ("tiny", "cpu"));
    assert_eq!(row.verdict, Verdict::Accepted);
    assert_eq!(row.error_code, None);
    assert_eq!(row.score, Some(0.137));
    assert_eq!(row.hardware, "AMD EPYC 7B13 ×2");
    assert_eq!(row.harness_version, "0.1.0");
    assert_eq!(row.created_at, at(0));
    assert_eq!(row.block, block_at(parse_rfc3339(&at(0)).unwrap()));
    assert_eq!(row.validator.as_deref(), Some("5Fval"));
    assert_eq!(store.read().evaluation(ins.id + 1).unwrap(), None);

    // A rejected one: its error code; uid from the record's workload when none is given.
    let bad = record("b", 0.2, Verdict::Rejected, 5);
    let id = insert(&mut store, &bad, &EvaluationMeta::default()).id;
    let row = store.read().evaluation(id).unwrap().unwrap().row;
    assert_eq!(row.verdict, Verdict::Rejected);
    assert_eq!(row.error_code.as_deref(), Some("loss-mismatch"));
    assert_eq!(row.uid, Some(1));
    assert_eq!(row.hotkey, None);

    // Serialises (the dashboard and --json read this).
    let json = serde_json::to_value(store.read().evaluation(id).unwrap().unwrap()).unwrap();
    assert_eq!(json["row"]["verdict"], "rejected");
    assert_eq!(json["record"]["submission"]["sha256"], sha("b"));
}

#[test]
fn the_same_record_twice_is_one_evaluation_and_changes_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    let r = record("a", 0.3, Verdict::Accepted, 0);
    let first = insert(&mut store, &r, &EvaluationMeta::default());
    let again = insert(
        &mut store,
        &r,
        &EvaluationMeta {
            hotkey: Some("5Flate".into()),
            uid: Some(9),
            block: Some(1),
            validator: Some("v".into()),
        },
    );
    assert_eq!(
        again,
        Inserted {
            id: first.id,
            duplicate: true,
            new_submission: false,
            block: first.block,
        }
    );
    let read = store.read();
    assert_eq!(
        read.evaluations(&EvaluationFilter::default())
            .unwrap()
            .len(),
        1
    );
    let subs = read.submissions(None).unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].hotkey.clone(), subs[0].uid), (None, Some(1)));
    assert_eq!(
        subs[0].first_seen_block,
        block_at(parse_rfc3339(&at(0)).unwrap())
    );

    // Another evaluation of the same submission: not new, and fills the unknown hotkey (but
    // keeps the known uid).
    let other = record("a", 0.31, Verdict::Accepted, 60);
    let ins = insert(
        &mut store,
        &other,
        &EvaluationMeta {
            hotkey: Some("5Fhot".into()),
            uid: Some(9),
            ..Default::default()
        },
    );
    assert!(!ins.duplicate && !ins.new_submission);
    let subs = store.read().submissions(None).unwrap();
    assert_eq!(subs[0].hotkey.as_deref(), Some("5Fhot"));
    assert_eq!(subs[0].uid, Some(1));
    assert_eq!(subs[0].evaluations, 2);
    assert_eq!(subs[0].bytes, 139_500);
    assert_eq!(subs[0].first_seen_at, at(0));
}

#[test]
fn what_cannot_be_stored_is_refused_and_nothing_lands() {
    let mut store = Store::open_in_memory().unwrap();
    let mut r = record("a", 0.3, Verdict::Accepted, 0);
    r.created_at = "yesterday".into();
    let e = store
        .write(|l| l.insert_evaluation(&r, &EvaluationMeta::default()))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("\"yesterday\" is not an RFC 3339 time"),
        "{e}"
    );
    assert!(e.is_input_error());
    // With a block it is stored (the chain gave the time).
    let meta = EvaluationMeta {
        block: Some(42),
        ..Default::default()
    };
    let id = insert(&mut store, &r, &meta).id;
    assert_eq!(store.read().evaluation(id).unwrap().unwrap().row.block, 42);

    let mut r = record("b", 0.3, Verdict::Accepted, 0);
    r.submission.sha256 = "ABC".into();
    let e = store
        .write(|l| l.insert_evaluation(&r, &EvaluationMeta::default()))
        .unwrap_err();
    assert!(e.to_string().contains("not 64 lowercase hex digits"), "{e}");

    // A NaN loss (a submission the nan-inf gate rejects) is stored, and reads back as NaN.
    let mut r = record("c", 0.3, Verdict::Rejected, 0);
    r.runs[0].losses[1] = f64::NAN;
    let id = insert(&mut store, &r, &EvaluationMeta::default()).id;
    let back = store.read().evaluation(id).unwrap().unwrap().record;
    assert!(back.runs[0].losses[1].is_nan());

    // An error inside a write rolls all of it back.
    let good = record("d", 0.3, Verdict::Accepted, 0);
    let e = store
        .write(|l| {
            l.insert_evaluation(&good, &EvaluationMeta::default())?;
            l.append_weights(&weights(1, &sha("d"), CPU))?;
            l.append_weights(&WeightsEntry {
                weights: vec![f64::NAN, 1.0],
                ..weights(2, &sha("d"), CPU)
            })
        })
        .unwrap_err();
    assert!(e.to_string().contains("a weight of NaN"), "{e}");
    // So does a panic.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _: Result<(), StoreError> = store.write(|l| {
            l.insert_evaluation(&good, &EvaluationMeta::default())?;
            panic!("in the middle of a write")
        });
    }));
    assert!(caught.is_err());
    let read = store.read();
    assert_eq!(
        read.resolve(&sha("d")[..8]).unwrap_err().to_string(),
        format!(
            "no evaluation or submission matches {}; `crusades results list` shows them",
            &sha("d")[..8]
        )
    );
    assert!(read.weights_history(None, 10).unwrap().is_empty());
    assert_eq!(
        read.evaluations(&EvaluationFilter::default())
            .unwrap()
            .len(),
        2,
        "the block-42 record and the NaN-loss one, nothing of the failed writes"
    );

    // Writes outside Store::write are refused: they would not be one transaction.
    let e = read
        .insert_evaluation(&good, &EvaluationMeta::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::NotInTransaction), "{e}");
    assert!(read.clear_leader(CPU).is_err());
}

#[test]
fn resolve_takes_an_id_or_a_sha256_prefix() {
    let mut store = Store::open_in_memory().unwrap();
    // Two submissions whose sha256s share a 4-digit prefix, found by brute force.
    let names: Vec<String> = {
        let mut seen = std::collections::HashMap::new();
        let mut i = 0u32;
        loop {
            let name = format!("s{i}");
            if let Some(other) = seen.insert(sha(&name)[..4].to_string(), name.clone()) {
                break vec![other, name];
            }
            i += 1;
        }
    };
    let (a, b) = (&names[0], &names[1]);
    let a1 = put(&mut store, &record(a, 0.3, Verdict::Accepted, 0));
    let a2 = put(&mut store, &record(a, 0.35, Verdict::Rejected, 10));
    let b1 = put(&mut store, &record(b, 0.4, Verdict::Accepted, 5));
    let read = store.read();

    let ids = |rows: Vec<crusades_results::store::EvaluationRow>| -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(read.resolve(&a2.to_string()).unwrap()), vec![a2]);
    assert_eq!(ids(read.resolve(&sha(a)[..5]).unwrap()), vec![a2, a1]);
    assert_eq!(
        ids(read.resolve(&sha(a).to_uppercase()).unwrap()),
        vec![a2, a1]
    );
    assert_eq!(ids(read.resolve(&sha(b)).unwrap()), vec![b1]);

    match read.resolve(&sha(a)[..4]).unwrap_err() {
        StoreError::Ambiguous { key, matches } => {
            assert_eq!(key, &sha(a)[..4]);
            let mut expected = vec![
                format!("submission {}", sha(a)),
                format!("submission {}", sha(b)),
            ];
            expected.sort();
            assert_eq!(matches, expected);
        }
        e => panic!("{e}"),
    }
    let e = read.resolve("999").unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "no evaluation or submission matches 999; `crusades results list` shows them"
    );
    assert!(matches!(
        read.resolve("ffff0000").unwrap_err(),
        StoreError::NotFound(_)
    ));
    for key in ["abc", "xyz1", "", "12ab!", &"a".repeat(65)] {
        assert!(
            matches!(read.resolve(key).unwrap_err(), StoreError::InvalidKey(_)),
            "{key}"
        );
    }
}

#[test]
fn a_decimal_key_that_is_also_a_prefix_is_ambiguous() {
    let mut store = Store::open_in_memory().unwrap();
    // "00NN" is evaluation NN and the prefix of a sha256 that starts with it.
    let name = (0..)
        .map(|i| format!("d{i}"))
        .find(|n| {
            let s = sha(n);
            s.starts_with("00") && s[2..4].bytes().all(|b| b.is_ascii_digit()) && &s[2..4] >= "02"
        })
        .unwrap();
    let key = sha(&name)[..4].to_string();
    let id: i64 = key.parse().unwrap();
    // Evaluations with ids up to `id`: the first of `name`, then fillers.
    put(&mut store, &record(&name, 0.3, Verdict::Accepted, 0));
    store
        .write(|l| {
            for i in 1..id {
                l.insert_evaluation(
                    &record("filler", 0.3, Verdict::Accepted, i as u64),
                    &EvaluationMeta::default(),
                )?;
            }
            Ok(())
        })
        .unwrap();
    match store.read().resolve(&key).unwrap_err() {
        StoreError::Ambiguous { matches, .. } => assert_eq!(
            matches,
            vec![
                format!("evaluation {id}"),
                format!("submission {}", sha(&name))
            ]
        ),
        e => panic!("{e}"),
    }
}

#[test]
fn evaluations_list_newest_first_and_filter() {
    let mut store = Store::open_in_memory().unwrap();
    let a0 = put(&mut store, &record("a", 0.3, Verdict::Accepted, 100));
    let b0 = put(
        &mut store,
        &on_cuda(record("b", 0.5, Verdict::Accepted, 50)),
    );
    let a1 = put(&mut store, &record("a", 0.2, Verdict::Rejected, 10_000));
    // Two hours ahead of UTC, one hour before a1: its text sorts after a1's, its time before.
    let mut r = record("c", 0.1, Verdict::Accepted, 0);
    let local = parse_rfc3339(&at(10_000)).unwrap() - 3600 + 7200;
    r.created_at = rfc3339(UNIX_EPOCH + Duration::from_secs(local as u64)).replace('Z', "+02:00");
    assert!(r.created_at > at(10_000));
    let c0 = put(&mut store, &r);
    let read = store.read();
    let ids = |f: EvaluationFilter| -> Vec<i64> {
        read.evaluations(&f).unwrap().iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(EvaluationFilter::default()), vec![a1, c0, a0, b0]);
    assert_eq!(
        ids(EvaluationFilter {
            limit: Some(2),
            ..Default::default()
        }),
        vec![a1, c0]
    );
    assert_eq!(
        ids(EvaluationFilter {
            competition: Some(CPU.into()),
            verdict: Some(Verdict::Accepted),
            ..Default::default()
        }),
        vec![c0, a0]
    );
    assert_eq!(
        ids(EvaluationFilter {
            sha256_prefix: Some(sha("a")[..3].to_uppercase()),
            ..Default::default()
        }),
        vec![a1, a0]
    );
    assert_eq!(
        ids(EvaluationFilter {
            competition: Some(CUDA.into()),
            ..Default::default()
        }),
        vec![b0]
    );
    let cuda = read.evaluation(b0).unwrap().unwrap().row;
    assert_eq!(cuda.competition, CUDA);
    assert!(read
        .evaluations(&EvaluationFilter {
            sha256_prefix: Some("*".into()),
            ..Default::default()
        })
        .is_err());

    let competitions = read.competitions().unwrap();
    let names: Vec<(&str, u64, &str)> = competitions
        .iter()
        .map(|c| (c.competition.as_str(), c.evaluations, c.latest_at.as_str()))
        .collect();
    let a1_at = at(10_000);
    let b0_at = at(50);
    assert_eq!(
        names,
        vec![(CPU, 3, a1_at.as_str()), (CUDA, 1, b0_at.as_str())]
    );
}

#[test]
fn submissions_and_scores_group_per_submission_and_competition() {
    let mut store = Store::open_in_memory().unwrap();
    let (a, b, c) = (sha("a"), sha("b"), sha("c"));
    // b is seen first (block-wise), a next, c only on CUDA.
    put(&mut store, &record("b", 0.20, Verdict::Accepted, 0));
    put(&mut store, &record("a", 0.30, Verdict::Accepted, 120));
    put(&mut store, &record("a", 0.10, Verdict::Rejected, 240));
    put(&mut store, &record("a", 0.34, Verdict::Accepted, 360));
    put(
        &mut store,
        &on_cuda(record("a", 0.60, Verdict::Accepted, 480)),
    );
    put(
        &mut store,
        &on_cuda(record("c", 0.70, Verdict::Accepted, 600)),
    );
    put(&mut store, &record("b", 0.22, Verdict::Accepted, 720));
    // Stored out of order: an older accepted evaluation of b arrives last.
    put(&mut store, &record("b", 0.18, Verdict::Accepted, 12));
    let read = store.read();

    let scores = read.scores(CPU).unwrap();
    let got: Vec<(&str, Vec<f64>, u64)> = scores
        .iter()
        .map(|s| (s.sha256.as_str(), s.accepted.clone(), s.evaluations))
        .collect();
    assert_eq!(
        got,
        vec![
            (b.as_str(), vec![0.20, 0.18, 0.22], 3),
            (a.as_str(), vec![0.30, 0.34], 3)
        ]
    );
    assert_eq!(scores[0].first_seen_at, at(0));
    assert_eq!(
        scores[1].first_seen_block,
        block_at(parse_rfc3339(&at(120)).unwrap())
    );
    assert_eq!(scores[1].uid, Some(1));
    let cuda = read.scores(CUDA).unwrap();
    let got: Vec<(&str, Vec<f64>, u64)> = cuda
        .iter()
        .map(|s| (s.sha256.as_str(), s.accepted.clone(), s.evaluations))
        .collect();
    // a was first seen (on CPU) before c.
    assert_eq!(
        got,
        vec![(a.as_str(), vec![0.60], 1), (c.as_str(), vec![0.70], 1)]
    );
    assert!(read.scores("0.1.0/tiny/cpu").unwrap().is_empty());

    let subs = read.submissions(None).unwrap();
    let got: Vec<(&str, u64, u64, Option<f64>)> = subs
        .iter()
        .map(|s| (s.sha256.as_str(), s.evaluations, s.accepted, s.best_score))
        .collect();
    assert_eq!(
        got,
        vec![
            (c.as_str(), 1, 1, Some(0.70)),
            (a.as_str(), 4, 3, Some(0.60)),
            (b.as_str(), 3, 3, Some(0.22)),
        ]
    );
    let subs = read.submissions(Some(CPU)).unwrap();
    let got: Vec<(&str, u64, Option<f64>)> = subs
        .iter()
        .map(|s| (s.sha256.as_str(), s.evaluations, s.best_score))
        .collect();
    assert_eq!(
        got,
        vec![(a.as_str(), 3, Some(0.34)), (b.as_str(), 3, Some(0.22))]
    );
}

#[test]
fn leader_state_changes_and_weights_history() {
    let mut store = Store::open_in_memory().unwrap();
    let (a, b) = (sha("a"), sha("b"));
    put(&mut store, &record("a", 0.3, Verdict::Accepted, 0));
    put(&mut store, &record("b", 0.4, Verdict::Accepted, 10));
    let state = |sha256: &str, block| LeaderState {
        sha256: sha256.into(),
        score: 0.3,
        threshold: 0.01,
        crowned_block: block,
        crowned_at: at(block),
    };
    assert_eq!(store.read().leader(CPU).unwrap(), None);
    store
        .write(|l| {
            l.put_leader(CPU, &state(&a, 1))?;
            l.append_leader_change(&change(&a, 1, None))?;
            l.append_weights(&weights(1, &a, CPU))
        })
        .unwrap();
    store
        .write(|l| {
            l.put_leader(CPU, &state(&b, 2))?;
            l.append_leader_change(&change(&b, 2, Some(&a)))?;
            l.append_weights(&weights(2, &b, CPU))?;
            l.append_weights(&weights(2, &b, CUDA))
        })
        .unwrap();
    let read = store.read();
    assert_eq!(read.leader(CPU).unwrap(), Some(state(&b, 2)));
    assert_eq!(read.leader(CUDA).unwrap(), None);
    assert_eq!(
        read.leader_changes(CPU).unwrap(),
        vec![change(&a, 1, None), change(&b, 2, Some(&a))]
    );
    let history = read.weights_history(Some(CPU), 10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].block, 2);
    assert_eq!(
        history[1],
        WeightsEntry {
            id: Some(1),
            ..weights(1, &a, CPU)
        }
    );
    let all = read.weights_history(None, 2).unwrap();
    assert_eq!(
        all.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![Some(3), Some(2)]
    );
    assert_eq!(all[0].competition, CUDA);
    assert!(read.weights_history(None, 0).unwrap().is_empty());

    // A leader must be a stored submission.
    let e = store
        .write(|l| l.put_leader(CPU, &state(&sha("nobody"), 3)))
        .unwrap_err();
    assert!(matches!(e, StoreError::UnknownSubmission(_)), "{e}");
    store.write(|l| l.clear_leader(CPU)).unwrap();
    assert_eq!(store.read().leader(CPU).unwrap(), None);
    // Mismatched weight vectors are refused.
    let e = store
        .write(|l| {
            l.append_weights(&WeightsEntry {
                uids: vec![1],
                ..weights(4, &a, CPU)
            })
        })
        .unwrap_err();
    assert!(e.to_string().contains("1 uids and 2 weights"), "{e}");
}

// ------------------------------------------------------------------ the file

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn open_creates_a_wal_store_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/er/results.db");
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let id = put(&mut store, &record("a", 0.3, Verdict::Accepted, 0));
    drop(store);
    let conn = raw(&path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.read().evaluation(id).unwrap().unwrap().record,
        record("a", 0.3, Verdict::Accepted, 0)
    );
    // An empty file is a new store (SQLite's own rule).
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        Store::open(&empty).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
    assert_eq!(Store::open_in_memory().unwrap().path(), None);
}

#[test]
fn an_old_store_is_upgraded_with_its_data() {
    assert_eq!(migrations().last().unwrap().0, SCHEMA_VERSION);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    // A store as schema 1 wrote it, filled by hand with schema 1's columns.
    let v1 = Store::open_at_version(&path, 1).unwrap();
    assert_eq!(v1.schema_version().unwrap(), 1);
    drop(v1);
    let r = record("old", 0.25, Verdict::Accepted, 0);
    let json = canonical_json(&r).unwrap();
    {
        let conn = raw(&path);
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        conn.execute(
            "INSERT INTO submissions VALUES (?1, 'hk', 3, 139500, ?2, 7)",
            rusqlite::params![sha("old"), at(0)],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO evaluations (sha256, hotkey, uid, competition, workload_hash, preset, \
             device, verdict, error_code, score, hardware, harness_version, created_at, \
             created_unix, block, record_sha256, record) VALUES (?1, 'hk', 3, ?2, \
             '6c83a1e87b0bea27', 'tiny', 'cpu', 'accepted', NULL, 0.25, 'AMD EPYC 7B13 ×2', \
             '0.1.0', ?3, ?4, 7, ?5, ?6)",
            rusqlite::params![
                sha("old"),
                CPU,
                at(0),
                parse_rfc3339(&at(0)),
                hex::encode(Sha256::digest(json.as_bytes())),
                json
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO leaders VALUES (?1, ?2, 0.25, 0.01, 7, ?3)",
            rusqlite::params![CPU, sha("old"), at(0)],
        )
        .unwrap();
        let has_validator: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('evaluations') WHERE name = 'validator'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_validator, 0);
    }

    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let read = store.read();
    let rows = read.evaluations(&EvaluationFilter::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].validator, None);
    assert_eq!(rows[0].block, 7);
    assert_eq!(read.evaluation(rows[0].id).unwrap().unwrap().record, r);
    assert_eq!(read.leader(CPU).unwrap().unwrap().sha256, sha("old"));
    assert_eq!(read.scores(CPU).unwrap()[0].accepted, vec![0.25]);
    // The same record again is a duplicate of the old row; a new one takes a validator.
    assert!(insert(&mut store, &r, &EvaluationMeta::default()).duplicate);
    let meta = EvaluationMeta {
        validator: Some("5Fval".into()),
        ..Default::default()
    };
    let id = insert(
        &mut store,
        &record("old", 0.26, Verdict::Accepted, 9),
        &meta,
    )
    .id;
    let row = store.read().evaluation(id).unwrap().unwrap().row;
    assert_eq!(row.validator.as_deref(), Some("5Fval"));
    assert_eq!(row.hotkey, None);
    let subs = store.read().submissions(None).unwrap();
    assert_eq!(
        (subs[0].hotkey.as_deref(), subs[0].uid),
        (Some("hk"), Some(3))
    );
    // Opening again changes nothing.
    drop(store);
    assert_eq!(
        Store::open(&path).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_schema_2_store_gains_the_daemon_tables_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    // Schema 2 is today's evaluations, leaders and weights: a schema 2 crusades wrote them
    // with the same statements.
    let mut v2 = Store::open_at_version(&path, 2).unwrap();
    assert_eq!(v2.schema_version().unwrap(), 2);
    let r = record("old", 0.25, Verdict::Accepted, 0);
    let meta = EvaluationMeta {
        validator: Some("5Fval".into()),
        ..Default::default()
    };
    let id = insert(&mut v2, &r, &meta).id;
    v2.write(|l| {
        l.put_leader(
            CPU,
            &LeaderState {
                sha256: sha("old"),
                score: 0.25,
                threshold: 0.01,
                crowned_block: 7,
                crowned_at: at(0),
            },
        )?;
        l.append_leader_change(&change(&sha("old"), 7, None))?;
        l.append_weights(&WeightsEntry {
            source: "set".into(),
            ..weights(7, &sha("old"), CPU)
        })
    })
    .unwrap();
    drop(v2);
    let tables = |path: &Path| -> Vec<String> {
        let conn = raw(path);
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    };
    assert!(!tables(&path).contains(&"commitments".to_string()));

    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let t = tables(&path);
    assert!(
        t.contains(&"commitments".to_string()) && t.contains(&"daemon_state".to_string()),
        "{t:?}"
    );
    let read = store.read();
    let stored = read.evaluation(id).unwrap().unwrap();
    assert_eq!(stored.record, r);
    assert_eq!(stored.row.validator.as_deref(), Some("5Fval"));
    assert_eq!(read.leader(CPU).unwrap().unwrap().sha256, sha("old"));
    assert_eq!(read.leader_changes(CPU).unwrap().len(), 1);
    assert_eq!(read.last_weights_set(Some(CPU)).unwrap().unwrap().block, 7);
    assert_eq!(
        read.evaluation_of_submission(&sha("old"), CPU, Some("5Fval"))
            .unwrap(),
        Some(id)
    );
    assert!(read.commitments(None, None).unwrap().is_empty());
    assert_eq!(read.state("last_block").unwrap(), None);
    // The new tables take writes, and a commitment links to the old evaluation.
    let prefix = &sha("old")[..32];
    store
        .write(|l| {
            let c = l.observe_commitment(&crusades_results::queue::NewCommitment {
                netuid: 3,
                hotkey: "5Fhot",
                uid: Some(3),
                block: 8,
                raw: b"old",
                parsed: Ok((prefix, "https://example.com/old.wasm")),
            })?;
            l.finish_commitment(c.id, &sha("old"), id)?;
            l.set_state("last_block", "8")
        })
        .unwrap();
    assert_eq!(
        store.read().commitments(None, None).unwrap()[0].evaluation_id,
        Some(id)
    );
    drop(store);
    assert_eq!(
        Store::open(&path).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_newer_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let mut store = Store::open(&path).unwrap();
    put(&mut store, &record("a", 0.3, Verdict::Accepted, 0));
    drop(store);
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    match &e {
        StoreError::TooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        e => panic!("{e}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "{} was written by a newer crusades (schema {}; this one reads up to {}): upgrade \
             crusades, or use another --db",
            path.display(),
            SCHEMA_VERSION + 1,
            SCHEMA_VERSION
        )
    );
    assert!(e.is_input_error());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.path().join("results.db-wal").exists());
}

#[test]
fn a_foreign_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // Not SQLite at all.
    let path = dir.path().join("notes.txt");
    let text = b"these are not the rows you are looking for\n".repeat(200);
    std::fs::write(&path, &text).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::NotADatabase { .. }), "{e}");
    assert!(e.to_string().contains("is not an SQLite database"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), text);
    // The SQLite header and garbage after it.
    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend(std::iter::repeat_n(0xA5u8, 4096));
    let path = dir.path().join("fake.db");
    std::fs::write(&path, &fake).unwrap();
    assert!(Store::open(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), fake);
    // Another program's database.
    let path = dir.path().join("other.db");
    raw(&path)
        .execute_batch("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
    assert!(e.to_string().contains("not a crusades store"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // A directory.
    let e = Store::open(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains(&dir.path().display().to_string()),
        "{e}"
    );
}

#[test]
fn damaged_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let mut store = Store::open(&path).unwrap();
    let ids: Vec<i64> = (0..4)
        .map(|i| {
            put(
                &mut store,
                &record(&format!("s{i}"), 0.3, Verdict::Accepted, i),
            )
        })
        .collect();
    store
        .write(|l| l.append_weights(&weights(1, &sha("s0"), CPU)))
        .unwrap();
    let conn = raw(&path);
    conn.execute_batch("PRAGMA ignore_check_constraints = ON")
        .unwrap();
    let json = r#"{"schema": "crusades.record/1", "created_at": 5"#;
    conn.execute(
        "UPDATE evaluations SET record = ?1, record_sha256 = ?2 WHERE id = ?3",
        rusqlite::params![json, hex::encode(Sha256::digest(json)), ids[0]],
    )
    .unwrap();
    conn.execute(
        "UPDATE evaluations SET record = replace(record, '0.3', '0.4') WHERE id = ?1",
        [ids[1]],
    )
    .unwrap();
    conn.execute(
        "UPDATE evaluations SET verdict = 'maybe' WHERE id = ?1",
        [ids[2]],
    )
    .unwrap();
    conn.execute("UPDATE evaluations SET block = -5 WHERE id = ?1", [ids[3]])
        .unwrap();
    conn.execute("UPDATE weights SET uids = '[1, \"x\"'", [])
        .unwrap();
    drop(conn);

    let read = store.read();
    let e = read.evaluation(ids[0]).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }));
    let text = e.to_string();
    assert!(
        text.contains(&format!("evaluation {}: its record does not read", ids[0]))
            && text.contains(&path.display().to_string()),
        "{text}"
    );
    let e = read.evaluation(ids[1]).unwrap_err();
    assert!(e.to_string().contains("not the one stored"), "{e}");
    let e = read.evaluation(ids[2]).unwrap_err();
    assert!(e.to_string().contains("its verdict is \"maybe\""), "{e}");
    let e = read.evaluations(&EvaluationFilter::default()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let e = read.resolve(&ids[3].to_string()).unwrap_err();
    assert!(e.to_string().contains("its block is -5"), "{e}");
    let e = read.weights_history(None, 5).unwrap_err();
    assert!(e.to_string().contains("its uids do not read"), "{e}");
    assert!(read.scores(CPU).is_err());
}

#[test]
fn two_writers_on_one_file_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    Store::open(&path).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                for i in 0..15 {
                    put(
                        &mut store,
                        &record(&format!("w{w}-{i}"), 0.3, Verdict::Accepted, i),
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.read().submissions(None).unwrap().len(), 30);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever order evaluations arrive in, a submission's first seen is its earliest
    /// evaluation by block, then by time, and every evaluation is counted.
    #[test]
    fn first_seen_is_the_earliest(inserts in prop::collection::vec((0usize..3, 0u64..50, 0u64..5_000), 1..25)) {
        let mut store = Store::open_in_memory().unwrap();
        let mut expected: std::collections::BTreeMap<String, ((u64, u64), u64)> = Default::default();
        for (i, &(who, block, secs)) in inserts.iter().enumerate() {
            let name = format!("p{who}");
            let mut r = record(&name, 0.3, Verdict::Accepted, secs);
            r.evaluation.wall_s = i as f64 + 1.0; // each record distinct
            let meta = EvaluationMeta { block: Some(block), ..Default::default() };
            let ins = insert(&mut store, &r, &meta);
            prop_assert!(!ins.duplicate);
            let e = expected.entry(sha(&name)).or_insert(((block, secs), 0));
            e.0 = e.0.min((block, secs));
            e.1 += 1;
            prop_assert_eq!(ins.new_submission, e.1 == 1);
        }
        let subs = store.read().submissions(None).unwrap();
        prop_assert_eq!(subs.len(), expected.len());
        for s in subs {
            let ((block, secs), n) = expected[&s.sha256];
            prop_assert_eq!(s.first_seen_block, block);
            prop_assert_eq!(s.first_seen_at, at(secs));
            prop_assert_eq!(s.evaluations, n);
        }
    }
}

// ------------------------------------------------------------------ kill -9 mid-write

const CHILD_DB: &str = "CRUSADES_STORE_CRASH_CHILD_DB";
const CHILD_ROUND: &str = "CRUSADES_STORE_CRASH_CHILD_ROUND";
/// Transaction N stops half-way (its evaluation, leader and leader change written, its
/// weights not), says "inside SHA" and waits to be killed.
const CHILD_STALL: &str = "CRUSADES_STORE_CRASH_CHILD_STALL";

fn crash_sha(round: u64, i: u64) -> String {
    sha(&format!("crash {round}/{i}"))
}

/// Not a test on its own: the writer `a_killed_writer_leaves_a_consistent_store` runs (this
/// binary, re-executed) and kills. Each transaction stores an evaluation, crowns it leader,
/// logs the change and appends a weight vector naming it, then reports "committed ID SHA".
/// With [`CHILD_STALL`], one transaction stops half-way.
#[test]
fn crash_child_writer() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let stall: Option<u64> = std::env::var(CHILD_STALL).ok().map(|s| s.parse().unwrap());
    let mut store = Store::open(Path::new(&db)).unwrap();
    let start = Instant::now();
    for i in 0u64.. {
        if start.elapsed() > Duration::from_secs(30) {
            break; // never outlive a parent that failed to kill it
        }
        let sha256 = crash_sha(round, i);
        let secs = round * 100_000 + i;
        let r = record(
            &format!("crash {round}/{i}"),
            0.1 + (i % 50) as f64 / 100.0,
            Verdict::Accepted,
            secs,
        );
        let block = block_at(parse_rfc3339(&r.created_at).unwrap());
        let id = store
            .write(|l| {
                let ins = l.insert_evaluation(&r, &EvaluationMeta::default())?;
                let previous = l.leader(CPU)?;
                l.put_leader(
                    CPU,
                    &LeaderState {
                        sha256: sha256.clone(),
                        score: r.score.as_ref().map_or(0.0, |s| s.mfu),
                        threshold: 0.01,
                        crowned_block: block,
                        crowned_at: r.created_at.clone(),
                    },
                )?;
                l.append_leader_change(&LeaderChange {
                    competition: CPU.into(),
                    block,
                    at: r.created_at.clone(),
                    sha256: sha256.clone(),
                    score: 0.3,
                    previous_score: previous.as_ref().map(|p| p.score),
                    previous_sha256: previous.map(|p| p.sha256),
                    threshold: 0.01,
                })?;
                if stall == Some(i) {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "\ninside {sha256}").unwrap();
                    out.flush().unwrap();
                    std::thread::sleep(Duration::from_secs(30));
                }
                l.append_weights(&WeightsEntry {
                    leader_sha256: Some(sha256.clone()),
                    ..weights(block, &sha256, CPU)
                })?;
                Ok(ins.id)
            })
            .unwrap();
        // Flushed before the next transaction: at most one commit is ever unreported.
        let mut out = std::io::stdout().lock();
        writeln!(out, "committed {id} {sha256}").unwrap();
        out.flush().unwrap();
    }
}

/// xorshift64*: enough randomness for kill delays, with the seed printed to replay a failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn a_killed_writer_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let seed = std::env::var("CRUSADES_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (CRUSADES_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut reported: Vec<(i64, String)> = Vec::new();
    let mut torn = None;
    let rounds = 6;
    for round in 0..rounds {
        // The last round is killed for sure in the middle of a transaction.
        let stall = (round == rounds - 1).then(|| 3 + rng.below(20));
        let mut command = Command::new(std::env::current_exe().unwrap());
        if let Some(n) = stall {
            command.env(CHILD_STALL, n.to_string());
        }
        let mut child = command
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &db)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The first one follows libtest's "test crash_child_writer ... " on its line.
                if let Some((_, rest)) = line.split_once("committed ") {
                    let (id, sha256) = rest.split_once(' ').unwrap();
                    let _ = tx.send((Some(id.parse::<i64>().unwrap()), sha256.to_string()));
                } else if let Some(sha256) = line.strip_prefix("inside ") {
                    let _ = tx.send((None, sha256.to_string()));
                }
            }
        });
        // Round 0 kills it at any moment, maybe while it creates the store; the others after
        // some commits, a random few milliseconds into its next transactions.
        let mut got = Vec::new();
        let mut next = || match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(x) => x,
            Err(e) => {
                let _ = child.kill();
                panic!("round {round}: the writer went silent: {e}");
            }
        };
        if round == 0 {
            std::thread::sleep(Duration::from_millis(rng.below(100)));
        } else if stall.is_some() {
            loop {
                match next() {
                    (Some(id), sha256) => got.push((id, sha256)),
                    (None, sha256) => break torn = Some(sha256),
                }
            }
        } else {
            let want = 5 + rng.below(30) as usize;
            while got.len() < want {
                let (id, sha256) = next();
                got.push((id.unwrap(), sha256));
            }
            std::thread::sleep(Duration::from_micros(rng.below(6_000)));
        }
        // SIGKILL: no destructor, no rollback, no flush.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) },
            0
        );
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: {status}"
        );
        reader.join().unwrap();
        got.extend(rx.try_iter().filter_map(|(id, sha256)| Some((id?, sha256))));
        eprintln!("round {round}: {} commits reported", got.len());
        reported.extend(got);
    }

    let store = Store::open(&db).unwrap();
    let conn = raw(&db);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let fk_problems: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        fk_problems, 0,
        "every evaluation and leader has its submission"
    );
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    let n = count("evaluations");
    assert_eq!(count("submissions"), n);
    assert_eq!(count("leader_changes"), n);
    assert_eq!(count("weights"), n);

    let read = store.read();
    // Every commit reported is there; at most one per round committed but not yet reported.
    let rows = read.evaluations(&EvaluationFilter::default()).unwrap();
    let by_id: std::collections::HashMap<i64, &str> =
        rows.iter().map(|r| (r.id, r.sha256.as_str())).collect();
    for (id, sha256) in &reported {
        assert_eq!(
            by_id.get(id),
            Some(&sha256.as_str()),
            "reported commit {id} is lost"
        );
    }
    assert!(
        rows.len() >= reported.len() && rows.len() <= reported.len() + rounds as usize,
        "{} rows stored, {} commits reported",
        rows.len(),
        reported.len()
    );
    // Each transaction's parts are all there: evaluation k, leader change k and weights k
    // (rowids are dense, nothing was deleted) name the same submission, and every record reads.
    let changes = read.leader_changes(CPU).unwrap();
    let mut history = read.weights_history(None, usize::MAX).unwrap();
    history.reverse();
    let mut rows = rows;
    rows.reverse();
    for (k, ((row, change), entry)) in rows.iter().zip(&changes).zip(&history).enumerate() {
        assert_eq!(row.id, k as i64 + 1);
        assert_eq!(entry.id, Some(row.id));
        assert_eq!(change.sha256, row.sha256);
        assert_eq!(entry.leader_sha256.as_deref(), Some(row.sha256.as_str()));
        let stored = read.evaluation(row.id).unwrap().unwrap();
        assert_eq!(stored.record.submission.sha256, row.sha256);
        if k > 0 {
            assert_eq!(
                change.previous_sha256.as_deref(),
                Some(rows[k - 1].sha256.as_str())
            );
        }
    }
    // The transaction killed half-way left nothing.
    let torn = torn.unwrap();
    assert!(rows.iter().all(|r| r.sha256 != torn));
    assert!(changes.iter().all(|c| c.sha256 != torn));
    let leader = read.leader(CPU).unwrap();
    assert_eq!(
        leader.map(|l| l.sha256),
        rows.last().map(|r| r.sha256.clone())
    );
    assert!(n as usize >= (rounds as usize - 1) * 5);
}

const PEEK_DB: &str = "CRUSADES_STORE_PEEK_DB";

/// Not a test on its own: another process that opens the store, reads and closes it, run by
/// `a_store_opened_twice_in_one_process_keeps_its_writes`.
#[test]
fn peek_child() {
    let Ok(db) = std::env::var(PEEK_DB) else {
        return;
    };
    let store = Store::open(Path::new(&db)).unwrap();
    let k = store.read().state("k").unwrap();
    if let Ok(expect) = std::env::var("CRUSADES_STORE_PEEK_EXPECT") {
        assert_eq!(k.as_deref(), Some(expect.as_str()));
    }
}

/// The validator daemon keeps several connections to one store. Opening one must not pull the
/// POSIX locks from under another: with them gone, the next process to close the store takes
/// itself for the last user, checkpoints and deletes the WAL, and every later commit of the
/// first connection goes to a deleted file (seen: the daemon's work vanished).
#[test]
fn a_store_opened_twice_in_one_process_keeps_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let mut first = Store::open(&db).unwrap();
    first.write(|l| l.set_state("k", "1")).unwrap();
    let mut second = Store::open(&db).unwrap();
    for round in 0..3 {
        let peek = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "peek_child", "--nocapture", "--test-threads=1"])
            .env(PEEK_DB, &db)
            .output()
            .unwrap();
        assert!(peek.status.success(), "{peek:?}");
        first
            .write(|l| l.set_state("k", &format!("a{round}")))
            .unwrap();
        second
            .write(|l| l.set_state("j", &format!("b{round}")))
            .unwrap();
        // What another process sees now: every commit so far.
        let other = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "peek_child", "--nocapture", "--test-threads=1"])
            .env(PEEK_DB, &db)
            .env("CRUSADES_STORE_PEEK_EXPECT", format!("a{round}"))
            .output()
            .unwrap();
        assert!(other.status.success(), "round {round}: {other:?}");
    }
    drop(first);
    drop(second);
    let reopened = Store::open(&db).unwrap();
    assert_eq!(reopened.read().state("k").unwrap().as_deref(), Some("a2"));
    assert_eq!(reopened.read().state("j").unwrap().as_deref(), Some("b2"));
}
