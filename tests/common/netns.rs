//! Network namespaces with TAPs for the tests that give guests a network: the
//! traffic stays inside a namespace the test made.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{cabin_bin, Cabin};

/// The host's busybox (busybox-static), for `nc` and `ping` on the host side.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Runs a host command to completion; panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace made for one test, with the TAPs created in it. Dropping it
/// deletes the TAPs and the namespace (a cabin still attached to a TAP does not stop
/// either: `ip link del` detaches it).
pub struct Netns {
    pub name: String,
    pub taps: Vec<String>,
}

impl Netns {
    /// A fresh namespace `cabin-<tag>-<pid>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("cabin-{tag}-{}", std::process::id());
        // A leftover of an earlier run with the same pid (a killed test): start clean.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns {
            name,
            taps: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Output {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `PROGRAM ARGS...` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        cmd
    }

    /// Sets a sysctl inside the namespace (the net.* ones are per namespace).
    pub fn sysctl(&self, setting: &str) {
        run_ok(&mut self.command("sysctl", &["-qw", setting]));
    }

    /// Creates TAP `tap` with address `cidr`, link up (no carrier until cabin
    /// attaches).
    pub fn add_tap(&mut self, tap: &str, cidr: &str) {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        self.taps.push(tap.to_owned());
        self.ip(&["addr", "add", cidr, "dev", tap]);
        self.ip(&["link", "set", tap, "up"]);
    }

    /// Starts cabin inside the namespace.
    pub fn spawn_cabin(&self, args: &[&str]) -> Cabin {
        let mut cmd = self.command(cabin_bin(), args);
        Cabin::spawn_with(&mut cmd, false)
    }

    /// Pings `addr` from the namespace with the host's busybox; panics with ping's
    /// output unless some reply came back.
    pub fn ping(&self, addr: &str) -> String {
        let out = run_ok(&mut self.command(HOST_BUSYBOX, &["ping", "-c", "3", "-W", "10", addr]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a TCP socket listens on `port` in the namespace (/proc/net/tcp{,6}
    /// are the namespace's own; busybox nc listens on a dual-stack IPv6 socket when
    /// the kernel has IPv6).
    pub fn listening(&self, port: u16) -> bool {
        // Without IPv6 there is no tcp6 and cat fails, after printing tcp.
        let out = self
            .command("cat", &["/proc/net/tcp", "/proc/net/tcp6"])
            .stderr(Stdio::null())
            .output()
            .expect("cannot run cat in the namespace");
        // "sl local_address rem_address st ...": 0A is TCP_LISTEN.
        let local = format!(":{port:04X}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "0A"
            })
    }

    /// Waits until something listens on `port`; panics after `timeout`.
    pub fn wait_listening(&self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.listening(port) {
            assert!(
                Instant::now() < deadline,
                "nothing listens on port {port} in {}",
                self.name
            );
            // Polling the socket table, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for tap in &self.taps {
            let _ = Command::new("ip")
                .args(["-n", &self.name, "link", "del", tap])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
