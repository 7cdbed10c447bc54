//! Defense in depth for the worker process. The guest can reach only the contract, so none of
//! this is what keeps a submission in; it limits what a bug on the host's side of the boundary
//! (wasmtime, an op executor, libtorch) could be turned into. After its set-up and before the
//! guest runs, the worker gives up what it no longer needs:
//! - descriptors it inherited beyond stdin, stdout and stderr (the parent marks them
//!   close-on-exec as well, so normally none arrive);
//! - by a seccomp filter on every thread: new sockets, exec, ptrace and the other process's
//!   memory, and new processes (threads stay allowed: libtorch and the deadline ticker make
//!   them as they go).
//!
//! Where the kernel has no seccomp, or the architecture is not one the filter is written for,
//! the worker says so in its report and carries on.

use serde::{Deserialize, Serialize};

/// What the worker gave up, as its report tells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockdownReport {
    /// Descriptors above stderr open when the worker started, which it then closed.
    pub inherited_fds: Vec<i32>,
    /// Whether the seccomp filter is installed on every thread.
    pub seccomp: bool,
    /// Why it is not, when it is not.
    #[serde(default)]
    pub seccomp_error: Option<String>,
    /// The filter's self-check: a `socket()` call after it is installed was refused.
    #[serde(default)]
    pub socket_refused: bool,
}

/// The descriptors above stderr that are open now.
pub fn open_fds_above_stdio() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    // The listing saw its own descriptor, closed by now.
    // SAFETY: F_GETFD only reads a descriptor's flags.
    fds.retain(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0);
    fds.sort_unstable();
    fds
}

/// Closes every descriptor above stderr; returns the ones that were open. Called first thing in
/// the worker, before it opens anything of its own.
pub fn close_inherited_fds() -> Vec<i32> {
    let fds = open_fds_above_stdio();
    let mut closed = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: closing a descriptor number; nothing in this process owns these yet.
        if unsafe { libc::close(fd) } == 0 {
            closed.push(fd);
        }
    }
    closed
}

/// Marks every descriptor above stderr close-on-exec. For the parent, between fork and exec:
/// only async-signal-safe calls, no allocation.
///
/// # Safety
/// Call only in a `pre_exec` hook (or where no other thread can be opening descriptors).
pub unsafe fn cloexec_above_stdio() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        let rc = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
        if rc == 0 {
            return Ok(());
        }
        // Kernels before 5.11: mark them one by one, up to the descriptor limit.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 16) as i32
        } else {
            1024
        };
        for fd in 3..top {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Ok(())
}

/// Installs the seccomp filter on every thread of the process and checks that it holds. Never
/// fails: what could not be done is in the report.
pub fn restrict_syscalls(report: &mut LockdownReport) {
    match install_filter() {
        Ok(()) => {
            report.seccomp = true;
            report.socket_refused = socket_is_refused();
        }
        Err(e) => report.seccomp_error = Some(e),
    }
}

/// Tries to open a socket; true when the kernel refuses.
fn socket_is_refused() -> bool {
    // SAFETY: a plain syscall; a descriptor it returns is closed at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn install_filter() -> Result<(), String> {
    use std::collections::BTreeMap;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };

    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("{e:?}"))?;
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> = [
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_vfork,
    ]
    .into_iter()
    .map(|nr| (nr, Vec::new()))
    .collect();
    // clone makes threads and processes alike; only a thread shares the caller's thread group.
    let not_a_thread = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        0,
    )
    .and_then(|c| SeccompRule::new(vec![c]))
    .map_err(|e| e.to_string())?;
    refused.insert(libc::SYS_clone, vec![not_a_thread]);
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let main: BpfProgram = SeccompFilter::new(refused, SeccompAction::Allow, eperm, arch)
        .and_then(TryInto::try_into)
        .map_err(|e| e.to_string())?;
    // clone3 passes its flags in memory, where a filter cannot look. ENOSYS makes the C library
    // fall back to clone, which the filter above can judge.
    let clone3: BpfProgram = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| e.to_string())?;
    for program in [&main, &clone3] {
        seccompiler::apply_filter_all_threads(program).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn install_filter() -> Result<(), String> {
    Err(format!(
        "the filter is written for Linux on x86_64 and aarch64, not {} on {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    ))
}

/// Asks the kernel to SIGKILL this process when the thread that started it dies: a worker
/// must not outlive a harness that was killed (a validator daemon stopped with SIGKILL would
/// otherwise leave its evaluation running, competing with the one the restart begins).
///
/// # Safety
/// Async-signal-safe (one `prctl`); call it in a `pre_exec` hook.
pub unsafe fn die_with_parent() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
