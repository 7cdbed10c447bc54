//! chopsticks running the subtensor runtime of ../shared/chain on 127.0.0.1, for the chain and
//! validator tests, and the sudo calls that bring it to a subnet where //Alice can set
//! weights.
//!
//! The tests skip (with a message) when the chain spec ($SUBTENSOR_CHAIN_SPEC) or chopsticks
//! (harness/tests/chain/node_modules, installed by ci/chain-setup, or $CHOPSTICKS) is missing,
//! and fail instead under CRUSADES_REQUIRE_CHAIN=1, as ci/test sets where the spec exists.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crusades::chain::client::{Inclusion, Subtensor};
use crusades::chain::keys::{Hotkey, KeySource};
use subxt::dynamic::{self, Value};

pub struct Chopsticks {
    child: Child,
    pub url: String,
}

impl Drop for Chopsticks {
    fn drop(&mut self) {
        // Its own process group: node and anything it started go together.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn skip(why: &str) -> Option<Chopsticks> {
    if std::env::var("CRUSADES_REQUIRE_CHAIN").is_ok_and(|v| v == "1") {
        panic!("{why} (CRUSADES_REQUIRE_CHAIN=1)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

fn chopsticks_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHOPSTICKS") {
        return Some(PathBuf::from(p));
    }
    let p = super::root().join("harness/tests/chain/node_modules/.bin/chopsticks");
    p.exists().then_some(p)
}

impl Chopsticks {
    /// Starts a fresh chain; None (the test returns) when the spec or chopsticks is missing.
    pub fn start() -> Option<Chopsticks> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Chopsticks::start_on(port)
    }

    /// Whether the tests can start chopsticks here (else they skip, or fail when required).
    pub fn available() -> bool {
        std::env::var_os("SUBTENSOR_CHAIN_SPEC").is_some_and(|s| PathBuf::from(s).is_file())
            && chopsticks_bin().is_some()
    }

    /// As [`Chopsticks::start`], on a given port.
    pub fn start_on(port: u16) -> Option<Chopsticks> {
        let Some(spec) = std::env::var_os("SUBTENSOR_CHAIN_SPEC").map(PathBuf::from) else {
            return skip("SUBTENSOR_CHAIN_SPEC is not set (ci/test sets it to ../shared/chain/subtensor_testfinney_raw.json)");
        };
        if !spec.is_file() {
            return skip(&format!(
                "SUBTENSOR_CHAIN_SPEC={} is not a file",
                spec.display()
            ));
        }
        let Some(bin) = chopsticks_bin() else {
            return skip("chopsticks is not installed (bash ci/chain-setup installs it)");
        };
        let mut child = Command::new(&bin)
            .arg("--chain-spec")
            .arg(&spec)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--build-block-mode",
                "Instant",
                "--allow-unresolved-imports",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut log = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let ready = line.contains("RPC listening");
                    log.push(line);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("chopsticks exited before it listened:\n{}", log.join("\n"))
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chopsticks exited ({status}):\n{}", log.join("\n"));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chopsticks did not listen within 90 s:\n{}",
                log.join("\n")
            );
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Some(Chopsticks {
            child,
            url: format!("ws://127.0.0.1:{port}"),
        })
    }
}

/// The sudo key's storage key: twox128("Sudo") ++ twox128("Key").
const SUDO_KEY: &str = "0x5c0d1176a568c1f92944340dbfed9e9c530ebca703c85910e7164cb7d1c9e47b";

pub fn dev(name: &str) -> Hotkey {
    Hotkey::load(&KeySource::Uri(format!("//{name}").into())).unwrap()
}

async fn sudo(
    chain: &Subtensor,
    key: &Hotkey,
    call: &str,
    fields: Vec<(&str, Value)>,
) -> Inclusion {
    let inner = Value::unnamed_variant(
        "SubtensorModule",
        [Value::named_variant(
            call,
            fields.into_iter().map(|(k, v)| (k.to_string(), v)),
        )],
    );
    let included = chain
        .submit(&dynamic::tx("Sudo", "sudo", vec![inner]), key)
        .await
        .unwrap_or_else(|e| panic!("sudo {call}: {e}"));
    let sudid = included
        .events
        .iter()
        .find(|e| e.pallet == "Sudo" && e.name == "Sudid")
        .unwrap_or_else(|| panic!("sudo {call}: no Sudid event in {:?}", included.events));
    assert!(
        sudid.fields.contains("Ok"),
        "sudo {call} failed: {}",
        sudid.fields
    );
    included
}

/// Makes //Ferdie the sudo key with a balance (not //Alice, the tests' validator: a daemon
/// signing as Alice while the chain is prepared would race it for nonces), adds `netuid` (tempo 360: no epoch runs within a
/// test's few blocks), lets weights be set at every block with one uid at least, registers
/// `neurons` in order (uid 0, 1, …) and gives the first `permits` of them a validator permit.
pub async fn prepare_subnet(chain: &Subtensor, netuid: u16, neurons: &[&Hotkey], permits: usize) {
    let sudo_key = dev("Ferdie");
    let sudo_hex = format!("0x{}", hex::encode(sudo_key.account().0));
    chain
        .request("dev_setStorage", serde_json::json!([[SUDO_KEY, sudo_hex]]))
        .await
        .unwrap();
    chain
        .request(
            "dev_setStorage",
            serde_json::json!({"System": {"Account": [[[sudo_key.ss58()],
                {"providers": 1, "data": {"free": "1000000000000000000"}}]]}}),
        )
        .await
        .unwrap();
    let u = |n: u64| Value::u128(n.into());
    let n = u(netuid.into());
    sudo(
        chain,
        &sudo_key,
        "sudo_add_network",
        vec![("netuid", n.clone()), ("tempo", u(360)), ("modality", u(0))],
    )
    .await;
    sudo(
        chain,
        &sudo_key,
        "sudo_set_weights_set_rate_limit",
        vec![("netuid", n.clone()), ("weights_set_rate_limit", u(0))],
    )
    .await;
    sudo(
        chain,
        &sudo_key,
        "sudo_set_min_allowed_weights",
        vec![("netuid", n.clone()), ("min_allowed_weights", u(1))],
    )
    .await;
    sudo(
        chain,
        &sudo_key,
        "sudo_set_max_weight_limit",
        vec![("netuid", n.clone()), ("max_weight_limit", u(65535))],
    )
    .await;
    for key in neurons {
        let id = Value::from_bytes(key.account().0);
        sudo(
            chain,
            &sudo_key,
            "sudo_register",
            vec![
                ("netuid", n.clone()),
                ("hotkey", id.clone()),
                ("coldkey", id),
                ("stake", u(1_000_000_000)),
                ("balance", u(0)),
            ],
        )
        .await;
    }
    let flags: Vec<bool> = (0..neurons.len()).map(|i| i < permits).collect();
    chain
        .request(
            "dev_setStorage",
            serde_json::json!({"SubtensorModule": {"ValidatorPermit": [[[netuid], flags]]}}),
        )
        .await
        .unwrap();
}
