//! The validator daemon end to end, on a real subtensor runtime (chopsticks on 127.0.0.1) with
//! a local commitments source in the chain's format and the submissions served over loopback
//! HTTP:
//! - it records every commitment (the malformed one as invalid, with its reason), fetches and
//!   evaluates the good ones one at a time, and refuses a wrong hash and a redirect to a
//!   private address without evaluating anything;
//! - killed (SIGKILL) in the middle of the queue and started again, it neither evaluates the
//!   finished submission again nor skips the pending one;
//! - it sets weights on chain for the leader, and `/metrics` and the dashboard answer.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::chopsticks::{dev, prepare_subnet, Chopsticks};
use crusades::chain::client::Subtensor;
use crusades_results::queue::CommitmentStatus;
use crusades_results::store::Store;

const NETUID: u16 = 42;

/// Serves `files` (name → bytes) on 127.0.0.1, plus `/to-private`: a redirect to 10.0.0.1.
/// The first request for `slow` waits 5 s before it answers: the window in which the test
/// kills the daemon, in the middle of its queue.
fn serve(files: Vec<(&'static str, Vec<u8>)>, slow: &'static str) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            use axum::routing::get;
            let mut app = axum::Router::new().route(
                "/to-private",
                get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, "http://10.0.0.1/s.wasm")],
                    )
                }),
            );
            for (name, bytes) in files {
                let delayed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                app = app.route(
                    &format!("/{name}"),
                    get(move || async move {
                        let first = !delayed.swap(true, std::sync::atomic::Ordering::SeqCst);
                        if name == slow && first {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        bytes.clone()
                    }),
                );
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    crusades_sandbox::runner::sha256_hex(bytes)
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: &Path, cache: &Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_crusades"))
            .args(["validate", "--config", config.to_str().unwrap()])
            .env("CRUSADES_CACHE", cache)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the daemon exited ({status}):\n{}", self.log());
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it gives Some, or fails with the daemon's log after `secs`.
fn wait_for<T>(daemon: &mut Daemon, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        daemon.alive();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn status_of(db: &Path) -> Vec<(String, CommitmentStatus, Option<String>, Option<i64>)> {
    let Ok(store) = Store::open(db) else {
        return Vec::new();
    };
    let mut rows = store.read().commitments(None, None).unwrap_or_default();
    rows.sort_by_key(|r| r.id);
    rows.into_iter()
        .map(|r| (r.hotkey, r.status, r.reason, r.evaluation_id))
        .collect()
}

/// GET over a plain TCP connection; None when nothing answers (yet).
fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|| panic!("GET {path} from {addr} failed"))
}

#[test]
fn the_daemon_evaluates_commitments_survives_a_kill_and_sets_weights() {
    let Some(node) = Chopsticks::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (alice, bob, charlie, dave) = (dev("Alice"), dev("Bob"), dev("Charlie"), dev("Dave"));
    let chain = runtime.block_on(async {
        let chain = Subtensor::connect(&node.url, Duration::from_secs(30))
            .await
            .unwrap();
        prepare_subnet(&chain, NETUID, &[&alice, &bob, &charlie, &dave], 1).await;
        chain
    });

    let baseline = std::fs::read(common::baseline_component()).unwrap();
    let fast = std::fs::read(common::fast_component()).unwrap();
    let (baseline_sha, fast_sha) = (sha256(&baseline), sha256(&fast));
    let http = serve(
        vec![("baseline.wasm", baseline), ("fast.wasm", fast)],
        "fast.wasm",
    );

    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let commitments = dir.path().join("commitments.json");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let eve = dev("Eve");
    let ferdie = dev("Ferdie");
    std::fs::write(
        &commitments,
        serde_json::to_string_pretty(&serde_json::json!([
            {"hotkey": bob.ss58(), "block": 5,
             "data": format!("{}:http://{http}/baseline.wasm", &baseline_sha[..32])},
            {"hotkey": charlie.ss58(), "block": 6,
             "data": format!("{}:http://{http}/fast.wasm", &fast_sha[..32])},
            {"hotkey": eve.ss58(), "block": 7, "data": "not a commitment"},
            {"hotkey": ferdie.ss58(), "block": 8,
             "data": format!("{}:http://{http}/fast.wasm", &baseline_sha[..32])},
            {"hotkey": ferdie.ss58(), "block": 9,
             "data": format!("{}:http://{http}/to-private", &fast_sha[..32])},
            // The store cannot hold an entry without a hotkey: left out, the rest recorded.
            {"hotkey": "", "block": 10, "data": "x"},
        ]))
        .unwrap(),
    )
    .unwrap();
    let config = dir.path().join("validator.toml");
    std::fs::write(
        &config,
        format!(
            r#"
netuid = {NETUID}
store = "{db}"

[chain]
url = "{url}"
poll_interval_s = 1
reconnect_min_s = 1
reconnect_max_s = 2

[wallet]
uri = "//Alice"

[commitments]
file = "{commitments}"

[fetch]
allow_loopback = true

[evaluation]
device = "cpu"
preset = "tiny"
runs = 1
warmup = 0
threads = 1
max_attempts = 2
retry_min_s = 1
retry_max_s = 2

[weights]
set_weights_interval_blocks = 2
burn_uid = 3

[http]
listen = "127.0.0.1:{metrics_port}"
"#,
            db = db.display(),
            url = node.url,
            commitments = commitments.display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");

    // First run: stop it (SIGKILL) as soon as the first evaluation is stored, while the
    // second commitment is being fetched (the server holds that answer back for 5 s).
    let mut daemon = Daemon::start(&config, &log, cache.path());
    let first = wait_for(&mut daemon, 900, "the first evaluation", || {
        status_of(&db)
            .into_iter()
            .find(|r| r.1 == CommitmentStatus::Done)
    });
    daemon.kill();
    assert_eq!(first.0, bob.ss58(), "the queue goes by block");
    let rows = status_of(&db);
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[2].1, CommitmentStatus::Invalid, "{rows:?}");
    assert!(rows[2].2.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(rows[1].1, CommitmentStatus::Pending, "{rows:?}");
    let evaluations_before = Store::open(&db)
        .unwrap()
        .read()
        .evaluations(&Default::default())
        .unwrap()
        .len();
    assert_eq!(evaluations_before, 1);

    // Second run: the pending ones are finished, the finished one is not redone.
    let mut daemon = Daemon::start(&config, &log, cache.path());
    let rows = wait_for(&mut daemon, 900, "every commitment to be final", || {
        let rows = status_of(&db);
        (rows.len() == 5 && rows.iter().all(|r| r.1.is_final())).then_some(rows)
    });
    assert_eq!(rows[0].3, first.3, "Bob's evaluation was kept, not redone");
    assert_eq!(rows[1].1, CommitmentStatus::Done, "{rows:?}");
    assert_ne!(rows[1].3, rows[0].3);
    let store = Store::open(&db).unwrap();
    let evaluations = store.read().evaluations(&Default::default()).unwrap();
    assert_eq!(evaluations.len(), 2, "one evaluation per submission");
    let mut shas: Vec<&str> = evaluations.iter().map(|e| e.sha256.as_str()).collect();
    shas.sort();
    let mut expected = [baseline_sha.as_str(), fast_sha.as_str()];
    expected.sort();
    assert_eq!(shas, expected);
    assert!(evaluations
        .iter()
        .all(|e| e.validator.as_deref() == Some(alice.ss58().as_str())));
    let (_, wrong_hash, reason, _) = &rows[3];
    assert_eq!(*wrong_hash, CommitmentStatus::Failed);
    assert!(reason.as_deref().unwrap().contains("sha256"), "{reason:?}");
    let (_, private, reason, _) = &rows[4];
    assert_eq!(*private, CommitmentStatus::Failed);
    assert!(
        reason.as_deref().unwrap().contains("10.0.0.1"),
        "{reason:?}"
    );

    // Weights: the leader's uid (by its hotkey) gets 5 %, the burn uid 3 the rest.
    let competition = evaluations[0].competition.clone();
    let leader = store
        .read()
        .leader(&competition)
        .unwrap()
        .expect("a leader");
    let leader_uid = if leader.sha256 == fast_sha { 2 } else { 1 };
    let weights = wait_for(&mut daemon, 120, "the leader's weights on chain", || {
        // chopsticks builds a block only for an extrinsic; a real chain makes one every 12 s.
        runtime
            .block_on(chain.request("dev_newBlock", serde_json::json!({"count": 2})))
            .ok()?;
        let w = runtime.block_on(chain.weights_of(NETUID, 0)).ok()?;
        w.iter().any(|(uid, _)| *uid == leader_uid).then_some(w)
    });
    let uids: Vec<u16> = weights.iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, [3, leader_uid], "{weights:?}");
    let ratio = weights[1].1 as f64 / weights[0].1 as f64;
    assert!((ratio - 0.05 / 0.95).abs() < 1e-3, "{weights:?}");
    let last_set = store
        .read()
        .last_weights_set(Some(&competition))
        .unwrap()
        .unwrap();
    assert_eq!(
        last_set.leader_sha256.as_deref(),
        Some(leader.sha256.as_str())
    );

    // What the operator sees of the queue.
    let listed = Command::new(env!("CARGO_BIN_EXE_crusades"))
        .args([
            "results",
            "commitments",
            "--db",
            db.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed["counts"],
        serde_json::json!({"invalid": 1, "pending": 0, "done": 2, "failed": 2})
    );
    assert_eq!(listed["commitments"].as_array().unwrap().len(), 5);

    // Operations: /metrics and the in-process dashboard.
    let addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let value =
        |name: &str| metric(addr, name).unwrap_or_else(|| panic!("{name} missing from /metrics"));
    assert_eq!(value("crusades_queue_depth"), 0.0);
    assert_eq!(
        value("crusades_evaluations_done_total"),
        1.0,
        "only Charlie's in this run"
    );
    assert_eq!(value("crusades_evaluations_failed_total"), 2.0);
    assert_eq!(value("crusades_commitments_invalid"), 1.0);
    assert!(value("crusades_last_weights_block") >= 0.0);
    assert!(value("crusades_chain_block") > 0.0);
    let (status, body) = http_get(addr, "/api/leaderboard");
    assert_eq!(status, 200, "{body}");
    let log_text = daemon.log();
    assert!(!log_text.contains("panicked"), "{log_text}");
    assert!(
        log_text.contains("call_data=0x0800"),
        "the weights log names the call data"
    );
    assert!(!log_text.contains("bottom drive"), "a secret in the log");
}

fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = try_get(addr, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))?
        .parse()
        .ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node that is down when the daemon starts, comes up, goes away and comes back: the daemon
/// keeps running, counts the failures, reconnects each time, and sets weights once it can.
#[test]
fn a_dead_node_is_waited_for_and_reconnected() {
    if !Chopsticks::available() {
        // Chopsticks::start says why (and fails under CRUSADES_REQUIRE_CHAIN=1).
        let _ = Chopsticks::start();
        return;
    }
    let port = free_port();
    let metrics_port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let commitments = dir.path().join("commitments.json");
    std::fs::write(&commitments, "[]").unwrap();
    let config = dir.path().join("validator.toml");
    std::fs::write(
        &config,
        format!(
            r#"
netuid = {NETUID}
store = "{db}"
[chain]
url = "ws://127.0.0.1:{port}"
timeout_s = 5
poll_interval_s = 1
reconnect_min_s = 1
reconnect_max_s = 1
[wallet]
uri = "//Alice"
[commitments]
file = "{commitments}"
[evaluation]
device = "cpu"
[weights]
set_weights_interval_blocks = 1
[http]
listen = "127.0.0.1:{metrics_port}"
dashboard = false
"#,
            db = dir.path().join("results.db").display(),
            commitments = commitments.display(),
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &dir.path().join("daemon.log"), cache.path());
    wait_for(&mut daemon, 60, "connection failures to be counted", || {
        (metric(addr, "crusades_chain_rpc_errors_total")? >= 2.0).then_some(())
    });
    assert_eq!(metric(addr, "crusades_chain_connected"), Some(0.0));

    // The node comes up: the daemon connects, and weights (all to the burn uid, no leader
    // yet) land once the subnet exists.
    let node = Chopsticks::start_on(port).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let chain = runtime
        .block_on(Subtensor::connect(&node.url, Duration::from_secs(30)))
        .unwrap();
    runtime.block_on(prepare_subnet(
        &chain,
        NETUID,
        &[&dev("Alice"), &dev("Bob")],
        1,
    ));
    let weights = wait_for(&mut daemon, 120, "weights after the node came up", || {
        runtime
            .block_on(chain.request("dev_newBlock", serde_json::json!({"count": 1})))
            .ok()?;
        let w = runtime.block_on(chain.weights_of(NETUID, 0)).ok()?;
        (!w.is_empty()).then_some(w)
    });
    assert_eq!(weights, [(1, 65535)]);
    assert_eq!(metric(addr, "crusades_chain_connected"), Some(1.0));

    // It goes away and comes back (a fresh chain): the daemon notices and reconnects.
    drop(chain);
    drop(node);
    wait_for(&mut daemon, 60, "the lost connection to be noticed", || {
        (metric(addr, "crusades_chain_connected")? == 0.0).then_some(())
    });
    let _node = Chopsticks::start_on(port).unwrap();
    wait_for(&mut daemon, 60, "a reconnection", || {
        (metric(addr, "crusades_chain_reconnects_total")? >= 1.0
            && metric(addr, "crusades_chain_connected")? == 1.0)
            .then_some(())
    });
    let log = daemon.log();
    assert!(log.contains("cannot connect to the chain"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    // SIGTERM stops it, cleanly and at once.
    unsafe {
        libc::kill(daemon.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop it:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", daemon.log());
    assert!(daemon.log().contains("shutting down"));
}

/// What stops the daemon before it starts: each is exit 2 with the key to fix.
#[test]
fn a_config_that_cannot_work_is_refused_at_start() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_crusades"))
            .args(args)
            .env("HOME", "/nonexistent")
            .env_remove("BT_WALLET_PATH")
            .output()
            .unwrap()
    };
    let printed = run(&["validate", "--print-config"]);
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        crusades::validator::config::EXAMPLE
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    let o = run(&["validate", "--config", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the config"));

    let cases = [
        ("[chain]\nurl = \"http://node\"\n", "ws://"),
        ("[weights]\nburn_rate = 7.0\n", "burn rate"),
        ("[evaluationn]\n", "evaluationn"),
        // The default wallet under a HOME without one.
        (
            "[evaluation]\ndevice = \"cpu\"\n",
            "btcli wallet new_hotkey",
        ),
        (
            "[wallet]\nuri = \"//Alice\"\n[evaluation]\ndevice = \"cpu\"\npreset = \"huge\"\n",
            "[evaluation] preset",
        ),
        (
            "[wallet]\nuri = \"//Alice\"\n[evaluation]\ndevice = \"tpu\"\n",
            "[evaluation] device",
        ),
    ];
    for (i, (body, expect)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        let body = format!("store = \"{}\"\n{body}", dir.path().join("r.db").display());
        std::fs::write(&path, &body).unwrap();
        let o = run(&["validate", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{body}: {err}");
        assert!(err.contains(expect), "{body}: {err}");
    }
}
