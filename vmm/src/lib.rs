//! cabin: a KVM virtual machine monitor. The library behind the `cabin` binary.

pub mod api;
pub mod builder;
pub mod cli;
pub mod config;
pub mod console_input;
pub mod device_manager;
pub mod exec;
pub mod kvm;
pub mod loader;
pub mod logger;
pub mod metrics;
pub mod runner;
pub mod seccomp;
pub mod snapshot;
pub mod stdio;
pub mod vcpu;

use std::error::Error;

/// Exit status when the guest rebooted or powered off.
pub const EXIT_OK: i32 = 0;
/// Exit status when cabin could not start the VM (bad input, host problem).
pub const EXIT_ERROR: i32 = 1;
/// Exit status for command-line syntax errors (clap's convention).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when the guest crashed the VM (triple fault, KVM error, failed entry).
pub const EXIT_GUEST_FAILURE: i32 = 3;
/// Exit status when a guest asked to shut down did not power off in time.
pub const EXIT_SHUTDOWN_TIMEOUT: i32 = 4;
/// Exit status when the guest halted every vCPU with interrupts off.
pub const EXIT_GUEST_HALTED: i32 = 5;

/// glibc malloc arenas cabin allows: one, the main arena, shared by every thread.
/// glibc's other arenas make system calls lazily that a seccomp filter forbids: a
/// new arena, created on a thread's first allocation while others hold theirs, sizes
/// the arena limit by reading `/sys/devices/system/cpu/online`; the first time a
/// thread arena's heap shrinks, glibc reads `/proc/sys/vm/overcommit_memory`. Either
/// killed cabin under load. The main arena grows and shrinks with brk and mmap only,
/// and cabin's threads allocate little, so sharing it costs nothing measurable.
pub const MALLOC_ARENAS: i32 = 1;

/// Process-wide setup that must happen before any thread starts and before any
/// seccomp filter: the malloc arena limit, and a panic hook that prints one line
/// (std's hook can capture a backtrace, which opens files a filter forbids).
pub fn prepare_process() {
    // SAFETY: mallopt only changes glibc's allocator parameters; it is called at
    // start, before cabin has created any thread that could be allocating.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let line = format!(
            "cabin: internal error in thread {}: {message}{place}; please report it\n",
            thread.name().unwrap_or("unnamed")
        );
        // One write, so the line is whole even if other threads write too.
        // SAFETY: writes `line.len()` initialized bytes from `line` to fd 2.
        unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len()) };
    }));
}

/// Formats an error and all its sources on one line: `outer: inner: innermost`.
pub fn error_chain(err: &dyn Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Cannot open /x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_sources_on_one_line() {
        let err = Outer(std::io::Error::from_raw_os_error(libc::ENOENT));
        let line = error_chain(&err);
        assert!(
            line.starts_with("Cannot open /x: No such file or directory"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
