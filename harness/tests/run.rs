//! `crusades build`, `run` and `ops`, driven as a competitor drives them.

mod common;

use std::path::Path;
use std::process::Output;

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

#[test]
fn the_baseline_runs_through_the_worker_and_matches_the_native_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let baseline = root().join("submissions/baseline");
    let built = crusades(&["build", baseline.to_str().unwrap(), "--json"], &cache);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let built = json(&built);
    let component = built["component"].as_str().unwrap().to_string();
    assert_eq!(built["sha256"].as_str().unwrap().len(), 64);
    assert!(Path::new(&component).is_file());

    let out = tmp.path().join("out");
    let o = crusades(
        &[
            "run",
            &component,
            "--preset",
            "tiny",
            "--windows",
            "2",
            "--vs-reference",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = json(&o);
    assert_eq!(r["ok"], true);
    assert_eq!(r["sha256"], built["sha256"]);
    assert_eq!(r["contract_version"], "0.2.0");
    assert_eq!(r["losses"].as_array().unwrap().len(), 2);
    let v = &r["vs_reference"];
    assert_eq!(v["outputs_identical"], true, "{v}");
    assert_eq!(v["losses_identical"], true, "{v}");
    assert!(v["time_ratio"].as_f64().unwrap() > 0.0);
    let run_s = r["timing"]["run_s"].as_f64().unwrap();
    let wall = r["worker_wall_s"].as_f64().unwrap();
    assert!(
        run_s > 0.0 && wall >= run_s,
        "the parent's clock ({wall}) must cover the worker's ({run_s})"
    );
    let ops = r["profile"]["ops"].as_array().unwrap();
    assert!(ops
        .iter()
        .any(|op| op["op"] == "scaled_dot_product_attention"));
    let times: Vec<f64> = ops
        .iter()
        .map(|op| op["seconds"].as_f64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "the profile is sorted by time"
    );
    for f in [
        "weights.safetensors",
        "uploads/w0.safetensors",
        "uploads/w1.safetensors",
        "report.json",
    ] {
        assert!(out.join(f).is_file(), "{f} was not written");
    }

    // The crate directory works as well as the component, and the workload is now cached.
    let human = crusades(
        &[
            "run",
            baseline.to_str().unwrap(),
            "--preset",
            "tiny",
            "--windows",
            "2",
        ],
        &cache,
    );
    assert_eq!(
        human.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&human.stderr)
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("FLOP/s") && text.contains("linear"), "{text}");
    assert!(!String::from_utf8_lossy(&human.stderr).contains("prepared the workload"));
}

#[test]
fn a_failing_submission_exits_3_with_its_failure_code() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"not a module").unwrap();
    let o = crusades(
        &["run", junk.to_str().unwrap(), "--windows", "1", "--json"],
        &cache,
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r = json(&o);
    assert_eq!(r["ok"], false);
    assert_eq!(r["failure"]["code"], "not-wasm");

    let flood = root().join("sandbox/tests/guests/op-flood");
    let o = crusades(
        &[
            "run",
            flood.to_str().unwrap(),
            "--windows",
            "1",
            "--limit",
            "max_ops=5000",
        ],
        &cache,
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("op-limit") && text.contains("max_ops"),
        "{text}"
    );
}

#[test]
fn bad_requests_are_refused_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let o = crusades(&["run", "/no/such/submission"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file or directory"));
    let o = crusades(&["run", "/dev/null", "--limit", "speed=11"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("max_handles"));
    let o = crusades(&["build", tmp.path().to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no Cargo.toml"));
}

#[test]
fn ops_lists_the_registry_with_flop_formulas() {
    let tmp = tempfile::tempdir().unwrap();
    let o = crusades(&["ops", "--json"], tmp.path());
    assert!(o.status.success());
    let r = json(&o);
    let ops = r["ops"].as_array().unwrap();
    let matmul = ops.iter().find(|op| op["name"] == "matmul").unwrap();
    assert_eq!(matmul["flops"], "2·numel(out)·K");
    assert!(ops.len() > 100, "{} ops", ops.len());
}

/// The worker drops what it does not need before the guest runs: a descriptor the harness
/// inherited does not reach it, and after its set-up it can no longer open a socket.
#[test]
fn the_worker_runs_the_guest_without_sockets_or_inherited_descriptors() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let component = common::baseline_component();
    // A descriptor this test leaves open across exec, as a careless supervisor would.
    let leaked = std::fs::File::create(tmp.path().join("leaked")).unwrap();
    let fd = leaked.as_raw_fd();
    // SAFETY: clears close-on-exec on a descriptor this test owns and keeps open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        assert!(flags >= 0);
        assert_eq!(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC), 0);
    }
    let o = crusades(
        &[
            "run",
            component.to_str().unwrap(),
            "--preset",
            "tiny",
            "--windows",
            "1",
            "--json",
        ],
        &tmp.path().join("cache"),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lockdown = &json(&o)["lockdown"];
    assert_eq!(
        lockdown["inherited_fds"],
        serde_json::json!([]),
        "{lockdown}"
    );
    let kernel_has_seccomp = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    if kernel_has_seccomp && cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert_eq!(lockdown["seccomp"], true, "{lockdown}");
        assert_eq!(lockdown["socket_refused"], true, "{lockdown}");
    } else {
        // Where there is no seccomp, the worker says why and carries on.
        let why = lockdown["seccomp_error"].as_str().unwrap_or_default();
        assert!(!why.is_empty(), "{lockdown}");
    }
    drop(leaked);
}
