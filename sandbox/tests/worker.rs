//! The parent's side of the worker protocol: however the worker dies, the parent gets a
//! failure with a clear code, and lives on. A shell script stands in for the worker binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crusades_reference::config::WorkloadConfig;
use crusades_sandbox::worker::{spawn, Job, Program};
use crusades_sandbox::{FailureCode, Limits};

fn fake_worker(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-worker");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho 'starting up' >&2\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn job(dir: &Path) -> Job {
    Job {
        program: Program::Reference,
        config: WorkloadConfig::from_preset("tiny").unwrap(),
        corpus_file: None,
        token_dtype: None,
        workload_dir: dir.join("workload"),
        device: "cpu".into(),
        limits: Limits {
            timeout_s: 0.5,
            ..Limits::default()
        },
        threads: None,
        grace_s: 0.5,
        snapshots: false,
    }
}

fn failure_of(body: &str) -> crusades_sandbox::Failure {
    let dir = tempfile::tempdir().unwrap();
    let exe = fake_worker(dir.path(), body);
    // Another test thread that forks while this one writes its script makes the child hold
    // the script's write descriptor until it execs: executing the script in that window fails
    // with ETXTBSY. That is the test's race, not the worker protocol's, so try again.
    for _ in 0..20 {
        let f = spawn(&exe, &job(dir.path()), &dir.path().join("out"))
            .expect_err("the worker cannot succeed");
        if !f.message.contains("Text file busy") {
            return f;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} stayed busy (ETXTBSY)", exe.display())
}

#[test]
fn an_abort_is_a_crash_that_names_the_signal_and_shows_the_log() {
    let f = failure_of("kill -ABRT $$");
    assert_eq!(f.code, FailureCode::WorkerCrashed, "{f}");
    assert!(
        f.message.contains("SIGABRT") && f.message.contains("starting up"),
        "{f}"
    );
}

#[test]
fn a_segfault_is_a_crash() {
    let f = failure_of("kill -SEGV $$");
    assert_eq!(f.code, FailureCode::WorkerCrashed, "{f}");
    assert!(f.message.contains("SIGSEGV"), "{f}");
}

#[test]
fn a_sigkill_reads_as_the_oom_killer() {
    let f = failure_of("kill -KILL $$");
    assert_eq!(f.code, FailureCode::WorkerKilled, "{f}");
    assert!(f.message.contains("out-of-memory"), "{f}");
}

#[test]
fn an_exit_without_a_report_is_a_crash() {
    let f = failure_of("exit 7");
    assert_eq!(f.code, FailureCode::WorkerCrashed, "{f}");
    assert!(f.message.contains("status 7"), "{f}");
}

#[test]
fn a_hung_worker_is_killed_after_the_timeout_and_grace() {
    let start = std::time::Instant::now();
    let f = failure_of("sleep 30");
    assert_eq!(f.code, FailureCode::WorkerTimeout, "{f}");
    assert!(
        start.elapsed().as_secs_f64() < 10.0,
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_garbled_report_is_an_internal_error_not_a_panic() {
    let f = failure_of(
        r#"for a in "$@"; do out=$a; done; mkdir -p "$out"; echo '{ nope' > "$out/report.json""#,
    );
    assert_eq!(f.code, FailureCode::Internal, "{f}");
    assert!(f.message.contains("unreadable"), "{f}");
}
