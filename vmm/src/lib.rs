//! cabin: a KVM virtual machine monitor. The library behind the `cabin` binary.

pub mod api;
pub mod builder;
pub mod cli;
pub mod config;
pub mod device_manager;
pub mod kvm;
pub mod loader;
pub mod logger;
pub mod metrics;
pub mod runner;
pub mod seccomp;
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
