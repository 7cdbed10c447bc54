//! `crusades build` is reproducible wherever the checkout lies, and `crusades reproduce` re-runs
//! a record: a fresh record reproduces; a tampered one diverges and says why; a record from
//! other hardware is reported as such, not as a divergence; a malformed one is bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::{crusades, root};

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The tests that time runs take turns, and none overlaps the build test's compiling: a
/// reproduction compares timings, which a busy machine skews.
fn quiet() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies what building the submissions needs (the WIT contract and the submissions workspace,
/// without its target/) under `dest`.
fn copy_checkout(dest: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == "target" || name == "exploits" {
                continue;
            }
            let (src, dst) = (entry.path(), to.join(&name));
            if entry.file_type().unwrap().is_dir() {
                copy(&src, &dst);
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
    copy(&root().join("sandbox/wit"), &dest.join("sandbox/wit"));
    copy(&root().join("submissions"), &dest.join("submissions"));
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn the_same_sources_build_to_the_same_sha256_wherever_they_lie() {
    let _quiet = quiet();
    let started = std::time::Instant::now();
    // Two checkouts at paths of different lengths and depths.
    let a = tempfile::Builder::new()
        .prefix("crusades-a-")
        .tempdir()
        .unwrap();
    let b = tempfile::Builder::new()
        .prefix("crusades-bb-")
        .tempdir()
        .unwrap();
    let a_root = a.path().join("checkout");
    let b_root = b.path().join("somewhere/else/entirely");
    let mut built = Vec::new();
    for checkout in [&a_root, &b_root] {
        copy_checkout(checkout);
        let crate_dir = checkout.join("submissions/baseline");
        let o = crusades(
            &["build", crate_dir.to_str().unwrap(), "--json"],
            &checkout.join("cache"),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        built.push(json(&o));
    }
    assert_eq!(
        built[0]["sha256"], built[1]["sha256"],
        "the same sources at two paths gave two components"
    );
    for (b, checkout) in built.iter().zip([a.path(), b.path()]) {
        assert_eq!(b["warnings"], serde_json::json!([]), "{b}");
        for key in ["component", "core_module"] {
            let bytes = std::fs::read(b[key].as_str().unwrap()).unwrap();
            let path = checkout.to_str().unwrap();
            assert!(!contains(&bytes, path), "{key} embeds {path}");
        }
    }
    eprintln!(
        "two cold builds of the baseline: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A cache warmed for tiny (workload, reference outputs, compiled baseline), and a record of
/// the baseline on tiny benched with it: two timed runs, no warm-up, a fixed peak.
struct Fixture {
    cache: tempfile::TempDir,
    record: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // The record's timings are what the reproductions are compared with, so it is benched
        // while nothing else in this binary runs. Every test calls `fixture()` before it takes
        // `quiet()` itself (the lock is not reentrant).
        let _quiet = quiet();
        let cache = tempfile::tempdir().unwrap();
        let record = cache.path().join("record.json");
        let baseline = common::baseline_component();
        let o = crusades(
            &[
                "bench",
                baseline.to_str().unwrap(),
                "--preset",
                "tiny",
                "--runs",
                "2",
                "--warmup",
                "0",
                "--threads",
                "1",
                "--peak-tflops",
                "1",
                "--json",
                "--out",
                record.to_str().unwrap(),
            ],
            cache.path(),
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        Fixture { cache, record }
    })
}

/// The fixture's record as JSON, changed by `edit`, written to a file of its own.
fn tampered(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fixture().record).unwrap()).unwrap();
    edit(&mut r);
    let path = dir.join("tampered.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
    path
}

/// `crusades reproduce RECORD --json` with one worker thread, as the fixture was benched (one
/// thread is also what a busy machine disturbs least).
fn reproduce(record: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value, Output) {
    let f = fixture();
    let mut args = vec![
        "reproduce",
        record.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = crusades(&args, f.cache.path());
    let v = if o.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        json(&o)
    };
    (o.status.code(), v, o)
}

/// `crusades reproduce RECORD --runs 1` with one worker thread, as people read it: the exit
/// code and the report.
fn reproduce_text(record: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "reproduce",
        record.to_str().unwrap(),
        "--threads",
        "1",
        "--runs",
        "1",
    ];
    args.extend_from_slice(extra);
    let o = crusades(&args, fixture().cache.path());
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn reason_codes(v: &serde_json::Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_fresh_record_reproduces() {
    let f = fixture();
    let _quiet = quiet();
    let (code, v, o) = reproduce(&f.record, &[]);
    assert_eq!(
        code,
        Some(0),
        "{v:#}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(v["outcome"], "REPRODUCED");
    assert_eq!(v["hardware_match"], true);
    assert_eq!(v["submission"]["matches"], true);
    assert_eq!(v["peak_from"], "record");
    assert_eq!(v["score"]["compared"], true);
    assert_eq!(v["now"]["runs"], 2, "the record's number of runs");
    // The math is deterministic: the same losses, to the bit.
    assert_eq!(v["losses"]["max_abs_delta"], 0.0, "{v:#}");
    assert_eq!(v["losses"]["windows"], 3);

    // The human report says the same.
    let (code, text) = reproduce_text(&f.record, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.trim_end().ends_with("REPRODUCED"), "{text}");
    for row in [
        "Verdict",
        "Error code",
        "MFU",
        "Tokens/s",
        "Wall",
        "Hardware",
    ] {
        assert!(text.contains(row), "no {row} row: {text}");
    }
}

#[test]
fn a_tampered_score_or_verdict_diverges_and_says_why() {
    let _ = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let _quiet = quiet();

    // A score ten times the one measured: beyond any tolerance (the cap is a factor of 2).
    let record = tampered(tmp.path(), |r| {
        let mfu = r["score"]["mfu"].as_f64().unwrap();
        r["score"]["mfu"] = (mfu * 10.0).into();
    });
    let (code, v, o) = reproduce(&record, &["--runs", "1"]);
    assert_eq!(
        code,
        Some(3),
        "{v:#}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(v["outcome"], "DIVERGED");
    assert_eq!(reason_codes(&v), ["score"], "{v:#}");
    assert_eq!(v["score"]["within"], false);
    assert!(v["score"]["relative_delta"].as_f64().unwrap() < -0.5);

    // A verdict flipped, with the code a rejection would carry.
    let record = tampered(tmp.path(), |r| {
        r["verdict"] = "rejected".into();
        r["error_code"] = "loss-mismatch".into();
    });
    let (code, v, _) = reproduce(&record, &["--runs", "1"]);
    assert_eq!(code, Some(3), "{v:#}");
    assert_eq!(reason_codes(&v), ["verdict", "error-code"], "{v:#}");
    let (code, text) = reproduce_text(&record, &[]);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("DIVERGED: verdict: the verdict is ACCEPTED now, REJECTED in the record"),
        "{text}"
    );
}

#[test]
fn another_submission_diverges_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let record = tampered(tmp.path(), |r| {
        r["submission"]["sha256"] = "0".repeat(64).into();
    });
    let (code, v, _) = reproduce(&record, &[]);
    assert_eq!(code, Some(3), "{v:#}");
    assert_eq!(reason_codes(&v), ["submission"]);
    assert_eq!(v["submission"]["matches"], false);
    assert!(v["now"].is_null(), "nothing ran: {v:#}");
    let message = v["reasons"][0]["message"].as_str().unwrap();
    assert!(message.contains("not the record's 0000"), "{message}");
}

#[test]
fn a_record_from_other_hardware_is_reported_not_diverged() {
    let _ = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let _quiet = quiet();
    // Another CPU, and a score that would diverge on the same one.
    let record = tampered(tmp.path(), |r| {
        r["hardware"]["cpu"]["model"] = "Imaginary CPU 9000".into();
        let mfu = r["score"]["mfu"].as_f64().unwrap();
        r["score"]["mfu"] = (mfu * 10.0).into();
    });
    // No calibration of this machine's peak in a test: a fixed one.
    let (code, v, o) = reproduce(&record, &["--runs", "1", "--peak-tflops", "1"]);
    assert_eq!(
        code,
        Some(0),
        "{v:#}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(v["outcome"], "REPRODUCED");
    assert_eq!(v["hardware_match"], false);
    assert_eq!(v["score"]["compared"], false);
    let mismatch = v["hardware_mismatch"].as_str().unwrap();
    assert!(
        mismatch.starts_with("recorded on Imaginary CPU 9000"),
        "{mismatch}"
    );
    let (code, text) = reproduce_text(&record, &["--peak-tflops", "1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("HARDWARE MISMATCH: recorded on Imaginary CPU 9000")
            && text.contains("the score is shown but not compared"),
        "{text}"
    );
}

#[test]
fn a_malformed_record_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "not-json.json",
            b"{ this is not json",
            "not a crusades record",
        ),
        (
            "other-schema.json",
            br#"{"schema": "crusades.record/0"}"#,
            "record schema",
        ),
        (
            "missing-fields.json",
            br#"{"schema": "crusades.record/1"}"#,
            "not a crusades record",
        ),
    ];
    for (name, text, says) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let o = crusades(&["reproduce", path.to_str().unwrap()], &cache);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    let o = crusades(&["reproduce", "no/such/record.json"], &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the record"));

    // A record whose submission is nowhere to be found: the message says what to pass.
    let record = tampered(tmp.path(), |r| {
        r["submission"]["source"] = "no/such/submission".into();
    });
    let o = crusades(&["reproduce", record.to_str().unwrap()], &cache);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--submission"), "{stderr}");
}
