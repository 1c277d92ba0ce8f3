//! The API under the load real clients create, against the real `cabin` binary with
//! its seccomp filters on and a tiny guest ticking on this host's KVM: pooled
//! keep-alive connections, a client that trickles one byte a second, one that never
//! sends, a thousand connections opened and dropped. cabin must stay up, keep its
//! guest running, and keep answering `GET /`.
//!
//! The tiny guest only uses port I/O and plain moves, so these run on any /dev/kvm.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{asm, scratch_dir, tiny_elf, write_file, Cabin};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Generous bound on one `GET /` while the load runs: the requirement (100 ms) is
/// measured by `make bench`; a test only catches a server that stalls.
const PROBE_BOUND: Duration = Duration::from_secs(2);

/// One keep-alive HTTP/1.1 connection, like a client library's pooled connection.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// One answer: status and body.
struct Answer {
    status: u16,
    body: String,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).expect("connect to the API socket");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).expect("send");
        self.read_answer()
    }

    fn read_answer(&mut self) -> Answer {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).into_owned();
                    self.buf.drain(..end + 4 + length);
                    let status = head
                        .split(' ')
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("no status in {head:?}"));
                    return Answer { status, body };
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read an answer");
            assert!(
                n > 0,
                "the server closed a keep-alive connection mid-answer"
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// cabin with an API socket, its tiny guest started through the API and ticking.
struct Fixture {
    cabin: Cabin,
    socket: PathBuf,
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        let dir = scratch_dir(name);
        // Delay between ticks: about half a second where KVM emulates the guest, far
        // less on hardware; either way the count keeps growing.
        let code = asm::tick_forever(b't', 500_000);
        let kernel = write_file(&dir, "tick.elf", &tiny_elf(&code));
        let socket = dir.join("api.sock");
        let cabin = Cabin::spawn(&[
            "run",
            "--api-sock",
            socket.to_str().unwrap(),
            "--kernel",
            &kernel,
            "--memory",
            "32",
        ]);
        let deadline = Instant::now() + TIMEOUT;
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "no API socket: {}",
                cabin.stderr.text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let mut client = Client::connect(&socket);
        let started = client.request(
            "PUT",
            "/actions",
            Some(r#"{"action_type": "InstanceStart"}"#),
        );
        assert_eq!(started.status, 204, "{}", started.body);
        cabin.expect_stdout("tt", TIMEOUT);
        Fixture { cabin, socket }
    }

    fn ticks(&self) -> usize {
        self.cabin.stdout.text().matches('t').count()
    }

    /// The guest prints more ticks from now on.
    fn expect_ticking(&self) {
        let before = self.ticks();
        assert!(
            self.cabin
                .stdout
                .wait_until(|out| out.matches('t').count() > before + 1, TIMEOUT),
            "the guest stopped ticking at {before}; stderr: {}",
            self.cabin.stderr.text()
        );
    }

    /// cabin is still alive, running, and ends cleanly on SIGTERM with nothing on
    /// stderr but its stop line (no seccomp death, no panic).
    fn finish(mut self) {
        let mut client = Client::connect(&self.socket);
        let answer = client.request("GET", "/", None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.contains("\"Running\""), "{}", answer.body);
        self.expect_ticking();
        self.cabin.signal(libc::SIGTERM);
        let status = self.cabin.wait_exit(TIMEOUT);
        let stderr = self.cabin.stderr.text();
        assert_eq!(status.code(), Some(143), "stderr: {stderr}");
        assert_eq!(stderr, "cabin: stopped by signal 15\n");
    }
}

/// Measures `GET /` on a fresh connection every 50 ms until `stop`; the slowest.
fn probe(socket: PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<Duration> {
    thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let answer = Client::connect(&socket).request("GET", "/", None);
            assert_eq!(answer.status, 200, "{}", answer.body);
            slowest = slowest.max(started.elapsed());
            thread::sleep(Duration::from_millis(50));
        }
        slowest
    })
}

/// One pooled client's share of mixed requests, as a client library sends them.
fn mixed_requests(socket: &Path, client_index: usize, count: usize) -> Vec<(u16, String)> {
    let mut client = Client::connect(socket);
    let mut unexpected = Vec::new();
    for i in 0..count {
        let (method, path, body, expected): (&str, &str, Option<&str>, &[u16]) =
            match (client_index + i) % 8 {
                0 => ("GET", "/", None, &[200]),
                1 => ("GET", "/machine-config", None, &[200]),
                2 => ("GET", "/vm/config", None, &[200]),
                // Configuration after start is refused, and cabin keeps serving.
                3 => (
                    "PUT",
                    "/machine-config",
                    Some(r#"{"vcpu_count": 1, "mem_size_mib": 64}"#),
                    &[400],
                ),
                4 => (
                    "PUT",
                    "/actions",
                    Some(r#"{"action_type": "Bogus"}"#),
                    &[400],
                ),
                5 => ("GET", "/no-such-thing", None, &[404]),
                6 => ("PUT", "/actions", Some("{not json"), &[400]),
                // Pause and resume race between clients: either is accepted or
                // refused for the state the VM is in.
                _ if i % 2 == 0 => ("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), &[204, 400]),
                _ => ("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), &[204, 400]),
            };
        let answer = client.request(method, path, body);
        if !expected.contains(&answer.status) {
            unexpected.push((answer.status, format!("{method} {path}: {}", answer.body)));
        }
    }
    unexpected
}

#[test]
fn pooled_keep_alive_clients_with_seccomp_do_not_crash_cabin() {
    let fixture = Fixture::start("load-pooled");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(fixture.socket.clone(), stop.clone());

    let clients: Vec<_> = (0..64)
        .map(|index| {
            let socket = fixture.socket.clone();
            thread::spawn(move || mixed_requests(&socket, index, 200))
        })
        .collect();
    let unexpected: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client thread failed"))
        .collect();
    stop.store(true, Ordering::SeqCst);
    let slowest = prober.join().expect("the GET / probe failed");

    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    eprintln!("slowest GET / during 64 x 200 requests: {slowest:?}");
    assert!(slowest < PROBE_BOUND, "GET / took {slowest:?} under load");
    // The races may have left it paused.
    let mut client = Client::connect(&fixture.socket);
    let resumed = client.request("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#));
    assert!(matches!(resumed.status, 204 | 400), "{}", resumed.body);
    fixture.finish();
}

#[test]
fn slow_silent_and_dropped_clients_do_not_stop_others() {
    let fixture = Fixture::start("load-hostile");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(fixture.socket.clone(), stop.clone());

    // A client that connects and never sends.
    let _silent = UnixStream::connect(&fixture.socket).unwrap();
    // A client that sends one byte a second.
    let trickled = Arc::new(Mutex::new(0usize));
    let trickler = {
        let socket = fixture.socket.clone();
        let trickled = trickled.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut stream = UnixStream::connect(&socket).unwrap();
            for byte in b"GET / HTTP/1.1\r\n\r\n".iter().cycle() {
                if stop.load(Ordering::SeqCst) || stream.write_all(&[*byte]).is_err() {
                    return;
                }
                *trickled.lock().unwrap() += 1;
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // A client that pipelines requests and never reads an answer: cabin stops
    // reading it once its answers pile up, and serves the others.
    let mut greedy = UnixStream::connect(&fixture.socket).unwrap();
    greedy.set_nonblocking(true).unwrap();
    let request = b"GET / HTTP/1.1\r\n\r\n".repeat(20_000);
    let mut sent = 0;
    while sent < request.len() {
        match greedy.write(&request[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < request.len(),
        "cabin took {sent} pipelined bytes unread"
    );
    // A thousand connections opened and dropped, some after half a request.
    for i in 0..1000 {
        let mut stream = UnixStream::connect(&fixture.socket).unwrap();
        if i % 3 == 0 {
            let _ = stream.write_all(b"PUT /machine-config HTTP/1.1\r\nContent-Le");
        }
    }
    // Served meanwhile, on a fresh connection and on a kept one.
    let mut kept = Client::connect(&fixture.socket);
    for _ in 0..20 {
        assert_eq!(kept.request("GET", "/", None).status, 200);
    }
    fixture.expect_ticking();
    // Let the trickling client send a few bytes while the probe runs.
    let trickling_since = Instant::now();
    while *trickled.lock().unwrap() < 3 && trickling_since.elapsed() < TIMEOUT {
        assert_eq!(kept.request("GET", "/", None).status, 200);
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    let slowest = prober.join().expect("the GET / probe failed");
    trickler.join().unwrap();

    eprintln!("slowest GET / beside hostile clients: {slowest:?}");
    assert!(slowest < PROBE_BOUND, "GET / took {slowest:?}");
    fixture.finish();
}

#[test]
fn logger_metrics_and_device_patches_work_under_seccomp() {
    let dir = scratch_dir("load-observe");
    let code = asm::tick_forever(b't', 500_000);
    let kernel = write_file(&dir, "tick.elf", &tiny_elf(&code));
    let disk = write_file(&dir, "disk.img", &vec![0u8; 1 << 20]);
    let bigger = write_file(&dir, "bigger.img", &vec![0u8; 2 << 20]);
    let log = dir.join("cabin.log");
    let metrics = dir.join("metrics.json");
    let socket = dir.join("api.sock");
    let mut cabin = Cabin::spawn(&["run", "--api-sock", socket.to_str().unwrap()]);
    let deadline = Instant::now() + TIMEOUT;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "{}", cabin.stderr.text());
        thread::sleep(Duration::from_millis(20));
    }
    let mut client = Client::connect(&socket);
    let mut ok = |method: &str, path: &str, body: String| {
        let answer = client.request(method, path, Some(&body));
        assert_eq!(answer.status, 204, "{method} {path}: {}", answer.body);
    };
    ok(
        "PUT",
        "/logger",
        format!(
            r#"{{"log_path": "{}", "level": "Debug", "show_level": true}}"#,
            log.display()
        ),
    );
    ok(
        "PUT",
        "/metrics",
        format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
    );
    ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 2, "mem_size_mib": 32, "track_dirty_pages": true}"#.into(),
    );
    ok(
        "PUT",
        "/boot-source",
        format!(r#"{{"kernel_image_path": "{kernel}"}}"#),
    );
    ok(
        "PUT",
        "/drives/data",
        format!(
            r#"{{"drive_id": "data", "path_on_host": "{disk}", "is_root_device": false,
                 "rate_limiter": {{"bandwidth": {{"size": 1048576, "refill_time": 100}}}}}}"#
        ),
    );
    ok(
        "PUT",
        "/entropy",
        r#"{"rate_limiter": {"ops": {"size": 10, "refill_time": 100}}}"#.into(),
    );
    ok(
        "PUT",
        "/actions",
        r#"{"action_type": "InstanceStart"}"#.into(),
    );
    cabin.expect_stdout("tt", TIMEOUT);
    // After start, on the filtered VMM thread: open a new backing file, re-arm a
    // rate limiter, write metrics lines, log.
    ok(
        "PATCH",
        "/drives/data",
        format!(
            r#"{{"drive_id": "data", "path_on_host": "{bigger}",
                 "rate_limiter": {{"ops": {{"size": 100, "refill_time": 1000}}}}}}"#
        ),
    );
    for _ in 0..2 {
        ok(
            "PUT",
            "/actions",
            r#"{"action_type": "FlushMetrics"}"#.into(),
        );
    }
    // The same through `cabin ctl`, and its version as Firecracker clients read it.
    let ctl = |action: &str| {
        std::process::Command::new(common::cabin_bin())
            .args(["ctl", "--api-sock", socket.to_str().unwrap(), action])
            .output()
            .unwrap()
    };
    let flushed = ctl("flush-metrics");
    assert!(flushed.status.success(), "{flushed:?}");
    let version = ctl("version");
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(version["firecracker_version"], env!("CARGO_PKG_VERSION"));
    ok("PATCH", "/vm", r#"{"state": "Paused"}"#.into());
    ok("PATCH", "/vm", r#"{"state": "Resumed"}"#.into());
    let config = client.request("GET", "/vm/config", None);
    assert!(config.body.contains(&bigger), "{}", config.body);

    let before = cabin.stdout.text().matches('t').count();
    assert!(
        cabin
            .stdout
            .wait_until(|out| out.matches('t').count() > before + 1, TIMEOUT),
        "the guest stopped ticking"
    );
    cabin.signal(libc::SIGTERM);
    let status = cabin.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(143), "{}", cabin.stderr.text());
    assert_eq!(cabin.stderr.text(), "cabin: stopped by signal 15\n");

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(":INFO] API PATCH /drives/data: 204"), "{log}");
    assert!(log.contains(":INFO] API PUT /actions: 204"), "{log}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Three FlushMetrics and the last line at exit.
    assert_eq!(lines.len(), 4, "{lines:?}");
    let sum = |section: &str, key: &str| -> u64 {
        lines.iter().filter_map(|l| l[section][key].as_u64()).sum()
    };
    assert!(sum("api_server", "drives_count") >= 2, "{lines:?}");
    assert!(sum("api_server", "actions_count") >= 4, "{lines:?}");
    assert!(sum("vcpu", "exit_io_out") > 0, "{lines:?}");
    assert!(lines[0]["block_data"].is_object(), "{:?}", lines[0]);
    assert!(lines[0]["entropy"].is_object(), "{:?}", lines[0]);
}
