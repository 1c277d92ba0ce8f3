//! End-to-end tests of virtio-net over a TAP (`--net tap=NAME[,mac=MAC]`).
//!
//! Each guest test makes its own network namespace (named after the test and this
//! process's pid), creates the TAPs in it, gives them addresses from a private /24
//! used only inside that namespace, and runs cabin there with `ip netns exec`, so no
//! test traffic touches the host's own interfaces. The namespace and its TAPs are
//! removed when the test ends, failed or not.
//!
//! The guest is the busybox rootfs booted from /dev/vda; the shell script passed
//! base64-encoded as `cabin.sh=` configures eth0 with busybox `ip`. A guest that
//! must outlive the host side's work (a ping to it, a transfer to the host) waits
//! for a completion signal: when the host side is done it adds a second address on
//! the TAP, which the guest pings in a bounded loop before it exits.
//!
//! The guest tests need the guest artifacts and native KVM or the sandbox (`make
//! test`, with `--ignored`); the last test needs neither and runs everywhere.

#[path = "common/mod.rs"]
mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::netns::{run_ok, Netns, HOST_BUSYBOX};
use common::{asm, run_cabin, scratch_dir, tiny_elf, write_file, Cabin};

/// Boot to the script's first marker.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// One 64 MiB transfer, plus the checksum on the slower end.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// A host-side command that should finish at once (ip, ping).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Guest memory: room for a 64 MiB file in the guest's tmpfs.
const GUEST_MEMORY_MIB: &str = "512";
/// Size of each TCP transfer.
const TRANSFER_BYTES: usize = 64 << 20;

// --- artifacts and the guest command line ----------------------------------------

fn artifact(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run these tests through `make test`"))
}

/// A private, writable copy of the busybox root image in `dir`.
fn rootfs_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("rootfs.ext4");
    std::fs::copy(artifact("CABIN_ROOTFS"), &copy).unwrap();
    copy
}

/// Standard base64 with padding (what busybox `base64 -d` reads).
fn to_base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let mut bits = 0u32;
        for (i, &byte) in group.iter().enumerate() {
            bits |= u32::from(byte) << (16 - 8 * i);
        }
        for i in 0..4 {
            let sextet = (bits >> (18 - 6 * i)) & 0x3f;
            out.push(if i <= group.len() {
                char::from(ALPHABET[sextet as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// The kernel command line that boots the busybox rootfs and runs `script`.
fn guest_cmdline(script: &str) -> String {
    let cmdline = format!(
        "console=ttyS0 reboot=k panic=-1 quiet root=/dev/vda rw cabin.sh={}",
        to_base64(script.as_bytes())
    );
    // x86 kernels keep at most 2048 bytes of command line.
    assert!(
        cmdline.len() < 2048,
        "guest script too long: {} bytes",
        cmdline.len()
    );
    cmdline
}

/// Guest shell: bring `dev` up with `cidr`, or end the script.
fn guest_if_up(dev: &str, cidr: &str) -> String {
    format!("ip link set {dev} up && ip addr add {cidr} dev {dev} || exit 9\n")
}

/// Guest shell: wait (bounded, about two minutes) until `addr` answers a ping, the
/// host side's signal that it has finished; then end the script with status 0.
fn guest_wait_for_host(addr: &str) -> String {
    format!(
        "i=0; while [ $i -lt 60 ]; do \
         if ping -c 1 -W 2 {addr} >/dev/null 2>&1; then echo HOST-DONE-SEEN; exit 0; fi; \
         i=$((i+1)); done; echo HOST-DONE-MISSING; exit 8\n"
    )
}

/// The value after `key` (up to the next whitespace) on the console, if printed.
fn marker_value(text: &str, key: &str) -> Option<String> {
    let start = text.find(key)? + key.len();
    let value: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    Some(value)
}

// --- the host side ----------------------------------------------------------------

/// A test's scratch directory (rootfs copy, 64 MiB transfer files), removed when the
/// test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch(scratch_dir(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host-side helper process (busybox nc); killed if still running when dropped.
struct HostProcess {
    child: Child,
    /// Held open so that the process never sees end-of-input: busybox nc half-closes
    /// the connection at the end of its input, and a sender that sees the
    /// half-close stops sending.
    _stdin: Option<ChildStdin>,
    what: &'static str,
}

impl HostProcess {
    fn spawn(cmd: &mut Command, what: &'static str) -> HostProcess {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdin = child.stdin.take();
        HostProcess {
            child,
            _stdin: stdin,
            what,
        }
    }

    /// Waits for the process to exit; panics after `timeout` with `context`.
    fn wait(&mut self, timeout: Duration, context: &dyn Fn() -> String) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}\n{}",
                self.what,
                context()
            );
            // Polling the child's exit, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible, and any
/// misplaced, repeated or lost block changes the checksum.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// md5sum of a file, as hex.
fn md5_of(path: &Path) -> String {
    let out = run_ok(Command::new("md5sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Both of cabin's outputs, for assertion messages.
fn outputs(cabin: &Cabin) -> String {
    format!(
        "--- guest console (cabin stdout) ---\n{}\n--- cabin stderr ---\n{}",
        cabin.stdout.text(),
        cabin.stderr.text()
    )
}

/// Common arguments: the project kernel, the rootfs copy as /dev/vda, 512 MiB, the
/// script, then one `--net` per entry of `nets`.
fn cabin_args(kernel: &str, disk: &str, cmdline: &str, nets: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--kernel",
        kernel,
        "--disk",
        disk,
        "--memory",
        GUEST_MEMORY_MIB,
        "--cmdline",
        cmdline,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for net in nets {
        args.push("--net".into());
        args.push(net.clone());
    }
    args
}

/// Boots the busybox rootfs in `ns` with `nets` running `script`.
fn boot_guest(ns: &Netns, dir: &Path, script: &str, nets: &[String]) -> Cabin {
    let kernel = artifact("CABIN_VMLINUX");
    let disk = format!("path={}", rootfs_copy(dir).display());
    let args = cabin_args(&kernel, &disk, &guest_cmdline(script), nets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.spawn_cabin(&args)
}

/// Waits for cabin to exit after the script and checks that the script and cabin
/// both ended with status 0.
fn expect_clean_exit(cabin: &mut Cabin) {
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    let stdout = cabin.stdout.text();
    assert!(
        stdout.contains("CABIN-SH-EXIT=0"),
        "guest script failed\n{}",
        outputs(cabin)
    );
    assert_eq!(
        status.code(),
        Some(0),
        "cabin's exit status\n{}",
        outputs(cabin)
    );
}

// --- the tests --------------------------------------------------------------------

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn ping_both_ways_and_guest_sees_configured_mac() {
    let scratch = Scratch::new("net-ping");
    let dir = &scratch.0;
    let mut ns = Netns::new("ping");
    ns.add_tap("tap0", "10.77.1.1/24");
    let mac = "02:ca:b1:00:01:02";
    let script = format!(
        "{}echo MAC=$(cat /sys/class/net/eth0/address)\n\
         if ping -c 3 -W 10 10.77.1.1 >/tmp/p 2>&1; then echo GUEST-PING-OK; else cat /tmp/p; fi\n\
         echo GUEST-READY\n{}",
        guest_if_up("eth0", "10.77.1.2/24"),
        guest_wait_for_host("10.77.1.3"),
    );
    let mut cabin = boot_guest(&ns, dir, &script, &[format!("tap=tap0,mac={mac}")]);

    cabin.expect_stdout("GUEST-READY", BOOT_TIMEOUT);
    let host_ping = ns.ping("10.77.1.2");
    ns.ip(&["addr", "add", "10.77.1.3/24", "dev", "tap0"]);
    expect_clean_exit(&mut cabin);

    let stdout = cabin.stdout.text();
    assert!(
        stdout.contains("GUEST-PING-OK"),
        "guest -> host ping failed\n{}",
        outputs(&cabin)
    );
    assert!(host_ping.contains("bytes from 10.77.1.2"), "{host_ping}");
    assert_eq!(
        marker_value(&stdout, "MAC=").as_deref(),
        Some(mac),
        "{}",
        outputs(&cabin)
    );
    assert!(stdout.contains("HOST-DONE-SEEN"), "{}", outputs(&cabin));
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn tcp_64mib_each_way_checksums_match() {
    const TO_GUEST_PORT: u16 = 5001;
    const FROM_GUEST_PORT: u16 = 5002;
    let scratch = Scratch::new("net-tcp");
    let dir = &scratch.0;
    let mut ns = Netns::new("tcp");
    ns.add_tap("tap0", "10.77.2.1/24");

    // Host -> guest: the host listens with the file on its input; the guest connects.
    let sent = dir.join("to-guest.bin");
    std::fs::write(&sent, pseudo_random(TRANSFER_BYTES, 0x00c0_ffee_cab1)).unwrap();
    let sent_md5 = md5_of(&sent);
    let mut sender = HostProcess::spawn(
        ns.command(
            HOST_BUSYBOX,
            &["nc", "-l", "-p", &TO_GUEST_PORT.to_string()],
        )
        .stdin(File::open(&sent).unwrap())
        .stdout(Stdio::null()),
        "host sender (nc -l)",
    );
    // Guest -> host: the host listens with an input that stays open (see
    // HostProcess::_stdin) and writes what it receives to a file.
    let received = dir.join("from-guest.bin");
    let mut receiver = HostProcess::spawn(
        ns.command(
            HOST_BUSYBOX,
            &["nc", "-l", "-p", &FROM_GUEST_PORT.to_string()],
        )
        .stdin(Stdio::piped())
        .stdout(File::create(&received).unwrap()),
        "host receiver (nc -l)",
    );
    ns.wait_listening(TO_GUEST_PORT, COMMAND_TIMEOUT);
    ns.wait_listening(FROM_GUEST_PORT, COMMAND_TIMEOUT);

    // The guest's receiving nc reads from a FIFO it holds open (fd 3), for the same
    // reason as the host receiver's open input. `t STEP` prints the guest's uptime
    // after each step, for the timings.
    let script = format!(
        "t() {{ read u _ </proc/uptime; echo T-$1=$u; }}\n\
         {}mkfifo /tmp/hold; t start\n\
         nc 10.77.2.1 {TO_GUEST_PORT} </tmp/hold >/tmp/in & exec 3>/tmp/hold; wait $!; echo RECV-RC=$?; exec 3>&-; t recv\n\
         set -- $(md5sum </tmp/in); t md5in; echo IN-MD5=$1 IN-SIZE=$(wc -c </tmp/in) IN-END; rm /tmp/in\n\
         head -c {TRANSFER_BYTES} /dev/urandom >/tmp/out; t urandom\n\
         set -- $(md5sum </tmp/out); t md5out; echo OUT-MD5=$1\n\
         nc 10.77.2.1 {FROM_GUEST_PORT} </tmp/out; echo SEND-RC=$? SEND-END; t sent\n{}",
        guest_if_up("eth0", "10.77.2.2/24"),
        guest_wait_for_host("10.77.2.3"),
    );
    let started = Instant::now();
    let mut cabin = boot_guest(&ns, dir, &script, &["tap=tap0".to_owned()]);

    cabin.expect_stdout("IN-END", TRANSFER_TIMEOUT);
    let to_guest = started.elapsed();
    let status = sender.wait(COMMAND_TIMEOUT, &|| outputs(&cabin));
    assert!(
        status.success(),
        "host sender: {status} {}",
        sender.stderr_text()
    );
    let stdout = cabin.stdout.text();
    assert!(
        stdout.contains("RECV-RC=0"),
        "guest receiver failed\n{}",
        outputs(&cabin)
    );
    assert_eq!(
        marker_value(&stdout, "IN-SIZE=").as_deref(),
        Some(TRANSFER_BYTES.to_string().as_str()),
        "bytes the guest received\n{}",
        outputs(&cabin)
    );
    assert_eq!(
        marker_value(&stdout, "IN-MD5=").as_deref(),
        Some(sent_md5.as_str()),
        "host -> guest checksum\n{}",
        outputs(&cabin)
    );

    // The guest's nc returns only once the host receiver has closed, which it does
    // after reading the guest's end of data.
    cabin.expect_stdout("SEND-END", TRANSFER_TIMEOUT);
    let status = receiver.wait(COMMAND_TIMEOUT, &|| outputs(&cabin));
    assert!(
        status.success(),
        "host receiver: {status} {}",
        receiver.stderr_text()
    );
    let from_guest = started.elapsed() - to_guest;
    let stdout = cabin.stdout.text();
    assert!(
        stdout.contains("SEND-RC=0"),
        "guest sender failed\n{}",
        outputs(&cabin)
    );
    let received_len = std::fs::metadata(&received).unwrap().len();
    assert_eq!(
        received_len, TRANSFER_BYTES as u64,
        "bytes the host received"
    );
    assert_eq!(
        marker_value(&stdout, "OUT-MD5=").as_deref(),
        Some(md5_of(&received).as_str()),
        "guest -> host checksum\n{}",
        outputs(&cabin)
    );

    ns.ip(&["addr", "add", "10.77.2.3/24", "dev", "tap0"]);
    expect_clean_exit(&mut cabin);
    let stdout = cabin.stdout.text();
    let at = |step: &str| -> f64 {
        marker_value(&stdout, &format!("T-{step}="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    eprintln!(
        "64 MiB, host side: boot + transfer to the guest + md5 {to_guest:.1?}, \
         urandom + md5 + transfer to the host {from_guest:.1?}; guest clock: \
         to guest {:.1} s, md5 {:.1} s, urandom {:.1} s, md5 {:.1} s, to host {:.1} s",
        at("recv") - at("start"),
        at("md5in") - at("recv"),
        at("urandom") - at("md5in"),
        at("md5out") - at("urandom"),
        at("sent") - at("md5out"),
    );
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn two_nics_each_reach_their_own_peer() {
    let scratch = Scratch::new("net-two");
    let dir = &scratch.0;
    let mut ns = Netns::new("two");
    ns.add_tap("tap0", "10.77.3.1/24");
    ns.add_tap("tap1", "10.77.4.1/24");
    // Strict on both ends: ARP answered only for the receiving interface's own
    // addresses, packets dropped when they arrive on the wrong interface. A guest
    // NIC wired to the other TAP would then get no answer.
    ns.sysctl("net.ipv4.conf.all.arp_ignore=1");
    ns.sysctl("net.ipv4.conf.all.rp_filter=1");
    let (mac0, mac1) = ("02:ca:b1:00:03:01", "02:ca:b1:00:04:01");
    let script = format!(
        "echo 1 >/proc/sys/net/ipv4/conf/all/arp_ignore; echo 1 >/proc/sys/net/ipv4/conf/all/rp_filter\n\
         {}{}echo MAC0=$(cat /sys/class/net/eth0/address) MAC1=$(cat /sys/class/net/eth1/address)\n\
         ping -c 2 -W 10 -I eth0 10.77.3.1 >/dev/null 2>&1 && echo PING0-OK\n\
         ping -c 2 -W 10 -I eth1 10.77.4.1 >/dev/null 2>&1 && echo PING1-OK\n\
         echo GUEST-READY\n{}",
        guest_if_up("eth0", "10.77.3.2/24"),
        guest_if_up("eth1", "10.77.4.2/24"),
        guest_wait_for_host("10.77.3.3"),
    );
    let nets = [
        format!("tap=tap0,mac={mac0}"),
        format!("tap=tap1,mac={mac1}"),
    ];
    let mut cabin = boot_guest(&ns, dir, &script, &nets);

    cabin.expect_stdout("GUEST-READY", BOOT_TIMEOUT);
    let ping0 = ns.ping("10.77.3.2");
    let ping1 = ns.ping("10.77.4.2");
    let neigh0 =
        String::from_utf8_lossy(&ns.ip(&["neigh", "show", "dev", "tap0"]).stdout).into_owned();
    let neigh1 =
        String::from_utf8_lossy(&ns.ip(&["neigh", "show", "dev", "tap1"]).stdout).into_owned();
    ns.ip(&["addr", "add", "10.77.3.3/24", "dev", "tap0"]);
    expect_clean_exit(&mut cabin);

    let stdout = cabin.stdout.text();
    assert!(
        stdout.contains("PING0-OK"),
        "eth0 -> tap0 peer\n{}",
        outputs(&cabin)
    );
    assert!(
        stdout.contains("PING1-OK"),
        "eth1 -> tap1 peer\n{}",
        outputs(&cabin)
    );
    assert!(ping0.contains("bytes from 10.77.3.2"), "{ping0}");
    assert!(ping1.contains("bytes from 10.77.4.2"), "{ping1}");
    assert_eq!(
        marker_value(&stdout, "MAC0=").as_deref(),
        Some(mac0),
        "{}",
        outputs(&cabin)
    );
    assert_eq!(
        marker_value(&stdout, "MAC1=").as_deref(),
        Some(mac1),
        "{}",
        outputs(&cabin)
    );
    // The host learnt each guest address behind the right TAP with the right MAC.
    assert!(
        neigh0.contains(&format!("10.77.3.2 lladdr {mac0}")),
        "tap0 neighbours: {neigh0}"
    );
    assert!(
        neigh1.contains(&format!("10.77.4.2 lladdr {mac1}")),
        "tap1 neighbours: {neigh1}"
    );
    assert!(
        !neigh0.contains(mac1) && !neigh1.contains(mac0),
        "{neigh0}\n{neigh1}"
    );
}

/// The `n` of every complete `ALIVE-n` line printed so far, with the rest of its line.
fn alive_lines(text: &str) -> Vec<(u32, String)> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().strip_prefix("ALIVE-"))
        .filter_map(|rest| {
            let (n, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((n.parse().ok()?, tail.to_owned()))
        })
        .collect()
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn tap_deleted_while_guest_runs_vm_keeps_running() {
    let scratch = Scratch::new("net-del");
    let dir = &scratch.0;
    let mut ns = Netns::new("del");
    ns.add_tap("tap0", "10.77.5.1/24");
    // The guest keeps sending (a background ping) while it prints a numbered line
    // with eth0's carrier every 200 ms, for at most 30 s.
    let script = format!(
        "{}ping -c 1 -W 10 10.77.5.1 >/dev/null 2>&1 && echo NET-UP\n\
         ping -i 0.2 10.77.5.1 >/dev/null 2>&1 & p=$!\n\
         i=0; while [ $i -lt 150 ]; do echo ALIVE-$i carrier=$(cat /sys/class/net/eth0/carrier 2>&1); \
         i=$((i+1)); sleep 0.2; done\n\
         kill $p\n",
        guest_if_up("eth0", "10.77.5.2/24"),
    );
    let mut cabin = boot_guest(&ns, dir, &script, &["tap=tap0".to_owned()]);

    cabin.expect_stdout("ALIVE-3 ", BOOT_TIMEOUT);
    assert!(
        cabin.stdout.text().contains("NET-UP"),
        "no network before the deletion\n{}",
        outputs(&cabin)
    );
    // Lines up to `before` were complete before the deletion; line `before + 1` may
    // have been under way; later ones were certainly printed after it.
    let before = alive_lines(&cabin.stdout.text()).last().unwrap().0;
    ns.ip(&["link", "del", "tap0"]);
    ns.taps.clear();

    // cabin is still up and the console still works: later lines keep coming.
    let later = before + 10;
    cabin.expect_stdout(&format!("ALIVE-{later} "), BOOT_TIMEOUT);
    assert!(
        !cabin.stdout.wait_closed(Duration::ZERO),
        "cabin closed its output\n{}",
        outputs(&cabin)
    );
    expect_clean_exit(&mut cabin);

    let lines = alive_lines(&cabin.stdout.text());
    assert_eq!(lines.last().map(|l| l.0), Some(149), "{}", outputs(&cabin));
    assert!(
        lines
            .iter()
            .any(|(n, tail)| *n <= before && tail == "carrier=1"),
        "carrier was not up before the deletion\n{}",
        outputs(&cabin)
    );
    assert!(
        lines
            .iter()
            .any(|(n, tail)| *n > before + 1 && tail == "carrier=0"),
        "the guest never saw its link go down\n{}",
        outputs(&cabin)
    );
    // The loss is reported once. `ip link del` takes the link down before it
    // unregisters the TAP, so a guest frame written in between may also get the
    // (once-only) link-down warning first; nothing may repeat.
    let stderr = cabin.stderr.text();
    let messages: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tap0"))
        .map(|l| l.split_once("] ").map_or(l, |(_, message)| message))
        .collect();
    let lost = messages
        .iter()
        .filter(|m| m.contains("no longer used"))
        .count();
    assert_eq!(
        lost,
        1,
        "expected one report of the lost TAP\n{}",
        outputs(&cabin)
    );
    let mut distinct = messages.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        messages.len(),
        "a message about the TAP repeats\n{}",
        outputs(&cabin)
    );
}

#[test]
fn missing_tap_gives_one_line_naming_it() {
    if !Path::new("/dev/net/tun").exists() || !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: needs /dev/net/tun and /dev/kvm");
        return;
    }
    let tap = format!("cbnx{}", std::process::id());
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "an interface {tap} exists already"
    );
    let scratch = Scratch::new("net-missing");
    let dir = &scratch.0;
    let code = [asm::i8042_reset(), asm::halt_forever()].concat();
    let kernel = write_file(dir, "tiny.elf", &tiny_elf(&code));
    let net = format!("tap={tap}");

    let (status, stdout, stderr) = run_cabin(
        &["run", "--kernel", &kernel, "--net", &net],
        COMMAND_TIMEOUT,
    );

    assert!(!status.success(), "cabin accepted a missing TAP\n{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("cabin: "), "{stderr}");
    assert!(stderr.contains(&tap), "the TAP is not named: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "cabin left an interface {tap} behind"
    );
}
