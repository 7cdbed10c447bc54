//! The worker's lockdown (src/lockdown.rs), applied in a child process (a filter cannot be
//! taken back, so never in the test process itself): afterwards sockets, exec and new
//! processes are refused, while threads, files and tensor work go on.

use std::process::Command;

use crusades_sandbox::lockdown::{self, LockdownReport};

const CHILD: &str = "CRUSADES_LOCKDOWN_CHILD";

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs in the child: locks down, then tries everything and prints one line per probe.
fn probe() {
    let mut report = LockdownReport::default();
    lockdown::restrict_syscalls(&mut report);
    // libtest has printed `test NAME ... ` without a newline.
    println!();
    println!(
        "seccomp={} error={:?}",
        report.seccomp, report.seccomp_error
    );
    println!("socket_refused={}", report.socket_refused);
    // SAFETY: plain syscalls; a success is undone at once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
    println!("unix_socket={}", if fd < 0 { errno() } else { 0 });
    let mut pair = [0; 2];
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
    println!("socketpair={}", if rc < 0 { errno() } else { 0 });
    let exec = Command::new("/bin/true").status();
    println!(
        "exec={}",
        match exec {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(-1),
        }
    );
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { libc::_exit(0) };
    }
    println!("fork={}", if pid < 0 { errno() } else { 0 });
    let thread = std::thread::spawn(|| 6 * 7).join().unwrap_or(0);
    println!("thread={thread}");
    let file = std::env::temp_dir().join(format!("crusades-lockdown-{}", std::process::id()));
    let wrote = std::fs::write(&file, b"ok").is_ok();
    let _ = std::fs::remove_file(&file);
    println!("file={wrote}");
    let sum = tch::Tensor::ones([64, 64], (tch::Kind::Float, tch::Device::Cpu))
        .matmul(&tch::Tensor::ones(
            [64, 64],
            (tch::Kind::Float, tch::Device::Cpu),
        ))
        .sum(tch::Kind::Double)
        .double_value(&[]);
    println!("matmul={sum}");
}

fn child_lines(test: &str) -> Vec<String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains('='))
        .map(str::to_string)
        .collect();
    assert!(
        !lines.is_empty(),
        "the child printed nothing: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

fn kernel_has_seccomp() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
}

#[test]
fn after_lockdown_sockets_exec_and_processes_are_refused_but_threads_and_work_go_on() {
    if std::env::var_os(CHILD).is_some() {
        probe();
        return;
    }
    let lines = child_lines(
        "after_lockdown_sockets_exec_and_processes_are_refused_but_threads_and_work_go_on",
    );
    let get = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {lines:#?}"))
            .to_string()
    };
    // The work a run needs, always.
    assert_eq!(get("thread"), "42", "{lines:#?}");
    assert_eq!(get("file"), "true", "{lines:#?}");
    assert_eq!(
        get("matmul"),
        (64.0 * 64.0 * 64.0).to_string(),
        "{lines:#?}"
    );
    if !kernel_has_seccomp() || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert!(get("seccomp").starts_with("false error=Some"), "{lines:#?}");
        return;
    }
    let eperm = libc::EPERM.to_string();
    assert!(get("seccomp").starts_with("true"), "{lines:#?}");
    assert_eq!(get("socket_refused"), "true", "{lines:#?}");
    assert_eq!(get("unix_socket"), eperm, "{lines:#?}");
    assert_eq!(get("socketpair"), eperm, "{lines:#?}");
    assert_eq!(get("exec"), eperm, "{lines:#?}");
    assert_eq!(get("fork"), eperm, "{lines:#?}");
}

#[test]
fn inherited_descriptors_are_closed_and_reported() {
    if std::env::var_os(CHILD).is_some() {
        // Opened without close-on-exec by the parent test: here they are the inheritance.
        let closed = lockdown::close_inherited_fds();
        println!();
        println!("closed={closed:?}");
        println!("left={:?}", lockdown::open_fds_above_stdio());
        return;
    }
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("inherited")).unwrap();
    let fd = file.as_raw_fd();
    // SAFETY: clears close-on-exec on a descriptor this test owns and keeps open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
    }
    let lines = child_lines("inherited_descriptors_are_closed_and_reported");
    let closed = lines
        .iter()
        .find(|l| l.starts_with("closed="))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(closed.contains(&fd.to_string()), "{lines:#?}");
    assert!(lines.contains(&"left=[]".to_string()), "{lines:#?}");
    drop(file);
}
