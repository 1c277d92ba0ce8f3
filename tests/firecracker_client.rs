//! cabin driven the way a Firecracker client drives Firecracker: logger and metrics
//! first, then machine (with `track_dirty_pages`), boot source, drives, network,
//! entropy and vsock, InstanceStart, FlushMetrics, pause, resume, Ctrl-Alt-Del, all
//! on one pooled keep-alive connection. Checks the log file, the metrics lines, the
//! guest's `/dev/hwrng`, the hybrid vsock handshake (`CONNECT`/`OK`) to the image's
//! agent, and a disk rate limiter measured from inside the guest.
//! Run through `make test` (native KVM or the sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{artifact, rootfs_copy, run_cabin, scratch_dir, script_cmdline, Cabin};
use serde_json::{json, Value};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The tests of this file run one at a time: the rate-limiter test times a guest,
/// and a second guest booting beside it on the same two CPUs would slow it below
/// the limit it checks.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One keep-alive connection, as a client library's pool holds it.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .unwrap();
                    return Client {
                        stream,
                        buf: Vec::new(),
                    };
                }
                Err(e) if Instant::now() > deadline => panic!("no API socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends a request and returns (status, body).
    fn send(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            self.stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = response.parse(&self.buf) {
                let status = response.code.unwrap();
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| String::from_utf8_lossy(h.value).parse().unwrap());
                if self.buf.len() >= head + length {
                    let text = String::from_utf8_lossy(&self.buf[head..head + length]).into_owned();
                    self.buf.drain(..head + length);
                    return (status, text);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read an answer");
            assert!(n > 0, "cabin closed the keep-alive connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a request that must succeed with 204.
    fn ok(&mut self, method: &str, path: &str, body: Value) {
        let (status, text) = self.send(method, path, Some(body));
        assert_eq!(status, 204, "{method} {path}: {text}");
    }
}

/// Sums one counter over every metrics line (each line holds the change since the
/// previous one).
fn total(lines: &[Value], section: &str, counter: &str) -> u64 {
    lines
        .iter()
        .filter_map(|line| line[section][counter].as_u64())
        .sum()
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2)");
    assert!(status.success(), "ip {args:?}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn firecracker_client_flow_configures_boots_and_measures() {
    let _alone = alone();
    let dir = scratch_dir("fc-client");
    let socket = dir.join("api.sock");
    let log = dir.join("cabin.log");
    let metrics = dir.join("metrics.json");
    let image = rootfs_copy(&dir);
    let tap = format!("fct{}", std::process::id() % 100_000);
    ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
    struct TapGuard(String);
    impl Drop for TapGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _tap = TapGuard(tap.clone());

    let mut cabin = Cabin::spawn(&["run", "--api-sock", socket.to_str().unwrap()]);
    let mut client = Client::connect(&socket);
    let script = "echo HWRNG-BYTES=$(head -c 64 /dev/hwrng | wc -c); \
                  echo MAC=$(cat /sys/class/net/eth0/address); \
                  echo MTU=$(cat /sys/class/net/eth0/mtu); \
                  i=0; while true; do echo TICK-$i; i=$((i + 1)); usleep 100000; done";

    client.ok(
        "PUT",
        "/logger",
        json!({"log_path": log, "level": "Info", "show_level": true, "show_log_origin": true}),
    );
    client.ok("PUT", "/metrics", json!({"metrics_path": metrics}));
    client.ok(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false, "track_dirty_pages": true}),
    );
    client.ok(
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": artifact("CABIN_VMLINUX"),
               "boot_args": script_cmdline(script).replace(" root=/dev/vda rw", "")}),
    );
    client.ok(
        "PUT",
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": image, "is_root_device": true,
               "is_read_only": false, "cache_type": "Writeback", "io_engine": "Sync"}),
    );
    client.ok(
        "PUT",
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "host_dev_name": tap, "guest_mac": "06:00:ac:10:00:02",
               "mtu": 1400}),
    );
    client.ok(
        "PUT",
        "/entropy",
        json!({"rate_limiter": {"bandwidth": {"size": 65536, "refill_time": 100}}}),
    );
    let uds = dir.join("v.sock");
    client.ok(
        "PUT",
        "/vsock",
        json!({"vsock_id": "vsock0", "guest_cid": 3, "uds_path": uds}),
    );
    let (status, config) = client.send("GET", "/vm/config", None);
    assert_eq!(status, 200, "{config}");
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["machine-config"]["track_dirty_pages"], true);
    assert_eq!(config["drives"][0]["cache_type"], "Writeback");
    assert_eq!(config["network-interfaces"][0]["mtu"], 1400);
    assert!(config["entropy"]["rate_limiter"].is_object(), "{config}");
    assert_eq!(config["vsock"], json!({"guest_cid": 3, "uds_path": uds}));
    client.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));

    // The guest's tty writes CR LF: match the number alone.
    cabin.expect_stdout("TICK-3", BOOT_TIMEOUT);
    let console = cabin.stdout.text();
    assert!(console.contains("HWRNG-BYTES=64"), "{console}");
    assert!(console.contains("MAC=06:00:ac:10:00:02"), "{console}");
    assert!(console.contains("MTU=1400"), "{console}");
    // The hybrid vsock handshake as Firecracker's clients speak it, to the port the
    // image's cabin-agent listens on (its init starts it before the script).
    let mut vsock = UnixStream::connect(&uds).unwrap();
    vsock.set_read_timeout(Some(BOOT_TIMEOUT)).unwrap();
    vsock.write_all(b"CONNECT 10789\n").unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(vsock.read(&mut byte).unwrap(), 1, "{line:?}");
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let port = line
        .strip_prefix("OK ")
        .and_then(|p| p.trim_end().parse::<u32>().ok());
    assert!(port.is_some(), "{line:?}");
    drop(vsock);
    client.ok("PUT", "/actions", json!({"action_type": "FlushMetrics"}));
    client.ok(
        "PATCH",
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "rx_rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}},
               "tx_rate_limiter": {"ops": {"size": 1000, "refill_time": 1000}}}),
    );
    client.ok("PATCH", "/vm", json!({"state": "Paused"}));
    let (_, described) = client.send("GET", "/", None);
    assert!(described.contains("\"Paused\""), "{described}");
    // Snapshots of the paused VM on the same connection, as a Firecracker client
    // takes them: a full one, then a diff (the machine tracks dirty pages), which
    // right after the full one holds next to nothing.
    let file = |name: &str| dir.join(name);
    client.ok(
        "PUT",
        "/snapshot/create",
        json!({"snapshot_type": "Full", "snapshot_path": file("vm.state"),
               "mem_file_path": file("vm.mem")}),
    );
    client.ok(
        "PUT",
        "/snapshot/create",
        json!({"snapshot_type": "Diff", "snapshot_path": file("diff.state"),
               "mem_file_path": file("diff.mem")}),
    );
    let full = std::fs::metadata(file("vm.mem")).unwrap();
    let diff = std::fs::metadata(file("diff.mem")).unwrap();
    assert_eq!((full.len(), diff.len()), (128 << 20, 128 << 20));
    assert!(
        diff.blocks() < full.blocks() / 10,
        "diff {} blocks, full {}",
        diff.blocks(),
        full.blocks()
    );
    assert!(std::fs::metadata(file("vm.state")).unwrap().len() > 0);
    client.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    let ticks = cabin.stdout.text().matches("TICK-").count();
    assert!(
        cabin
            .stdout
            .wait_until(|out| out.matches("TICK-").count() > ticks + 2, BOOT_TIMEOUT),
        "no ticks after resume"
    );
    client.ok("PUT", "/actions", json!({"action_type": "FlushMetrics"}));
    client.ok("PUT", "/actions", json!({"action_type": "SendCtrlAltDel"}));
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());

    // The log: Firecracker's line shape with level and origin, one line per request.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.lines().all(|l| l.contains(" [cabin-")), "{log}");
    assert!(log.contains(":INFO:"), "{log}");
    for request in [
        "PUT /machine-config: 204",
        "PUT /drives/rootfs: 204",
        "PUT /entropy: 204",
        "PUT /vsock: 204",
        "PUT /actions: 204",
        "PATCH /vm: 204",
        "PUT /snapshot/create: 204",
    ] {
        assert!(log.contains(request), "{request:?} not in the log:\n{log}");
    }
    // The metrics: JSON lines whose counters grew.
    let text = std::fs::read_to_string(&metrics).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(lines
        .iter()
        .all(|l| l["utc_timestamp_ms"].as_u64().is_some()));
    assert!(
        total(&lines, "api_server", "machine_config_count") >= 1,
        "{text}"
    );
    assert!(total(&lines, "block_rootfs", "read_count") > 0, "{text}");
    assert!(total(&lines, "entropy", "entropy_bytes") >= 64, "{text}");
    assert!(total(&lines, "vsock", "conns_added") >= 1, "{text}");
    assert!(total(&lines, "vcpu", "exit_io_out") > 0, "{text}");
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn disk_rate_limiter_holds_a_guest_read_to_its_bandwidth() {
    let _alone = alone();
    let dir = scratch_dir("fc-ratelimit");
    let image = rootfs_copy(&dir);
    let data = dir.join("data.img");
    let mib: u64 = 40;
    std::fs::write(&data, vec![0x5au8; (mib << 20) as usize]).unwrap();
    // 10 MiB/s: a bucket of 1 MiB refilled every 100 ms.
    let limit_mib_s = 10.0;
    let script = format!(
        "t0=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/vdb of=/dev/null bs=1M count={mib} 2>/dev/null; \
         t1=$(cut -d' ' -f1 /proc/uptime); echo RATE-T0=$t0 RATE-T1=$t1"
    );
    let config = json!({
        "boot-source": {"kernel_image_path": artifact("CABIN_VMLINUX"),
                        "boot_args": script_cmdline(&script)},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
        "drives": [
            {"drive_id": "rootfs", "path_on_host": image, "is_root_device": true},
            {"drive_id": "data", "path_on_host": data, "is_root_device": false,
             "is_read_only": true,
             "rate_limiter": {"bandwidth": {"size": 1 << 20, "refill_time": 100}}}
        ]
    });
    let file = dir.join("vm.json");
    std::fs::write(&file, config.to_string()).unwrap();

    let (status, stdout, stderr) = run_cabin(
        &["run", "--config-file", file.to_str().unwrap()],
        BOOT_TIMEOUT,
    );

    assert_eq!(status.code(), Some(0), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RATE-T0="))
        .unwrap_or_else(|| panic!("no timing line:\n{stdout}"));
    let times: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('=').and_then(|(_, v)| v.parse().ok()))
        .collect();
    let seconds = times[1] - times[0];
    // The bucket starts full: the first MiB is free, the rest comes at the limit.
    let rate = (mib - 1) as f64 / seconds;
    eprintln!("guest read {mib} MiB in {seconds:.2} s: {rate:.2} MiB/s (limit {limit_mib_s})");
    assert!(
        (rate - limit_mib_s).abs() <= limit_mib_s * 0.1,
        "{rate:.2} MiB/s is not within 10% of {limit_mib_s} MiB/s"
    );
}

#[test]
#[ignore = "needs guest artifacts and native KVM or the sandbox: make test"]
fn patch_drive_swaps_the_backing_file_of_a_running_guest() {
    let _alone = alone();
    let dir = scratch_dir("fc-patch");
    let socket = dir.join("api.sock");
    let image = rootfs_copy(&dir);
    let old = dir.join("old.img");
    let new = dir.join("new.img");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..16].copy_from_slice(b"OLD-BACKING-FILE");
    std::fs::write(&old, &bytes).unwrap();
    bytes.resize(2 << 20, 0);
    bytes[..16].copy_from_slice(b"NEW-BACKING-FILE");
    std::fs::write(&new, &bytes).unwrap();
    // Waits until the disk grows, then reads it again past the page cache.
    let script = "echo BEFORE=$(cat /sys/block/vdb/size):$(head -c 16 /dev/vdb); \
                  while [ $(cat /sys/block/vdb/size) = 2048 ]; do usleep 100000; done; \
                  echo 3 > /proc/sys/vm/drop_caches; \
                  echo AFTER=$(cat /sys/block/vdb/size):$(head -c 16 /dev/vdb)";
    let config = json!({
        "boot-source": {"kernel_image_path": artifact("CABIN_VMLINUX"),
                        "boot_args": script_cmdline(script)},
        "drives": [
            {"drive_id": "rootfs", "path_on_host": image, "is_root_device": true},
            {"drive_id": "data", "path_on_host": old, "is_root_device": false}
        ]
    });
    let file = dir.join("vm.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let mut cabin = Cabin::spawn(&[
        "run",
        "--config-file",
        file.to_str().unwrap(),
        "--api-sock",
        socket.to_str().unwrap(),
    ]);
    cabin.expect_stdout("BEFORE=2048:OLD-BACKING-FILE", BOOT_TIMEOUT);
    let mut client = Client::connect(&socket);

    // Mistakes first: an unknown drive, a missing file; the VM keeps running.
    let (status, text) = client.send(
        "PATCH",
        "/drives/nope",
        Some(json!({"drive_id": "nope", "path_on_host": new})),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("drive_id 'nope'"), "{text}");
    let (status, text) = client.send(
        "PATCH",
        "/drives/data",
        Some(json!({"drive_id": "data", "path_on_host": "/nonexistent.img"})),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("path_on_host /nonexistent.img"), "{text}");
    client.ok(
        "PATCH",
        "/drives/data",
        json!({"drive_id": "data", "path_on_host": new,
               "rate_limiter": {"ops": {"size": 1000, "refill_time": 100}}}),
    );

    cabin.expect_stdout("AFTER=4096:NEW-BACKING-FILE", BOOT_TIMEOUT);
    let status = cabin.wait_exit(BOOT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", cabin.stderr.text());
}
