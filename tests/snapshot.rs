//! Snapshots of real Linux guests: a guest counting in memory, reading its disk and
//! answering pings is snapshotted and killed; restored copies go on counting from
//! the saved value, with the disk and network working. Run through `make test`
//! (native KVM or the sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::netns::Netns;
use common::{artifact, http, rootfs_copy, scratch_dir, script_cmdline, Cabin};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// The guest's end of its /30, and the host's.
const GUEST_IP: &str = "10.200.0.2";
const HOST_CIDR: &str = "10.200.0.1/30";
/// Every TAP gets the same MAC: a restored guest's ARP cache names the first one.
const TAP_MAC: &str = "02:cb:00:00:00:01";

/// Writes 256 KiB of random data to /dev/vdb (O_DIRECT) and prints its md5 as
/// WROTE-<md5>, then counts forever, one COUNT-<n>-<md5 of vdb read back> line every
/// 200 ms: a restored guest's next line shows its memory (n) and its disk I/O
/// (and, for a failure's message, the frames eth0 received and sent).
const COUNTER: &str = "ip link set eth0 up && ip addr add 10.200.0.2/30 dev eth0 || exit 9
dd if=/dev/urandom of=/tmp/w bs=4096 count=64 2>/dev/null
dd if=/tmp/w of=/dev/vdb bs=4096 oflag=direct conv=notrunc 2>/dev/null || exit 8
echo WROTE-$(md5sum </tmp/w | cut -c1-32)
i=0
while true; do
  i=$((i + 1))
  echo COUNT-$i-$(dd if=/dev/vdb bs=4096 count=64 iflag=direct 2>/dev/null | md5sum | cut -c1-32)-rx$(cat /sys/class/net/eth0/statistics/rx_packets)-tx$(cat /sys/class/net/eth0/statistics/tx_packets)
  usleep 200000
done";

/// (n, md5) of each whole COUNT line.
fn counts(text: &str) -> Vec<(u64, String)> {
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().strip_prefix("COUNT-"))
        .filter_map(|rest| {
            let mut fields = rest.split('-');
            let n = fields.next()?.parse().ok()?;
            Some((n, fields.next()?.to_owned()))
        })
        .collect()
}

fn wrote(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("WROTE-"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no WROTE line in {text}"))
}

/// Pings the guest from `ns`; on failure, panics with what the TAP and the guest
/// counted and cabin's messages.
fn ping(ns: &Netns, tap: &str, cabin: &Cabin) {
    let out = ns
        .command(
            common::netns::HOST_BUSYBOX,
            &["ping", "-c", "3", "-W", "10", GUEST_IP],
        )
        .output()
        .unwrap();
    if !out.status.success() {
        let link = ns
            .command("ip", &["-s", "link", "show", tap])
            .output()
            .unwrap();
        let lines = cabin.stdout.text();
        panic!(
            "no ping reply on {tap}: {}\nTAP: {}\nguest's last line: {:?}\ncabin stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&link.stdout),
            lines.lines().rev().find(|l| l.contains("COUNT-")),
            cabin.stderr.text()
        );
    }
}

/// A namespace with TAP `tap` at the host's address and the shared MAC.
fn network(tag: &str, tap: &str) -> Netns {
    let mut ns = Netns::new(tag);
    ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
    ns.taps.push(tap.to_owned());
    ns.ip(&["link", "set", tap, "address", TAP_MAC]);
    ns.ip(&["addr", "add", HOST_CIDR, "dev", tap]);
    ns.ip(&["link", "set", tap, "up"]);
    ns
}

/// A counting guest booted through the API (so it can be snapshotted), with its
/// root and data disks in `dir`, in `ns` on `tap`.
struct Original {
    cabin: Cabin,
    sock: PathBuf,
}

impl Original {
    /// Waits until the guest counts; the md5 of what it wrote to its disk.
    fn counting(&self) -> String {
        wait_counts(&self.cabin, 2);
        wrote(&self.cabin.stdout.text())
    }

    /// Kills the (snapshotted) VM; the last value the guest printed.
    fn kill(mut self) -> u64 {
        let last = counts(&self.cabin.stdout.text()).last().unwrap().0;
        self.cabin.signal(libc::SIGKILL);
        self.cabin.wait_exit(BOOT_TIMEOUT);
        last
    }
}

fn boot_counter(ns: &Netns, dir: &Path, tap: &str, machine: serde_json::Value) -> Original {
    let sock = dir.join("api.sock");
    let image = rootfs_copy(dir);
    let data = dir.join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let cabin = ns.spawn_cabin(&["run", "--api-sock", sock.to_str().unwrap()]);
    common::wait_for_socket(&sock, &cabin);
    let put = |path: &str, body: serde_json::Value| {
        let (status, answer) = http(&sock, "PUT", path, Some(&body.to_string()));
        assert_eq!(status, 204, "{path}: {answer}");
    };
    put("/machine-config", machine);
    put(
        "/boot-source",
        serde_json::json!({
            "kernel_image_path": artifact("CABIN_VMLINUX"),
            "boot_args": script_cmdline(COUNTER),
        }),
    );
    put(
        "/drives/rootfs",
        serde_json::json!({"drive_id": "rootfs", "path_on_host": image,
                           "is_root_device": true, "is_read_only": false}),
    );
    put(
        "/drives/data",
        serde_json::json!({"drive_id": "data", "path_on_host": data,
                           "is_root_device": false, "is_read_only": false}),
    );
    put(
        "/network-interfaces/eth0",
        serde_json::json!({"iface_id": "eth0", "host_dev_name": tap}),
    );
    put(
        "/actions",
        serde_json::json!({"action_type": "InstanceStart"}),
    );
    Original { cabin, sock }
}

fn machine(vcpus: u32, mib: u64, track_dirty_pages: bool) -> serde_json::Value {
    serde_json::json!({"vcpu_count": vcpus, "mem_size_mib": mib, "track_dirty_pages": track_dirty_pages})
}

/// Waits for `count` lines after the first; returns them all.
fn wait_counts(cabin: &Cabin, count: usize) -> Vec<(u64, String)> {
    assert!(
        cabin
            .stdout
            .wait_until(|text| counts(text).len() >= count, BOOT_TIMEOUT),
        "stdout: {}\nstderr: {}",
        cabin.stdout.text(),
        cabin.stderr.text()
    );
    counts(&cabin.stdout.text())
}

fn snapshot(sock: &Path, dir: &Path, diff: bool) {
    let mut args = vec!["snapshot", dir.to_str().unwrap()];
    if diff {
        args.push("--diff");
    }
    let out = common::ctl(sock, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A restored guest's lines: it goes on from `last + 1`, reads back what it wrote,
/// and never boots (no WROTE line).
fn assert_goes_on(cabin: &Cabin, last: u64, md5: &str) {
    let lines = wait_counts(cabin, 3);
    let text = cabin.stdout.text();
    assert!(
        !text.contains("WROTE-"),
        "the restored guest booted again: {text}"
    );
    for (i, (n, sum)) in lines.iter().enumerate() {
        assert_eq!(*n, last + 1 + i as u64, "{text}");
        assert_eq!(sum, md5, "the disk read back differs: {text}");
    }
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn restored_guest_goes_on_counting_with_its_disk_and_network() {
    let dir = scratch_dir("snapshot-restore");
    let ns_a = network("snap-a", "snaptap0");
    let original = boot_counter(&ns_a, &dir, "snaptap0", machine(2, 256, false));
    let md5 = original.counting();
    ping(&ns_a, "snaptap0", &original.cabin);
    let snap = dir.join("snap");
    snapshot(&original.sock, &snap, false);
    let last = original.kill();

    // Another namespace, another TAP name: `--net` overrides it by position.
    let ns_b = network("snap-b", "snaptap1");
    let mut restored = ns_b.spawn_cabin(&[
        "run",
        "--restore",
        snap.to_str().unwrap(),
        "--net",
        "tap=snaptap1",
    ]);
    assert_goes_on(&restored, last, &md5);
    ping(&ns_b, "snaptap1", &restored);
    restored.signal(libc::SIGTERM);
    restored.wait_exit(BOOT_TIMEOUT);

    // A TAP that does not exist: one line naming it, nothing run.
    let mut missing = ns_b.spawn_cabin(&[
        "run",
        "--restore",
        snap.to_str().unwrap(),
        "--net",
        "tap=nosuchtap",
    ]);
    let status = missing.wait_exit(BOOT_TIMEOUT);
    let stderr = missing.stderr.text();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("cabin: ") && stderr.contains("nosuchtap"),
        "{stderr}"
    );
    assert!(counts(&missing.stdout.text()).is_empty());
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn diff_on_top_of_full_restores_the_state_of_a_full_snapshot() {
    let dir = scratch_dir("snapshot-diff");
    let ns = network("snap-d", "snaptap2");
    let original = boot_counter(&ns, &dir, "snaptap2", machine(2, 128, true));
    let md5 = original.counting();
    let (full, diff, same) = (dir.join("full"), dir.join("diff"), dir.join("same"));
    snapshot(&original.sock, &full, false);
    let resumed = common::ctl(&original.sock, &["resume"]);
    assert!(resumed.status.success());
    let before = counts(&original.cabin.stdout.text()).len();
    wait_counts(&original.cabin, before + 5);
    snapshot(&original.sock, &diff, true);
    // A full snapshot of the same moment (still paused) to compare with.
    snapshot(&original.sock, &same, false);
    let last = original.kill();

    // The diff holds only what changed: far less than the full file's data.
    let merged = dir.join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    std::fs::copy(full.join("memory"), merged.join("memory")).unwrap();
    std::fs::copy(diff.join("state"), merged.join("state")).unwrap();
    let out = std::process::Command::new(common::cabin_bin())
        .args(["snapshot", "rebase", "--memory-path"])
        .arg(merged.join("memory"))
        .arg("--diff-path")
        .arg(diff.join("memory"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(merged.join("memory")).unwrap()
            == std::fs::read(same.join("memory")).unwrap(),
        "full + diff differs from the full snapshot of the same moment"
    );
    let restored = ns.spawn_cabin(&["run", "--restore", merged.to_str().unwrap()]);
    assert_goes_on(&restored, last, &md5);
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn five_clones_of_one_snapshot_run_at_once_each_on_its_own_tap() {
    let dir = scratch_dir("snapshot-clones");
    let ns = network("snap-c", "snaptap3");
    let original = boot_counter(&ns, &dir, "snaptap3", machine(1, 128, false));
    let md5 = original.counting();
    let snap = dir.join("snap");
    snapshot(&original.sock, &snap, false);
    let last = original.kill();
    drop(ns);

    // Each clone in a namespace of its own, on a TAP of the same address, loaded
    // through the API with network_overrides, as Firecracker clients do. They are
    // started one after another (each once the one before answers), then all run
    // at once: five starting together with a vCPU each are more than the nested
    // sandbox's two vCPUs take (see README, "The nested sandbox").
    let mut clones: Vec<(Netns, Cabin)> = Vec::new();
    for i in 0..5 {
        let tap = format!("clone{i}");
        let ns = network(&format!("clone{i}"), &tap);
        let sock = dir.join(format!("clone{i}.sock"));
        let cabin = ns.spawn_cabin(&["run", "--api-sock", sock.to_str().unwrap()]);
        common::wait_for_socket(&sock, &cabin);
        let body = serde_json::json!({
            "snapshot_path": snap.join("state"),
            "mem_backend": {"backend_type": "File", "backend_path": snap.join("memory")},
            "network_overrides": [{"iface_id": "eth0", "host_dev_name": tap}],
            "resume_vm": true,
        });
        let (status, answer) = http(&sock, "PUT", "/snapshot/load", Some(&body.to_string()));
        assert_eq!(status, 204, "clone {i}: {answer}");
        assert_goes_on(&cabin, last, &md5);
        clones.push((ns, cabin));
    }
    for (i, (ns, cabin)) in clones.iter().enumerate() {
        ping(ns, &format!("clone{i}"), cabin);
        let before = counts(&cabin.stdout.text()).len();
        wait_counts(cabin, before + 1);
    }
}

#[test]
#[ignore = "needs native KVM or the sandbox: make test"]
fn a_guest_paused_right_after_a_port_write_does_not_write_it_twice() {
    // On ordinary KVM a port write completes on the next KVM_RUN: see the helper.
    common::snapshot_port_writer_three_times(BOOT_TIMEOUT);
}
