//! `crusades serve`: its JSON API over HTTP, and the dashboard in a real browser.
//!
//! Each test seeds a store in a temporary directory, starts `crusades serve --addr
//! 127.0.0.1:0` on it, reads the bound address from its first line, and stops it on drop.
//!
//! The browser test needs Debian's chromium (or $CHROMIUM), Node.js 20+ and playwright-core in
//! harness/tests/e2e/node_modules; `bash ci/e2e-setup` installs them. Without them it skips
//! with a message, unless CRUSADES_REQUIRE_BROWSER=1, where it fails. Its screenshots go to
//! target/e2e/.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crusades_results::leaderboard::{self, ThresholdRule};
use crusades_results::store::{EvaluationMeta, Store};
use crusades_results::testing::sample_record;
use crusades_results::Verdict;
use serde_json::Value;

const A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
const B: &str = "bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222";
const C: &str = "cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333";
const D: &str = "dddd4444dddd4444dddd4444dddd4444dddd4444dddd4444dddd4444dddd4444";
const E: &str = "eeee5555eeee5555eeee5555eeee5555eeee5555eeee5555eeee5555eeee5555";

const TINY: &str = "0.2.0/tiny/cpu";
const SMALL: &str = "0.2.0/small/cpu";

/// What [`seed`] stored.
struct Seeded {
    _dir: tempfile::TempDir,
    db: PathBuf,
    /// The id of B's first (accepted) evaluation and of C's (rejected) one.
    accepted_id: i64,
    rejected_id: i64,
    gates: usize,
    ops: usize,
}

/// A store with two competitions. In `tiny`: A accepted three times (median 0.11), B twice
/// (median 0.155) and rejected once, C only rejected, D once (0.13); A leads first, B takes
/// over. In `small`, one evaluation of E, older than all of them.
fn seed() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let mut store = Store::open(&db).unwrap();
    let rule = ThresholdRule::default();
    let miner = |hotkey: &str, uid: u16| EvaluationMeta {
        hotkey: Some(hotkey.into()),
        uid: Some(uid),
        block: None,
        validator: Some("5ValidatorHotkeyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX".into()),
    };
    let local = EvaluationMeta::default();
    let a = miner("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", 12);
    let b = miner("5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty", 7);
    let mut small = sample_record(E, 0.2, Verdict::Accepted, "2026-11-30T09:00:00Z");
    small.workload.preset = "small".into();
    let evaluations = [
        (small, local.clone()),
        (
            sample_record(A, 0.10, Verdict::Accepted, "2026-12-01T10:00:00Z"),
            a.clone(),
        ),
        (
            sample_record(A, 0.12, Verdict::Accepted, "2026-12-01T11:00:00Z"),
            a.clone(),
        ),
        (
            sample_record(B, 0.15, Verdict::Accepted, "2026-12-01T12:00:00Z"),
            b.clone(),
        ),
        (
            sample_record(C, 0.50, Verdict::Rejected, "2026-12-01T12:30:00Z"),
            local.clone(),
        ),
        (
            sample_record(A, 0.11, Verdict::Accepted, "2026-12-01T13:00:00Z"),
            a.clone(),
        ),
        (
            sample_record(D, 0.13, Verdict::Accepted, "2026-12-01T14:00:00Z"),
            local.clone(),
        ),
        (
            sample_record(B, 0.40, Verdict::Rejected, "2026-12-01T15:00:00Z"),
            b.clone(),
        ),
        (
            sample_record(B, 0.16, Verdict::Accepted, "2026-12-01T16:00:00Z"),
            b.clone(),
        ),
    ];
    let mut ids = Vec::new();
    for (record, meta) in &evaluations {
        let imported = leaderboard::import(&mut store, record, meta, &rule).unwrap();
        assert!(!imported.duplicate);
        ids.push(imported.id);
    }
    let sample = &evaluations[3].0;
    Seeded {
        db,
        _dir: dir,
        accepted_id: ids[3],
        rejected_id: ids[4],
        gates: sample.gates.len(),
        ops: sample.profile.as_ref().unwrap().ops.len(),
    }
}

// ---------------------------------------------------------------------------- the server

/// A running `crusades serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(db: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crusades"))
            .args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(db)
            .env_remove("CRUSADES_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {} // keep the pipe drained
        });
        let mut server = Server {
            child,
            addr: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("`crusades serve` prints its address within a minute");
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        server.addr = addr.to_string();
        server
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn get(&self, path: &str) -> Response {
        self.request("GET", path)
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "GET {path}"
        );
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The JSON error of a request that must fail with `status`.
    fn error(&self, path: &str, status: u16) -> String {
        let r = self.get(path);
        assert_eq!(r.status, status, "GET {path}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "GET {path}"
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["error"].as_str().expect("an error message").to_string()
    }

    /// One HTTP/1.1 request on its own connection (`Connection: close`).
    fn request(&self, method: &str, path: &str) -> Response {
        let mut s = TcpStream::connect(&self.addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("reads the response");
        Response::parse(&raw)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete HTTP response");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        if chunked {
            body = dechunk(&body);
        }
        Response {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
}

fn shas(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["sha256"].as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------- the API

#[test]
fn api_serves_the_store_and_never_submission_code() {
    let seeded = seed();
    let server = Server::start(&seeded.db);
    let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();

    // The page and its assets, embedded, with their types and the CSP.
    for (path, ty, needle) in [
        ("/", "text/html; charset=utf-8", "<script src=\"/app.js\""),
        ("/app.js", "text/javascript; charset=utf-8", "mfu-chart"),
        ("/style.css", "text/css; charset=utf-8", ".leader-line"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "GET {path}");
        assert_eq!(r.header("content-type"), Some(ty), "GET {path}");
        assert!(r.text().contains(needle), "GET {path} lacks {needle:?}");
        bodies.push((path.to_string(), r.body));
    }

    // Every answer, page or API, error or not, carries the CSP and nosniff.
    for path in [
        "/",
        "/app.js",
        "/api/competitions",
        "/api/evaluations/424242",
        "/nope",
    ] {
        let r = server.get(path);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'self'"),
            "GET {path}: CSP {csp:?}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "GET {path}"
        );
    }

    let get = |path: &str, bodies: &mut Vec<(String, Vec<u8>)>| -> Value {
        let v = server.json(path);
        bodies.push((path.to_string(), serde_json::to_vec(&v).unwrap()));
        v
    };

    // Competitions: the default is the one evaluated most recently.
    let comps = get("/api/competitions", &mut bodies);
    assert_eq!(comps["default"], TINY);
    let names: Vec<&str> = comps["competitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["competition"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{comps}");
    assert!(names.contains(&TINY) && names.contains(&SMALL), "{comps}");
    assert!(comps["block"].as_u64().unwrap() > 0);

    // The leaderboard: by median, B the leader, C (only rejected) unranked.
    let board = get("/api/leaderboard", &mut bodies);
    assert_eq!(board["competition"], TINY);
    assert_eq!(shas(&board["standings"]), [B, D, A], "{board}");
    let first = &board["standings"][0];
    assert_eq!(first["rank"], 1);
    assert_eq!(first["leader"], true);
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["evaluations"], 3);
    assert_eq!(first["uid"], 7);
    assert!((first["score"].as_f64().unwrap() - 0.155).abs() < 1e-12);
    assert_eq!(board["standings"][2]["accepted"], 3);
    assert_eq!(board["unranked"], 1);
    assert_eq!(board["leader"]["sha256"], B);
    let (leader, t) = (
        board["leader"]["score"].as_f64().unwrap(),
        board["threshold"].as_f64().unwrap(),
    );
    assert!((board["to_beat"].as_f64().unwrap() - leader * (1.0 + t)).abs() < 1e-12);
    // Winner-takes-all with burn: uid 1 burns 95 %, B's uid 7 gets the rest.
    assert_eq!(
        board["weights"]["uids"],
        serde_json::json!([1, 7]),
        "{board}"
    );
    assert_eq!(board["weights"]["winner_sha256"], B);
    assert_eq!(board["weights_rule"]["burn_uid"], 1);
    // A past block, and the other competition.
    let early = get(
        &format!(
            "/api/leaderboard?competition={}&block={}",
            TINY.replace('/', "%2F"),
            board["block"].as_u64().unwrap() - 10
        ),
        &mut bodies,
    );
    assert_eq!(early["block"], board["block"].as_u64().unwrap() - 10);
    let other = get("/api/leaderboard?competition=0.2.0/small/cpu", &mut bodies);
    assert_eq!(shas(&other["standings"]), [E]);

    // Submissions.
    let subs = get("/api/submissions", &mut bodies);
    assert_eq!(subs["submissions"].as_array().unwrap().len(), 5, "{subs}");
    let subs = get(&format!("/api/submissions?competition={TINY}"), &mut bodies);
    assert_eq!(subs["submissions"].as_array().unwrap().len(), 4, "{subs}");

    // Evaluations: newest first, filtered.
    let all = get("/api/evaluations", &mut bodies);
    let all = all["evaluations"].as_array().unwrap().clone();
    assert_eq!(all.len(), 9);
    let times: Vec<&str> = all
        .iter()
        .map(|e| e["created_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let three = get("/api/evaluations?limit=3", &mut bodies);
    assert_eq!(three["evaluations"].as_array().unwrap().len(), 3);
    let of_b = get("/api/evaluations?sha256=BBBB2222", &mut bodies);
    assert_eq!(shas(&of_b["evaluations"]), [B, B, B]);
    let rejected = get("/api/evaluations?verdict=rejected", &mut bodies);
    assert_eq!(shas(&rejected["evaluations"]), [B, C]);
    let small = get(
        "/api/evaluations?competition=0.2.0%2Fsmall%2Fcpu",
        &mut bodies,
    );
    assert_eq!(shas(&small["evaluations"]), [E]);

    // One evaluation: the row, and the record with its gates and profile.
    let one = get(
        &format!("/api/evaluations/{}", seeded.accepted_id),
        &mut bodies,
    );
    assert_eq!(one["evaluation"]["id"], seeded.accepted_id);
    assert_eq!(one["evaluation"]["sha256"], B);
    assert_eq!(one["evaluation"]["verdict"], "accepted");
    assert_eq!(
        one["evaluation"]["hotkey"],
        "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"
    );
    assert_eq!(
        one["record"]["gates"].as_array().unwrap().len(),
        seeded.gates
    );
    assert_eq!(
        one["record"]["profile"]["ops"].as_array().unwrap().len(),
        seeded.ops
    );
    assert_eq!(one["record"]["submission"]["sha256"], B);
    let bad = get(
        &format!("/api/evaluations/{}", seeded.rejected_id),
        &mut bodies,
    );
    assert_eq!(bad["evaluation"]["verdict"], "rejected");
    assert!(bad["evaluation"]["error_code"].is_string());

    // History: the accepted evaluations oldest first, and the changes of leader (A, then B).
    let history = get("/api/history", &mut bodies);
    let points = history["points"].as_array().unwrap();
    assert_eq!(points.len(), 6, "{history}");
    assert_eq!(points[0]["sha256"], A);
    assert!((points[0]["score"].as_f64().unwrap() - 0.10).abs() < 1e-12);
    assert!(points
        .iter()
        .all(|p| p["id"].is_i64() && p["block"].is_u64()));
    let changes = history["leader_changes"].as_array().unwrap();
    assert_eq!(
        shas(&history["leader_changes"]).first(),
        Some(&A),
        "{history}"
    );
    assert_eq!(
        shas(&history["leader_changes"]).last(),
        Some(&B),
        "{history}"
    );
    assert!(changes.len() >= 2);

    // Weights: the current vector (nothing was set, so no history).
    let weights = get(&format!("/api/weights?competition={TINY}"), &mut bodies);
    assert_eq!(weights["current"]["uids"], serde_json::json!([1, 7]));
    assert_eq!(weights["competition"], TINY);
    assert!(weights["history"].as_array().unwrap().is_empty());
    get("/api", &mut bodies);

    // Errors: JSON, with the right status.
    assert!(server
        .error("/api/evaluations/424242", 404)
        .contains("424242"));
    assert!(server.error("/api/evaluations/abc", 400).contains("abc"));
    assert!(server.error("/api/evaluations/-", 400).contains('-'));
    assert!(server
        .error("/api/leaderboard?competition=nope", 404)
        .contains("nope"));
    assert!(server
        .error("/api/leaderboard?block=soon", 400)
        .contains("block"));
    assert!(server
        .error("/api/leaderboard?colour=red", 400)
        .contains("colour"));
    assert!(server
        .error("/api/evaluations?limit=0", 400)
        .contains("limit"));
    assert!(server
        .error("/api/evaluations?limit=many", 400)
        .contains("limit"));
    assert!(server
        .error("/api/evaluations?sha256=xyz", 400)
        .contains("sha256"));
    assert!(server
        .error("/api/evaluations?verdict=maybe", 400)
        .contains("verdict"));
    assert!(server
        .error("/api/evaluations?limit=1&limit=2", 400)
        .contains("twice"));
    assert!(server.error("/api/weights?block=-1", 400).contains("block"));
    assert!(server.error("/api/wasm", 404).contains("/api/wasm"));
    let r = server.get("/submissions/baseline.wasm");
    assert_eq!(r.status, 404);
    assert_eq!(server.request("POST", "/api/leaderboard").status, 405);

    // No answer holds a submission's code: no wasm magic, raw or base64.
    for (path, body) in &bodies {
        assert!(
            !body.windows(4).any(|w| w == b"\0asm"),
            "GET {path} holds wasm bytes"
        );
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("AGFzbQ"), "GET {path} holds base64 wasm");
        assert!(
            !text.contains("\\u0000asm"),
            "GET {path} holds escaped wasm"
        );
    }
}

#[test]
fn an_empty_store_serves_an_empty_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    drop(Store::open(&db).unwrap());
    let server = Server::start(&db);
    let comps = server.json("/api/competitions");
    assert!(comps["competitions"].as_array().unwrap().is_empty());
    assert!(comps["default"].is_null());
    assert!(server
        .error("/api/leaderboard", 404)
        .contains("no evaluation"));
    assert!(server.json("/api/evaluations")["evaluations"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(server.get("/").status, 200);

    // SIGTERM stops it cleanly.
    let mut server = server;
    let pid = server.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop `crusades serve`"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "SIGTERM: {status}");
}

#[test]
fn a_missing_store_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crusades"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("none.db"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("crusades results import"), "{err}");
    assert!(
        !dir.path().join("none.db").exists(),
        "serve must not create a store"
    );
}

// ---------------------------------------------------------------------------- the browser

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// target/ (or $CARGO_TARGET_DIR): this test binary is target/<profile>/deps/dashboard-….
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

/// What the browser test needs and lacks, in words.
fn browser_missing() -> Vec<String> {
    let mut missing = Vec::new();
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        missing.push(format!("chromium ({} does not exist)", chromium.display()));
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            let major: u32 = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                missing.push(format!(
                    "Node.js 20 or later (node --version says {})",
                    v.trim()
                ));
            }
        }
        _ => missing.push("node (Node.js 20 or later) on PATH".into()),
    }
    let pw = root().join("harness/tests/e2e/node_modules/playwright-core/package.json");
    if !pw.is_file() {
        missing.push("playwright-core in harness/tests/e2e/node_modules".into());
    }
    missing
}

#[test]
fn dashboard_renders_in_headless_chromium() {
    let missing = browser_missing();
    if !missing.is_empty() {
        let msg = format!(
            "the dashboard's browser test needs {}; `bash ci/e2e-setup` installs them",
            missing.join(", ")
        );
        if std::env::var("CRUSADES_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("{msg} (CRUSADES_REQUIRE_BROWSER=1)");
        }
        eprintln!("SKIP dashboard_renders_in_headless_chromium: {msg}");
        return;
    }

    let seeded = seed();
    let server = Server::start(&seeded.db);
    let out = target_dir().join("e2e");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let board = server.json("/api/leaderboard");
    let expected = serde_json::json!({
        "rows": 3,
        "leader": B,
        "points": 6,
        "to_beat": board["to_beat"],
        "evaluation": seeded.accepted_id,
        "rejected": seeded.rejected_id,
        "gates": seeded.gates,
        "ops": seeded.ops,
    });

    let script = root().join("harness/tests/e2e/dashboard.mjs");
    let log = out.join("dashboard.log");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(server.url())
        .arg(&out)
        .arg(expected.to_string())
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(out.join("dashboard.stderr")).unwrap(),
        ))
        .spawn()
        .expect("node runs");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.join("dashboard.stderr")).unwrap_or_default();
    eprintln!("{stdout}");
    eprintln!("screenshots (the artifact): {}", out.display());
    match status {
        None => panic!("the browser test took over 3 minutes\n{stdout}\n{stderr}"),
        Some(s) => assert!(
            s.success(),
            "the browser test failed ({s})\n{stdout}\n{stderr}"
        ),
    }
    for png in ["leaderboard.png", "evaluation.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{png} is not a screenshot"
        );
    }
}
