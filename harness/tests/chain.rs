//! The weights path end to end on a real subtensor runtime (chopsticks on 127.0.0.1): a
//! store with a leader, `crusades chain weights` (dry run, then signed by //Alice), the
//! `WeightsSet` event, the weights read back from storage; and the refusals a validator
//! meets (no validator permit, no Commitments pallet).

mod common;

use std::process::Output;
use std::time::Duration;

use common::chopsticks::{dev, prepare_subnet, Chopsticks};
use crusades::chain::client::Subtensor;

const NETUID: u16 = 42;

fn crusades(args: &[&str]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crusades"))
        .args(args)
        .env_remove("CRUSADES_DB")
        .output()
        .expect("the binary runs");
    out
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn weights_from_the_store_are_set_on_chain_and_read_back() {
    let Some(node) = Chopsticks::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (alice, bob, charlie) = (dev("Alice"), dev("Bob"), dev("Charlie"));
    let chain = runtime.block_on(async {
        let chain = Subtensor::connect(&node.url, Duration::from_secs(30))
            .await
            .unwrap();
        prepare_subnet(&chain, NETUID, &[&alice, &bob, &charlie], 1).await;
        chain
    });

    // The leader is Charlie's submission (uid 2); the burn uid is 1 (Bob).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let db = db.to_str().unwrap();
    let record = common::root().join("results/records/cpu-tiny-fast.json");
    let import = crusades(&[
        "results",
        "import",
        record.to_str().unwrap(),
        "--db",
        db,
        "--hotkey",
        &charlie.ss58(),
        "--uid",
        "7",
        "--block",
        "1",
    ]);
    assert!(import.status.success(), "{}", text(&import));
    let chain_args = ["--url", &node.url, "--netuid", "42"];

    // The metagraph reads the three registrations.
    let m = crusades(&[&["chain", "metagraph", "--json"][..], &chain_args].concat());
    assert!(m.status.success(), "{}", text(&m));
    let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
    assert_eq!(
        m["neurons"],
        serde_json::json!([[0, alice.ss58()], [1, bob.ss58()], [2, charlie.ss58()]])
    );

    // A dry run prints the call and its encoding, signs nothing, and changes nothing.
    let dry = crusades(
        &[
            &["chain", "weights", "--db", db, "--dry-run", "--json"][..],
            &chain_args,
        ]
        .concat(),
    );
    assert!(dry.status.success(), "{}", text(&dry));
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    // The uid the store holds (7) is stale: the leader's hotkey is uid 2 on chain now.
    assert_eq!(dry["uids"], serde_json::json!([1, 2]));
    assert_eq!(dry["weights_u16"], serde_json::json!([65535, 3449]));
    assert!(dry["inclusion"].is_null());
    // set_weights is call 0 of SubtensorModule (pallet 8): netuid, two compact-length u16
    // vectors, version_key.
    assert_eq!(
        dry["call_data"],
        "0x08002a000801000200".to_string() + "08ffff790d" + "0000000000000000"
    );
    let before = runtime.block_on(chain.weights_of(NETUID, 0)).unwrap();
    assert!(before.is_empty(), "a dry run set weights: {before:?}");

    // Signed by //Alice: included, WeightsSet, and the chain holds the same proportions.
    let set = crusades(
        &[
            &[
                "chain",
                "weights",
                "--db",
                db,
                "--dev-key",
                "//Alice",
                "--json",
            ][..],
            &chain_args,
        ]
        .concat(),
    );
    assert!(set.status.success(), "{}", text(&set));
    let set: serde_json::Value = serde_json::from_slice(&set.stdout).unwrap();
    let events: Vec<String> = set["inclusion"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}.{}",
                e["pallet"].as_str().unwrap(),
                e["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        events.contains(&"SubtensorModule.WeightsSet".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"System.ExtrinsicSuccess".to_string()),
        "{events:?}"
    );
    let stored = runtime.block_on(chain.weights_of(NETUID, 0)).unwrap();
    let (uids, w): (Vec<u16>, Vec<u16>) = stored.iter().copied().unzip();
    assert_eq!(uids, [1, 2]);
    // The runtime keeps weights normalised to sum to 65535; the ratio is what was sent.
    let ratio = w[1] as f64 / w[0] as f64;
    assert!((ratio - 0.05 / 0.95).abs() < 1e-3, "{stored:?}");

    // The history holds both, newest first: the set one, then the dry run.
    let store = crusades_results::store::Store::open(std::path::Path::new(db)).unwrap();
    let history = store.read().weights_history(None, 10).unwrap();
    let sources: Vec<&str> = history.iter().map(|h| h.source.as_str()).collect();
    assert_eq!(sources, ["set", "dry-run"]);
    assert_eq!(history[0].uids, [1, 2]);
    let last = store.read().last_weights_set(None).unwrap().unwrap();
    assert_eq!(last.id, history[0].id);

    // Charlie has no validator permit: the pallet's error, named, with what to do.
    let refused = crusades(
        &[
            &["chain", "weights", "--db", db, "--dev-key", "//Charlie"][..],
            &chain_args,
        ]
        .concat(),
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("SubtensorModule::NoValidatorPermit"), "{err}");
    assert!(err.contains("validator permit"), "{err}");

    // Eve is not registered on the subnet at all.
    let refused = crusades(
        &[
            &["chain", "weights", "--db", db, "--dev-key", "//Eve"][..],
            &chain_args,
        ]
        .concat(),
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("SubtensorModule::"), "{err}");

    // This 2023 runtime has no Commitments pallet: committing says so.
    let commit = crusades(
        &[
            &[
                "chain",
                "commit",
                &"ab".repeat(32),
                "https://example.com/s.wasm",
                "--dev-key",
                "//Bob",
            ][..],
            &chain_args,
        ]
        .concat(),
    );
    assert_ne!(commit.status.code(), Some(0), "{}", text(&commit));
    let err = String::from_utf8_lossy(&commit.stderr);
    assert!(err.contains("Commitments"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_dead_endpoint_is_a_clear_error() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let o = crusades(&["chain", "metagraph", "--url", &url, "--timeout", "5"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot connect") && err.contains(&url),
        "{err}"
    );
    let o = crusades(&["chain", "metagraph", "--url", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ws://"));
}
