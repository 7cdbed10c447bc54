//! `crusades results`, `leaderboard` and `weights`, driven as a user drives them, against a
//! store in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crusades_results::testing::sample_record;
use crusades_results::time::{block_at, parse_rfc3339};
use crusades_results::{Record, Verdict};
use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("store/results.db")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_crusades"))
            .args(args)
            .arg("--db")
            .arg(self.db())
            .env_remove("CRUSADES_DB")
            .output()
            .expect("the binary runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "crusades {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    fn write(&self, name: &str, record: &Record) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(record).unwrap()).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {err}");
    assert!(
        err.contains(needle),
        "stderr should mention {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

const A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
const B: &str = "bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222";
const C: &str = "cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333";

fn block_of(at: &str) -> u64 {
    block_at(parse_rfc3339(at).unwrap())
}

#[test]
fn import_list_show_rank_and_weigh() {
    let env = Env::new();
    let a1 = env.write(
        "a1.json",
        &sample_record(A, 0.10, Verdict::Accepted, "2026-12-01T10:00:00Z"),
    );
    let b1 = env.write(
        "b1.json",
        &sample_record(B, 0.15, Verdict::Accepted, "2026-12-01T12:00:00Z"),
    );
    let a2 = env.write(
        "a2.json",
        &sample_record(A, 0.12, Verdict::Accepted, "2026-12-01T13:00:00Z"),
    );
    let a3 = env.write(
        "a3.json",
        &sample_record(A, 0.11, Verdict::Accepted, "2026-12-01T14:00:00Z"),
    );
    let c1 = env.write(
        "c1.json",
        &sample_record(C, 0.50, Verdict::Rejected, "2026-12-01T15:00:00Z"),
    );

    let imported = env.json(&["results", "import", &a1, "--uid", "11"]);
    assert_eq!(imported[0]["leader_change"]["sha256"], A);
    // B beats A by 50 %: it leads, and sets T = 0.5.
    let imported = env.json(&["results", "import", &b1, "--uid", "22", "--hotkey", "5Bhot"]);
    let change = &imported[0]["leader_change"];
    assert_eq!(change["sha256"], B);
    assert_eq!(change["previous_sha256"], A);
    assert!((change["threshold"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    let imported = env.json(&["results", "import", &a2, &a3, &c1, "--uid", "11"]);
    assert!(imported
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["leader_change"].is_null()));
    // Importing the same record again changes nothing.
    let again = env.json(&["results", "import", &a1]);
    assert_eq!(again[0]["duplicate"], true);

    let rows = env.json(&["results", "list"]);
    assert_eq!(rows.as_array().unwrap().len(), 5);
    assert_eq!(rows[0]["sha256"], C, "newest first");
    let rejected = env.json(&["results", "list", "--verdict", "rejected"]);
    assert_eq!(rejected.as_array().unwrap().len(), 1);
    assert_eq!(rejected[0]["error_code"], "loss-mismatch");

    let of_a = env.json(&["results", "show", &A[..8]]);
    assert_eq!(of_a.as_array().unwrap().len(), 3);
    let text = env.ok(&["results", "show", &A[..8]]);
    assert!(
        text.contains("0.2.0/tiny/cpu: 3 evaluations, 3 accepted, median MFU 11.0%"),
        "{text}"
    );
    let id = rows[4]["id"].as_i64().unwrap().to_string();
    let one = env.json(&["results", "show", &id]);
    assert_eq!(one["record"]["submission"]["sha256"], A);
    let text = env.ok(&["results", "show", &id]);
    assert!(
        text.contains("Verification") && text.contains("ACCEPTED"),
        "{text}"
    );

    // Right after B's crowning, T = 0.5: the MFU to beat is 0.15 × 1.5.
    let crowned = block_of("2026-12-01T12:00:00Z");
    let block = crowned.to_string();
    let board = env.json(&["leaderboard", "--block", &block]);
    let lb = &board["leaderboard"];
    assert_eq!(lb["leader"]["sha256"], B);
    assert!((lb["to_beat"].as_f64().unwrap() - 0.225).abs() < 1e-9);
    let standings = lb["standings"].as_array().unwrap();
    assert_eq!(standings.len(), 2, "C was never accepted");
    assert_eq!(lb["unranked"], 1);
    assert_eq!(standings[0]["sha256"], B);
    assert_eq!(standings[1]["sha256"], A);
    assert!(
        (standings[1]["score"].as_f64().unwrap() - 0.11).abs() < 1e-9,
        "the median of A's three"
    );
    assert_eq!(standings[1]["evaluations"], 3);
    assert_eq!(board["weights"]["uids"], serde_json::json!([1, 22]));
    let text = env.ok(&["leaderboard", "--block", &block]);
    assert!(text.contains("MFU to beat  22.5%"), "{text}");

    // Far later, T has decayed to base.
    let later = (crowned + 100_000).to_string();
    let w = env.json(&[
        "weights",
        "--block",
        &later,
        "--burn-uid",
        "3",
        "--burn-rate",
        "0.9",
    ]);
    assert!((w["threshold"].as_f64().unwrap() - 0.01).abs() < 1e-6);
    assert_eq!(w["weights"]["uids"], serde_json::json!([3, 22]));
    let weights: Vec<f64> = serde_json::from_value(w["weights"]["weights"].clone()).unwrap();
    assert!((weights[0] - 0.9).abs() < 1e-12 && (weights[1] - 0.1).abs() < 1e-12);
    assert_eq!(w["recorded"], false);
    let w = env.json(&["weights", "--block", &later, "--record"]);
    assert_eq!(w["recorded"], true);
    // A kept state only moves forward.
    refused(
        &env.run(&["weights", "--block", "5", "--record"]),
        "before the leader was crowned",
    );
}

#[test]
fn bad_input_is_refused_and_nothing_stored_is_lost() {
    let env = Env::new();
    // Reading commands never create a store.
    refused(&env.run(&["leaderboard"]), "no results store");
    refused(&env.run(&["results", "list"]), "no results store");
    assert!(!env.db().exists());

    let good = env.write(
        "good.json",
        &sample_record(A, 0.2, Verdict::Accepted, "2026-12-01T10:00:00Z"),
    );
    env.ok(&["results", "import", &good]);
    let bad = env.dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"schema\": \"crusades.record/1\", \"oops\": ").unwrap();
    let other = env.dir.path().join("other.json");
    std::fs::write(&other, br#"{"schema": "someone.else/9"}"#).unwrap();
    let more = env.write(
        "more.json",
        &sample_record(B, 0.3, Verdict::Accepted, "2026-12-01T11:00:00Z"),
    );
    let o = env.run(&[
        "results",
        "import",
        &more,
        bad.to_str().unwrap(),
        other.to_str().unwrap(),
        "/no/such/record.json",
    ]);
    refused(&o, "nothing imported: 3 of 4 files");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.json")
            && err.contains("someone.else/9")
            && err.contains("/no/such/record.json"),
        "{err}"
    );
    assert_eq!(env.json(&["results", "list"]).as_array().unwrap().len(), 1);

    refused(&env.run(&["results", "show", "99999"]), "99999");
    refused(&env.run(&["results", "show", "ffffffff"]), "ffffffff");
    refused(
        &env.run(&["leaderboard", "--competition", "9.9/huge/tpu"]),
        "9.9/huge/tpu",
    );
    refused(&env.run(&["weights", "--burn-rate", "1.5"]), "burn rate");
    refused(
        &env.run(&["leaderboard", "--threshold-decay", "2"]),
        "decay",
    );

    // A store written by a newer crusades: refused, and left as it was.
    set_user_version(&env.db(), 9_999);
    let before = std::fs::read(env.db()).unwrap();
    refused(&env.run(&["results", "list"]), "newer crusades");
    refused(&env.run(&["results", "import", &more]), "newer crusades");
    assert_eq!(std::fs::read(env.db()).unwrap(), before);

    // Not a database at all.
    std::fs::write(
        env.db(),
        b"these are not the bytes of a database, they are a short note",
    )
    .unwrap();
    let o = env.run(&["results", "list"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    assert_ne!(o.status.code(), Some(0));
}

/// SQLite keeps `PRAGMA user_version` as a big-endian u32 at byte 60 of the file header; the
/// store's last connection checkpoints its WAL on close, so the main file is current.
fn set_user_version(db: &Path, version: u32) {
    let mut bytes = std::fs::read(db).unwrap();
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    bytes[60..64].copy_from_slice(&version.to_be_bytes());
    std::fs::write(db, bytes).unwrap();
}
