//! The adversarial corpus (submissions/exploits), end to end through `crusades corpus`: every
//! case ends as its case.toml says, the harness survives all of them in one process, and the
//! honest baseline is still accepted afterwards.

use std::path::Path;
use std::process::Command;

#[test]
fn every_case_of_the_corpus_ends_as_its_manifest_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_crusades"))
        .current_dir(root)
        .args(["corpus", "--json", "--cache"])
        .arg(cache.path())
        .output()
        .expect("the binary runs");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let outcomes = report["outcomes"].as_array().unwrap();
    let unexpected: Vec<String> = outcomes
        .iter()
        .filter(|c| c["as_expected"] != true)
        .map(|c| {
            format!(
                "{}: expected {}, got {} ({})",
                c["case"], c["expected"], c["got"], c["detail"]
            )
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(report["summary"]["harness_errors"], 0);
    let control = outcomes.last().unwrap();
    assert_eq!(control["case"], "control: baseline");
    assert_eq!(control["got"], "accepted");
    // Every rejection names the code its manifest expects, and the time it took.
    for c in outcomes {
        assert!(c["seconds"].as_f64().unwrap() > 0.0, "{c}");
        if c["expected"].as_str().unwrap().starts_with("rejected") {
            assert!(c["code"].is_string(), "{c}");
        }
    }
}
