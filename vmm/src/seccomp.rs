//! Per-thread seccomp filters: one allow-list each for the VMM thread, the API
//! threads and the vCPU threads, every entry with the reason cabin needs it.
//!
//! Each thread installs its own filter once it has done everything that needs more
//! (opening files, mapping guest memory, creating KVM descriptors):
//! - a vCPU thread right before its run loop (all its setup ioctls ran in the builder);
//! - the API thread before its loop (it serves every client itself and never creates
//!   a thread, so nothing it does afterwards is lazy setup);
//! - the VMM thread right after the VM is built and its vCPUs started, which with
//!   `--api-sock` happens on InstanceStart, not at process start.
//!
//! A system call outside the list raises SIGSYS (`SeccompAction::Trap`); the handler
//! installed by [`install_sigsys_handler`] puts the terminal back out of raw mode,
//! prints one line naming the call and the thread, and ends cabin with
//! [`EXIT_SECCOMP`]. `cabin run --no-seccomp` turns all
//! filters off, to confirm that a failure is a missing entry.
//!
//! Syscall numbers are x86_64's (cabin's only architecture).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;
use std::io;

use kvm_bindings::{kvm_regs, KVMIO};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

/// Exit status after a blocked system call: 128 + SIGSYS, as if SIGSYS had killed
/// cabin, but distinct from the statuses of the stop signals.
pub const EXIT_SECCOMP: i32 = 128 + libc::SIGSYS;

ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_bindings::kvm_mp_state);
// What a parked vCPU reads for a snapshot.
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_bindings::kvm_sregs);
ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_bindings::kvm_msrs);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_bindings::kvm_lapic_state);
ioctl_ior_nr!(
    KVM_GET_VCPU_EVENTS,
    KVMIO,
    0x9f,
    kvm_bindings::kvm_vcpu_events
);
ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_bindings::kvm_debugregs);
ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_bindings::kvm_xsave);
ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_bindings::kvm_xcrs);
// What the VMM thread reads of the VM for a snapshot.
ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_bindings::kvm_dirty_log);
ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_bindings::kvm_irqchip);
ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_bindings::kvm_clock_data);
ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_bindings::kvm_pit_state2);

/// The kinds of cabin threads, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The VMM thread: event loop, devices' queue processing, lifecycle.
    Vmm,
    /// The API thread.
    Api,
    /// A vCPU thread: KVM_RUN and device register accesses.
    Vcpu,
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadKind::Vmm => "VMM",
            ThreadKind::Api => "API",
            ThreadKind::Vcpu => "vCPU",
        })
    }
}

/// Failures to build or install a filter.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// A rule or condition of a list is malformed (a bug in this file).
    #[error("Invalid seccomp rule in the {0} thread's list")]
    Rule(ThreadKind, #[source] seccompiler::BackendError),
    /// The list could not be turned into a filter or a BPF program.
    #[error("Cannot compile the {0} thread's seccomp filter")]
    Compile(ThreadKind, #[source] seccompiler::BackendError),
    /// The kernel refused the filter (prctl or seccomp failed).
    #[error("Cannot install the {0} thread's seccomp filter")]
    Install(ThreadKind, #[source] seccompiler::Error),
    /// The SIGSYS handler could not be installed.
    #[error("Cannot install the SIGSYS handler for seccomp")]
    Handler(#[source] io::Error),
}

/// The compiled filters of every thread kind, made once at startup so that a bad
/// list fails before anything runs.
#[derive(Clone, Debug)]
pub struct Filters {
    vmm: BpfProgram,
    api: BpfProgram,
    vcpu: BpfProgram,
}

impl Filters {
    /// Compiles the three filters.
    pub fn compile() -> Result<Filters, SeccompError> {
        Ok(Filters {
            vmm: compile(ThreadKind::Vmm)?,
            api: compile(ThreadKind::Api)?,
            vcpu: compile(ThreadKind::Vcpu)?,
        })
    }

    /// The BPF program of one thread kind.
    pub fn program(&self, kind: ThreadKind) -> ThreadFilter {
        let program = match kind {
            ThreadKind::Vmm => &self.vmm,
            ThreadKind::Api => &self.api,
            ThreadKind::Vcpu => &self.vcpu,
        };
        ThreadFilter {
            kind,
            program: program.clone(),
        }
    }
}

/// One thread kind's compiled filter, handed to the thread that installs it.
#[derive(Clone, Debug)]
pub struct ThreadFilter {
    kind: ThreadKind,
    program: BpfProgram,
}

impl ThreadFilter {
    /// Installs the filter on the calling thread, for good (and on the threads it
    /// creates afterwards).
    pub fn apply(&self) -> Result<(), SeccompError> {
        seccompiler::apply_filter(&self.program)
            .map_err(|e| SeccompError::Install(self.kind, e))?;
        log::debug!(
            "seccomp: {} filter installed ({} BPF instructions)",
            self.kind,
            self.program.len()
        );
        Ok(())
    }
}

/// Compiles one thread kind's allow-list into a BPF program.
pub fn compile(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let rules = rules(kind).map_err(|e| SeccompError::Rule(kind, e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Compile(kind, e))?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(kind, e))
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;
type RuleResult<T> = Result<T, seccompiler::BackendError>;

/// The allow-list of one thread kind: syscall number -> rules (empty: any arguments).
pub fn rules(kind: ThreadKind) -> RuleResult<Rules> {
    let specific = match kind {
        ThreadKind::Vmm => vmm_rules()?,
        ThreadKind::Api => api_rules()?,
        ThreadKind::Vcpu => vcpu_rules()?,
    };
    let mut rules = Rules::new();
    for (nr, list) in common_rules()?.into_iter().chain(specific) {
        match rules.entry(nr) {
            Entry::Vacant(entry) => {
                entry.insert(list);
            }
            // No rules means any arguments: that stays so whatever else is added.
            Entry::Occupied(mut entry) if !entry.get().is_empty() && !list.is_empty() => {
                entry.get_mut().extend(list);
            }
            Entry::Occupied(mut entry) => entry.get_mut().clear(),
        }
    }
    Ok(rules)
}

/// The calls of one syscall pass when argument `arg` (32 bits) is one of `values`.
fn arg_in(arg: u8, values: &[u64]) -> RuleResult<Vec<SeccompRule>> {
    values
        .iter()
        .map(|&value| {
            SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                value,
            )?])
        })
        .collect()
}

/// ioctl(0, TCGETS or TCSETS, ..): what tcsetattr(STDIN_FILENO, TCSANOW, ..) makes
/// (glibc reads the settings back after setting them).
fn stdin_termios() -> RuleResult<Vec<SeccompRule>> {
    [libc::TCGETS, libc::TCSETS]
        .into_iter()
        .map(|request| {
            let fd = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::STDIN_FILENO as u64,
            )?;
            let request =
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)?;
            SeccompRule::new(vec![fd, request])
        })
        .collect()
}

/// Every call of the syscall passes.
fn any() -> Vec<SeccompRule> {
    Vec::new()
}

/// What every cabin thread does: allocate, lock, log, end, and report a blocked call.
fn common_rules() -> RuleResult<Vec<(i64, Vec<SeccompRule>)>> {
    Ok(vec![
        // malloc: arenas and large blocks are mmapped.
        (libc::SYS_mmap, any()),
        // free: large blocks are unmapped; thread exit unmaps its signal stack.
        (libc::SYS_munmap, any()),
        // malloc grows a thread arena's heap by changing its protection.
        (libc::SYS_mprotect, any()),
        // free gives trimmed arena pages back; thread exit releases its stack.
        (libc::SYS_madvise, any()),
        // malloc in the main arena (brk heap).
        (libc::SYS_brk, any()),
        // realloc of large (mmapped) blocks.
        (libc::SYS_mremap, any()),
        // Mutex, Condvar, channels and thread join all park on futexes.
        (libc::SYS_futex, any()),
        // std's channels back off with thread::yield_now under contention.
        (libc::SYS_sched_yield, any()),
        // Instant::now and log timestamps when the clocksource has no vDSO path.
        (libc::SYS_clock_gettime, any()),
        // Logging to stderr; guest console output to stdout; eventfd signals (irqfds,
        // the API's and vCPUs' wake-ups of the event loop); TAP frames; the SIGSYS
        // handler's own message.
        (libc::SYS_write, any()),
        // Dropping descriptors (eventfds, sockets, the vCPU fd) when a thread ends.
        (libc::SYS_close, any()),
        // std's debug builds check that a dropped descriptor is open (F_GETFD only).
        (libc::SYS_fcntl, arg_in(1, &[libc::F_GETFD as u64])?),
        // Returning from a signal handler (vCPU kick, signal-hook's stop signals).
        (libc::SYS_rt_sigreturn, any()),
        // Thread exit: std disables and frees the thread's signal stack.
        (libc::SYS_sigaltstack, any()),
        // Thread exit.
        (libc::SYS_exit, any()),
        // Process exit, also the SIGSYS handler's _exit.
        (libc::SYS_exit_group, any()),
        // std seeds a thread's HashMap keys from getrandom on its first HashMap.
        (libc::SYS_getrandom, any()),
        // glibc sizes a new malloc arena by the CPUs it may run on (cabin caps the
        // arenas with mallopt at start, so this is a fallback, never a sysfs read).
        (libc::SYS_sched_getaffinity, any()),
        // signal-hook's handler for SIGTERM, SIGINT and SIGHUP, run on whichever
        // thread the signal lands, wakes the event loop: send(MSG_DONTWAIT) only.
        (libc::SYS_sendto, arg_in(3, &[libc::MSG_DONTWAIT as u64])?),
        // The SIGSYS handler names the thread (PR_GET_NAME only).
        (libc::SYS_prctl, arg_in(0, &[libc::PR_GET_NAME as u64])?),
        // The SIGSYS handler puts the terminal back before _exit (tcsetattr
        // TCSANOW on stdin: TCSETS, then TCGETS, on fd 0 only).
        (libc::SYS_ioctl, stdin_termios()?),
        // glibc blocks signals around pthread_create, pthread_kill and thread exit;
        // abort() (panic=abort) unblocks SIGABRT before raising it.
        (libc::SYS_rt_sigprocmask, any()),
        // pthread_kill and raise() name the target thread by pid ...
        (libc::SYS_getpid, any()),
        // ... and tid ...
        (libc::SYS_gettid, any()),
        // ... with tgkill (SIGABRT only here; the VMM thread adds the vCPU kick).
        (libc::SYS_tgkill, arg_in(2, &[libc::SIGABRT as u64])?),
    ])
}

/// The VMM thread after the VM runs: the event loop and everything it dispatches.
fn vmm_rules() -> RuleResult<Vec<(i64, Vec<SeccompRule>)>> {
    Ok(vec![
        // The event loop waits on its epoll set.
        (libc::SYS_epoll_wait, any()),
        // Watching and unwatching fds (stdin, deferred TAPs, the net RX gate).
        (libc::SYS_epoll_ctl, any()),
        // stdin for the guest console, eventfds (queues, reset, exit, API), TAP
        // frames, block requests.
        (libc::SYS_read, any()),
        // The stop-signal sockets (signal-hook writes a byte; UnixStream::read).
        (libc::SYS_recvfrom, any()),
        // Block requests: each segment is read or written at the sector's offset.
        (libc::SYS_lseek, any()),
        // Block flush requests (File::sync_data).
        (libc::SYS_fdatasync, any()),
        // The terminal: raw mode when the VM starts (isatty, tcgetattr: TCGETS) and
        // restored at exit (tcsetattr TCSANOW: TCSETS); a snapshot reads the VM's
        // interrupt controllers, PIT, clock and dirty-page log.
        (
            libc::SYS_ioctl,
            arg_in(
                1,
                &[
                    libc::TCGETS,
                    libc::TCSETS,
                    // vsock: a host stream accepted from the device's socket is
                    // made nonblocking (std's set_nonblocking).
                    libc::FIONBIO,
                    KVM_GET_DIRTY_LOG(),
                    KVM_GET_IRQCHIP(),
                    KVM_GET_CLOCK(),
                    KVM_GET_PIT2(),
                ],
            )?,
        ),
        // A snapshot's files: sized (ftruncate), written page runs at their
        // offsets (pwrite64), synced, and renamed into place.
        (libc::SYS_ftruncate, any()),
        (libc::SYS_pwrite64, any()),
        (libc::SYS_fsync, any()),
        (libc::SYS_rename, any()),
        (libc::SYS_renameat, any()),
        (libc::SYS_renameat2, any()),
        // Kicking vCPUs out of KVM_RUN for pause and stop (pthread_kill).
        (
            libc::SYS_tgkill,
            arg_in(2, &[crate::vcpu::kick_signal() as u64])?,
        ),
        // At exit, the API socket is checked (symlink_metadata) ...
        (libc::SYS_statx, any()),
        // ... std's fallback when statx is unavailable ...
        (libc::SYS_newfstatat, any()),
        // ... and removed.
        (libc::SYS_unlink, any()),
        // PATCH /drives opens the new backing file of a running guest's drive.
        (libc::SYS_openat, any()),
        // Rate limiters arm their timerfd when a queue is throttled (and the vsock
        // device its close timer).
        (libc::SYS_timerfd_settime, any()),
        // vsock: host processes connect to the device's Unix socket ...
        (libc::SYS_accept4, any()),
        // ... a guest connecting to the host reaches `<uds_path>_<port>` through a
        // new nonblocking Unix stream socket ...
        (libc::SYS_socket, arg_in(0, &[libc::AF_UNIX as u64])?),
        (libc::SYS_connect, any()),
        // ... bytes go out with std's socket write (send with MSG_NOSIGNAL) ...
        (libc::SYS_sendto, arg_in(3, &[libc::MSG_NOSIGNAL as u64])?),
        // ... and a finished direction is shut down.
        (libc::SYS_shutdown, any()),
    ])
}

/// The API thread: one poll loop over the listening socket and every connection.
/// It creates no threads and opens no files: connections come from accept.
fn api_rules() -> RuleResult<Vec<(i64, Vec<SeccompRule>)>> {
    Ok(vec![
        // The loop waits for clients, their bytes, answers and the stop eventfd.
        (libc::SYS_poll, any()),
        // Taking a client (UnixListener::accept).
        (libc::SYS_accept4, any()),
        // Reading requests (UnixStream::read).
        (libc::SYS_recvfrom, any()),
        // The eventfd the VMM thread writes when an answer is ready.
        (libc::SYS_read, any()),
        // Making a client's socket non-blocking (set_nonblocking: FIONBIO).
        (libc::SYS_ioctl, arg_in(1, &[libc::FIONBIO])?),
        // Replies (UnixStream::write is send with MSG_NOSIGNAL: a client that hung up
        // is an EPIPE, not a SIGPIPE).
        (libc::SYS_sendto, arg_in(3, &[libc::MSG_NOSIGNAL as u64])?),
        // Ending a connection's write side after the last reply.
        (libc::SYS_shutdown, any()),
        // Backing off after a failed accept (thread::sleep).
        (libc::SYS_clock_nanosleep, any()),
    ])
}

/// A vCPU thread in its run loop.
fn vcpu_rules() -> RuleResult<Vec<(i64, Vec<SeccompRule>)>> {
    Ok(vec![
        // Only these ioctls: KVM_RUN enters the guest; KVM_GET_REGS reads RIP for a
        // crash report and, with KVM_GET_MP_STATE, tells whether the vCPU halted with
        // interrupts off; TUNSETOFFLOAD when the guest activates or resets a
        // virtio-net device (an MMIO write handled on this thread).
        (
            libc::SYS_ioctl,
            arg_in(
                1,
                &[
                    KVM_RUN(),
                    KVM_GET_REGS(),
                    KVM_GET_MP_STATE(),
                    libc::TUNSETOFFLOAD,
                    // A snapshot: the parked vCPU reads the rest of its state.
                    KVM_GET_SREGS(),
                    KVM_GET_MSRS(),
                    KVM_GET_LAPIC(),
                    KVM_GET_VCPU_EVENTS(),
                    KVM_GET_DEBUGREGS(),
                    KVM_GET_TSC_KHZ(),
                    KVM_GET_XSAVE(),
                    KVM_GET_XCRS(),
                ],
            )?,
        ),
        // A virtio-net device activated by an MMIO write drains frames already
        // waiting on its TAP.
        (libc::SYS_read, any()),
        // The net device's RX gate (an epoll set) opens or closes on activation
        // and reset.
        (libc::SYS_epoll_ctl, any()),
        // ... and the frames it drains may be throttled: the rate limiter arms its
        // timerfd.
        (libc::SYS_timerfd_settime, any()),
    ])
}

/// Sets the SIGSYS handler that reports a blocked system call; once, at startup,
/// before any filter is installed.
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: sigaction is plain old data; all-zero is a valid starting value (no
    // flags, empty mask) that is filled in below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handle_sigsys as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialized and outlives the call; the handler it
    // names only makes async-signal-safe calls (write, prctl, tcsetattr, _exit), one
    // atomic add and one atomic load.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SeccompError::Handler(io::Error::last_os_error()));
    }
    Ok(())
}

/// The head of the kernel's `siginfo_t` for SIGSYS (`include/uapi/asm-generic/
/// siginfo.h`, 64-bit): three ints, padding to pointer alignment, then the
/// `_sigsys` member of the union: `_call_addr`, `_syscall`, `_arch`.
#[repr(C)]
struct SigsysInfo {
    _signo: libc::c_int,
    _errno: libc::c_int,
    _code: libc::c_int,
    _pad: libc::c_int,
    _call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    _arch: libc::c_uint,
}

const _: () = assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());

/// Writes `cabin: seccomp: blocked system call N (thread NAME); ...` to stderr
/// and ends the process. Only async-signal-safe calls: no allocation, no locks.
extern "C" fn handle_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A lock-free atomic add (no lock, no allocation): safe in a signal handler.
    crate::metrics::SECCOMP_FAULTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let syscall = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo_t (SA_SIGINFO) that lives for the
        // handler's duration; for SIGSYS its union holds `_sigsys`, which
        // `SigsysInfo` mirrors, and SigsysInfo is no larger than siginfo_t (checked
        // at compile time above).
        unsafe { (*info.cast::<SigsysInfo>()).syscall }
    };
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into `name`, which
    // has 17; prctl is a plain system call, allowed by every filter for this.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(16);

    let mut line = [0u8; 192];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        for &b in bytes {
            if len < line.len() {
                line[len] = b;
                len += 1;
            }
        }
    };
    push(b"cabin: seccomp: blocked system call ");
    let mut digits = [0u8; 12];
    push(format_decimal(i64::from(syscall), &mut digits));
    push(b" (thread ");
    push(&name[..name_len]);
    push(b"); run with --no-seccomp to confirm and report it\n");
    // Raw mode would otherwise outlive cabin: Drop does not run on _exit.
    crate::stdio::restore_terminal_in_signal_handler();
    // SAFETY: writes `len` initialized bytes of `line` to fd 2; write is
    // async-signal-safe and allowed by every filter.
    unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), len) };
    // SAFETY: _exit ends the process at once without running atexit handlers or
    // touching locks another thread may hold; it is async-signal-safe.
    unsafe { libc::_exit(EXIT_SECCOMP) };
}

/// `value` in decimal, without allocating (for the signal handler).
fn format_decimal(value: i64, buf: &mut [u8; 12]) -> &[u8] {
    let mut n = value.unsigned_abs();
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || start == 1 {
            break;
        }
    }
    if value < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    &buf[start..]
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const CHILD_ENV: &str = "CABIN_SECCOMP_TEST_CHILD";

    #[test]
    fn compile_every_thread_kind_gives_a_bpf_program() {
        for kind in [ThreadKind::Vmm, ThreadKind::Api, ThreadKind::Vcpu] {
            let program = compile(kind).unwrap();
            assert!(!program.is_empty(), "{kind}");
        }
        Filters::compile().unwrap();
    }

    #[test]
    fn rules_each_kind_allows_its_core_calls_only() {
        let vmm = rules(ThreadKind::Vmm).unwrap();
        let api = rules(ThreadKind::Api).unwrap();
        let vcpu = rules(ThreadKind::Vcpu).unwrap();
        assert!(vmm.contains_key(&libc::SYS_epoll_wait));
        assert!(api.contains_key(&libc::SYS_accept4));
        assert!(vcpu.contains_key(&libc::SYS_ioctl));
        assert!(!vcpu.contains_key(&libc::SYS_openat));
        assert!(!api.contains_key(&libc::SYS_execve));
        assert!(!vcpu.contains_key(&libc::SYS_clone3));
        // The API thread serves every client itself: it may not create threads.
        assert!(!api.contains_key(&libc::SYS_clone3));
        assert!(!api.contains_key(&libc::SYS_clone));
        assert!(!api.contains_key(&libc::SYS_openat));
    }

    #[test]
    fn rules_sizes_change_only_on_purpose() {
        // Firecracker allows 50/31/27 for its vmm/api/vcpu threads; a new entry
        // needs a reason in the list and an update here.
        assert_eq!(rules(ThreadKind::Vmm).unwrap().len(), 46);
        assert_eq!(rules(ThreadKind::Api).unwrap().len(), 31);
        assert_eq!(rules(ThreadKind::Vcpu).unwrap().len(), 28);
    }

    #[test]
    fn kvm_ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_GET_MP_STATE(), 0x8004_ae98);
        assert_eq!(KVM_GET_SREGS(), 0x8138_ae83);
        assert_eq!(KVM_GET_MSRS(), 0xc008_ae88);
        assert_eq!(KVM_GET_LAPIC(), 0x8400_ae8e);
        assert_eq!(KVM_GET_VCPU_EVENTS(), 0x8040_ae9f);
        assert_eq!(KVM_GET_DEBUGREGS(), 0x8080_aea1);
        assert_eq!(KVM_GET_TSC_KHZ(), 0xaea3);
        assert_eq!(KVM_GET_XSAVE(), 0x9000_aea4);
        assert_eq!(KVM_GET_XCRS(), 0x8188_aea6);
        assert_eq!(KVM_GET_DIRTY_LOG(), 0x4010_ae42);
        assert_eq!(KVM_GET_IRQCHIP(), 0xc208_ae62);
        assert_eq!(KVM_GET_CLOCK(), 0x8030_ae7c);
        assert_eq!(KVM_GET_PIT2(), 0x8070_ae9f);
    }

    #[test]
    fn format_decimal_prints_numbers_and_signs() {
        let mut buf = [0u8; 12];
        assert_eq!(format_decimal(0, &mut buf), b"0");
        assert_eq!(format_decimal(257, &mut buf), b"257");
        assert_eq!(format_decimal(-1, &mut buf), b"-1");
    }

    /// In the child: installs the vCPU filter, then makes a call it does not allow.
    #[test]
    fn seccomp_child_blocked_call() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        install_sigsys_handler().unwrap();
        Filters::compile()
            .unwrap()
            .program(ThreadKind::Vcpu)
            .apply()
            .unwrap();
        // SAFETY: getppid has no arguments and no memory effects.
        unsafe { libc::getppid() };
        unreachable!("getppid was not blocked");
    }

    const TTY_CHILD_ENV: &str = "CABIN_SECCOMP_TTY_TEST_CHILD";

    /// The settings of the terminal on `fd`.
    fn termios_of(fd: libc::c_int) -> libc::termios {
        // SAFETY: termios is plain old data; all-zero is a valid value to overwrite.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid termios for tcgetattr to fill; a bad fd is an error.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0, "tcgetattr({fd})");
        t
    }

    /// In the child, with a pseudo-terminal as stdin: raw mode, the vCPU filter,
    /// then a call the filter does not allow.
    #[test]
    fn seccomp_child_blocked_call_in_raw_mode() {
        if std::env::var_os(TTY_CHILD_ENV).is_none() {
            return;
        }
        install_sigsys_handler().unwrap();
        let _terminal = crate::stdio::RawTerminal::new().unwrap();
        let raw = termios_of(libc::STDIN_FILENO).c_lflag & libc::ICANON == 0;
        eprintln!("child raw mode: {raw}");
        Filters::compile()
            .unwrap()
            .program(ThreadKind::Vcpu)
            .apply()
            .unwrap();
        // SAFETY: getppid has no arguments and no memory effects.
        unsafe { libc::getppid() };
        unreachable!("getppid was not blocked");
    }

    #[test]
    fn blocked_call_in_raw_mode_restores_the_terminal() {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the two ints; the name,
        // settings and window size pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: openpty just opened both descriptors; nothing else owns them.
        let (_master, slave) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::os::fd::OwnedFd::from_raw_fd(master),
                std::os::fd::OwnedFd::from_raw_fd(slave),
            )
        };
        use std::os::fd::AsRawFd;
        let before = termios_of(slave.as_raw_fd());
        assert_ne!(before.c_lflag & libc::ICANON, 0, "a new pty is canonical");

        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "seccomp::tests::seccomp_child_blocked_call_in_raw_mode",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(TTY_CHILD_ENV, "1")
            .stdin(slave.try_clone().unwrap())
            .output()
            .unwrap();

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(EXIT_SECCOMP), "stderr: {stderr}");
        assert!(stderr.contains("child raw mode: true"), "stderr: {stderr}");
        let after = termios_of(slave.as_raw_fd());
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_iflag, before.c_iflag);
        assert_eq!(after.c_oflag, before.c_oflag);
        assert_eq!(after.c_cc, before.c_cc);
    }

    #[test]
    fn blocked_call_exits_with_seccomp_status_and_one_line() {
        let exe = std::env::current_exe().unwrap();
        let output = Command::new(exe)
            .args([
                "--exact",
                "seccomp::tests::seccomp_child_blocked_call",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(EXIT_SECCOMP), "stderr: {stderr}");
        let expected = format!(
            "cabin: seccomp: blocked system call {} (thread ",
            libc::SYS_getppid
        );
        assert!(stderr.contains(&expected), "stderr: {stderr}");
        assert!(stderr.contains("--no-seccomp"), "stderr: {stderr}");
    }
}
