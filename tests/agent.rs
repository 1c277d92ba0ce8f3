//! `cabin exec` and `cabin cp` against the real cabin-agent, without a VM.
//!
//! The pieces of a VM these commands meet are faked in this process: the API socket
//! answers `GET /vm/config`, and the hybrid vsock socket reads `CONNECT <port>\n`,
//! answers `OK 1\n` and then joins the connection to the agent's Unix socket (or,
//! with no agent, closes it as the VMM does when nothing listens on the port).
//!
//! How the agent runs: this test binary starts itself again, running only the test
//! [`agent_process`], which hands its environment's Unix socket to
//! `cabin_agent::agent::main` (the function the `cabin-agent` binary's main calls).
//! So the agent under test is always the current code, in its own process (it can
//! be killed), with no search for a possibly stale binary in a target directory and
//! no nested cargo (which would wait on the lock of the cargo running the tests).
//! Not covered here: AF_VSOCK itself, and the binary's one-line main unless
//! `CABIN_AGENT_BIN=path/to/cabin-agent` names a binary to test instead.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{cabin_bin, scratch_dir};

/// The environment variable that turns a run of this binary into the agent.
const AGENT_ENV: &str = "CABIN_TEST_AGENT_UNIX";
/// Set to a `cabin-agent` binary (e.g. the static release build) to test that
/// binary instead.
const AGENT_BIN_ENV: &str = "CABIN_AGENT_BIN";

/// Not a test when run by cargo: the agent's process entry point (see the top).
#[test]
fn agent_process() {
    if let Some(path) = std::env::var_os(AGENT_ENV) {
        let status = cabin_agent::agent::main([std::ffi::OsString::from("--unix"), path]);
        std::process::exit(i32::from(status));
    }
}

/// What the fake VMM does with `CONNECT`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vsock {
    /// The config has no vsock.
    Absent,
    /// Nothing listens in the guest: every CONNECT is answered by EOF.
    NoAgent,
    /// The agent listens.
    Agent,
}

/// A fake VM: API socket, hybrid vsock socket and (maybe) the agent.
struct Vm {
    dir: PathBuf,
    api: PathBuf,
    agent: Option<Child>,
}

impl Vm {
    fn start(name: &str, vsock: Vsock) -> Vm {
        let dir = scratch_dir(&format!("agent-{name}"));
        let api = dir.join("api.sock");
        let uds = dir.join("vsock.sock");
        let agent_sock = dir.join("agent.sock");
        let agent = (vsock == Vsock::Agent).then(|| {
            let mut command = match std::env::var_os(AGENT_BIN_ENV) {
                Some(bin) => {
                    let mut command = Command::new(bin);
                    command.arg("--unix").arg(&agent_sock);
                    command
                }
                None => {
                    let mut command = Command::new(std::env::current_exe().unwrap());
                    command
                        .args([
                            "agent_process",
                            "--exact",
                            "--nocapture",
                            "--test-threads=1",
                        ])
                        .env(AGENT_ENV, &agent_sock);
                    command
                }
            };
            let child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start the agent");
            let deadline = Instant::now() + Duration::from_secs(30);
            while UnixStream::connect(&agent_sock).is_err() {
                assert!(Instant::now() < deadline, "the agent did not start");
                thread::sleep(Duration::from_millis(20)); // bounded by the deadline
            }
            child
        });
        let config = match vsock {
            Vsock::Absent => serde_json::json!({"machine-config": {}, "vsock": null}),
            _ => serde_json::json!({"vsock": {"guest_cid": 3, "uds_path": uds}}),
        };
        serve_api(UnixListener::bind(&api).unwrap(), config.to_string());
        let target = (vsock == Vsock::Agent).then_some(agent_sock);
        serve_vsock(UnixListener::bind(&uds).unwrap(), target);
        Vm { dir, api, agent }
    }

    fn cabin(&self, sub: &str, args: &[&str]) -> Command {
        let mut command = Command::new(cabin_bin());
        command.arg(sub).arg("--api-sock").arg(&self.api).args(args);
        command
    }

    /// Runs `cabin exec --timeout 5 -- ARGS` with empty stdin.
    fn exec(&self, args: &[&str]) -> Output {
        let mut command = self.cabin("exec", &["--timeout", "5", "--"]);
        command.args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill_agent();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Answers every request with the config document (GET /vm/config) or 404.
fn serve_api(listener: UnixListener, config: String) {
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let answer = if head.starts_with(b"GET /vm/config HTTP/1.1\r\n") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{config}",
                    config.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
}

/// The hybrid vsock backend: `CONNECT <port>\n`, then `OK 1\n` and a proxy to the
/// agent, or EOF when there is no agent (or the agent is gone).
fn serve_vsock(listener: UnixListener, agent: Option<PathBuf>) {
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let agent = agent.clone();
            thread::spawn(move || proxy(stream, agent));
        }
    });
}

fn proxy(mut client: UnixStream, agent: Option<PathBuf>) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && client.read(&mut byte).unwrap_or(0) == 1 {
        line.push(byte[0]);
    }
    let port_ok = line == format!("CONNECT {}\n", cabin_agent::PORT).as_bytes();
    let Some(agent) = agent.filter(|_| port_ok) else {
        return;
    };
    let Ok(guest) = UnixStream::connect(agent) else {
        return;
    };
    if client.write_all(b"OK 1\n").is_err() {
        return;
    }
    let pipe = |mut from: UnixStream, mut to: UnixStream| {
        let _ = std::io::copy(&mut from, &mut to);
        // One direction ending is passed on (the VMM's SHUTDOWN); the other
        // direction still delivers what is on its way.
        let _ = from.shutdown(std::net::Shutdown::Read);
        let _ = to.shutdown(std::net::Shutdown::Write);
    };
    // The client hanging up is noticed even while the agent takes no data, and is
    // passed on as a shutdown (the VMM sends the guest a SHUTDOWN).
    let (watched, guest3) = (client.try_clone().unwrap(), guest.try_clone().unwrap());
    thread::spawn(move || {
        let mut fds = libc::pollfd {
            fd: watched.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one live pollfd, count 1; `watched` keeps the descriptor open.
        unsafe { libc::poll(&mut fds, 1, -1) };
        let _ = guest3.shutdown(std::net::Shutdown::Write);
    });
    let (client2, guest2) = (client.try_clone().unwrap(), guest.try_clone().unwrap());
    thread::spawn(move || pipe(client2, guest2));
    pipe(guest, client);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failure: `code`, and stderr is exactly one line holding `fragments`.
fn assert_one_line(output: &Output, code: i32, fragments: &[&str]) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for fragment in fragments {
        assert!(stderr.contains(fragment), "{fragment:?} missing: {stderr}");
    }
}

#[test]
fn exec_stdout_stderr_and_exit_code_are_exact() {
    let vm = Vm::start("exact", Vsock::Agent);
    let output = vm.exec(&["sh", "-c", "printf 'out\\n'; printf err >&2; exit 7"]);
    assert_eq!(text(&output.stdout), "out\n");
    assert_eq!(text(&output.stderr), "err");
    assert_eq!(output.status.code(), Some(7));
    let output = vm
        .cabin(
            "exec",
            &[
                "-e",
                "X=y z",
                "-w",
                "/",
                "--",
                "sh",
                "-c",
                "echo \"$X\" $(pwd)",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(text(&output.stdout), "y z /\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn exec_returns_when_the_command_exits_though_a_background_process_holds_its_output() {
    let vm = Vm::start("background", Vsock::Agent);
    let start = Instant::now();
    let output = vm.exec(&["sh", "-c", "sleep 20 & echo done"]);
    assert_eq!(text(&output.stdout), "done\n");
    assert_eq!(output.status.code(), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn exec_missing_workdir_is_the_guest_error_and_255() {
    let vm = Vm::start("workdir", Vsock::Agent);
    let output = vm
        .cabin("exec", &["-w", "/nonexistent/dir", "--", "true"])
        .output()
        .unwrap();
    assert_one_line(
        &output,
        255,
        &["cabin exec: in the guest: cannot use /nonexistent/dir as the working directory: No such file or directory"],
    );
}

#[test]
fn exec_command_killed_by_signal_exits_128_plus_n() {
    let vm = Vm::start("signal", Vsock::Agent);
    let output = vm.exec(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(output.status.code(), Some(128 + 15));
}

#[test]
fn exec_missing_program_exits_127_and_not_executable_126() {
    let vm = Vm::start("missing", Vsock::Agent);
    let output = vm.exec(&["/nonexistent/prog", "x"]);
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(
        text(&output.stderr),
        "cabin exec: /nonexistent/prog: No such file or directory\n"
    );
    let script = vm.dir.join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = vm.exec(&[script.to_str().unwrap()]);
    assert_one_line(&output, 126, &["cabin exec: ", "Permission denied"]);
}

#[test]
fn exec_16_mib_of_binary_stdin_comes_back_through_cat() {
    let vm = Vm::start("cat", Vsock::Agent);
    let mut data = vec![0u8; 16 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let mut child = vm
        .cabin("exec", &["--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent = data.clone();
    let writer = thread::spawn(move || stdin.write_all(&sent).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(output.stdout.len(), data.len());
    assert_eq!(checksum(&output.stdout), checksum(&data));
    assert!(output.stdout == data);
}

/// FNV-1a, to report a mismatch compactly.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn exec_32_commands_at_once_each_get_their_own_output() {
    let vm = Vm::start("many", Vsock::Agent);
    let children: Vec<Child> = (0..32)
        .map(|i| {
            vm.cabin(
                "exec",
                &["--", "sh", "-c", "sleep 0.2; echo $0", &format!("n{i}")],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(text(&output.stdout), format!("n{i}\n"));
    }
    // Afterwards the agent is back to its accept thread (plus the test harness's
    // main thread when it runs inside this binary), with no child left, zombie or not.
    let agent = vm.agent.as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let threads = std::fs::read_dir(format!("/proc/{agent}/task"))
            .unwrap()
            .count();
        let children = children_of(agent);
        if threads <= 2 && children.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent {agent}: {threads} threads, children {children:?}"
        );
        thread::sleep(Duration::from_millis(20)); // bounded by the deadline
    }
}

/// The pids whose parent is `pid` (zombies included), from /proc/*/stat.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.extend(
                head.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children
}

#[test]
fn cp_copies_both_ways_keeping_content_and_mode() {
    let vm = Vm::start("cp", Vsock::Agent);
    let src = vm.dir.join("src.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &content).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
    // The "guest" shares this filesystem: guest paths are host paths here.
    let guest = vm.dir.join("in-guest");
    let dst = format!("guest:{}", guest.display());
    let output = vm
        .cabin("cp", &[src.to_str().unwrap(), &dst])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(&guest).unwrap(), content);
    let mode = std::fs::metadata(&guest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o751);
    let back = vm.dir.join("back.bin");
    let output = vm
        .cabin("cp", &[&dst, back.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), content);
    assert!(!vm.dir.join("back.bin.partial").exists());
}

#[test]
fn cp_missing_guest_file_is_a_clear_error() {
    let vm = Vm::start("cp-missing", Vsock::Agent);
    let dst = vm.dir.join("never");
    let output = vm
        .cabin("cp", &["guest:/nonexistent/file", dst.to_str().unwrap()])
        .output()
        .unwrap();
    assert_one_line(
        &output,
        1,
        &["cabin cp: in the guest: cannot open /nonexistent/file: No such file or directory"],
    );
    assert!(!dst.exists());
    assert!(!vm.dir.join("never.partial").exists());
    // Into a guest directory that does not exist; from a host file that does not.
    let src = vm.dir.join("src");
    std::fs::write(&src, vec![7u8; 4 << 20]).unwrap();
    let output = vm
        .cabin("cp", &[src.to_str().unwrap(), "guest:/nonexistent/dir/f"])
        .output()
        .unwrap();
    assert_one_line(
        &output,
        1,
        &["cabin cp: in the guest: cannot create /nonexistent/dir/f: No such file or directory"],
    );
    let output = vm
        .cabin("cp", &["/nonexistent/host-file", "guest:/tmp/f"])
        .output()
        .unwrap();
    assert_one_line(
        &output,
        1,
        &["cabin cp: cannot open /nonexistent/host-file: No such file or directory"],
    );
}

#[test]
fn exec_agent_killed_mid_command_exits_255() {
    let mut vm = Vm::start("agent-killed", Vsock::Agent);
    let mut child = vm
        .cabin("exec", &["--", "sh", "-c", "echo started; sleep 3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    vm.kill_agent();
    let output = child.wait_with_output().unwrap();
    assert_one_line(
        &output,
        255,
        &["cabin exec: the connection closed before the command finished; the agent or the guest stopped mid-command"],
    );
}

#[test]
fn exec_client_gone_mid_command_kills_the_command() {
    let vm = Vm::start("client-gone", Vsock::Agent);
    let mut child = vm
        .cabin("exec", &["--", "sh", "-c", "echo $$; exec sleep 100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    // Stdin the command never reads: the agent blocks writing it, and must still
    // notice that the client went away.
    let mut stdin = child.stdin.take().unwrap();
    thread::spawn(move || stdin.write_all(&vec![b'x'; 1 << 20]));
    thread::sleep(Duration::from_millis(200)); // lets the stdin pipe fill up
    child.kill().unwrap();
    child.wait().unwrap();
    // Gone, reaped (no zombie left under /proc) by the agent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() {
        assert!(Instant::now() < deadline, "the command {pid} still runs");
        thread::sleep(Duration::from_millis(20)); // bounded by the deadline
    }
}

#[test]
fn exec_without_vsock_names_the_fix() {
    let vm = Vm::start("no-vsock", Vsock::Absent);
    let output = vm.exec(&["true"]);
    assert_one_line(
        &output,
        255,
        &[
            "has no vsock device",
            "start cabin with --vsock cid=3,path=PATH, or PUT /vsock before InstanceStart",
        ],
    );
}

#[test]
fn exec_without_agent_times_out_after_about_the_timeout() {
    let vm = Vm::start("no-agent", Vsock::NoAgent);
    let start = Instant::now();
    let output = vm
        .cabin("exec", &["--timeout", "1", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_one_line(
        &output,
        255,
        &[
            "no agent answered on vsock port 10789 within 1 s",
            "is cabin-agent running in the guest?",
        ],
    );
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn exec_without_api_socket_says_so() {
    let dir = scratch_dir("agent-no-api");
    let api = dir.join("api.sock");
    let output = Command::new(cabin_bin())
        .args(["exec", "--api-sock", api.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    assert_one_line(
        &output,
        255,
        &["cannot reach cabin at", "is it running with --api-sock"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_refuses_a_malformed_first_frame_and_keeps_serving() {
    let vm = Vm::start("malformed", Vsock::Agent);
    let agent_sock = vm.dir.join("agent.sock");
    let mut raw = UnixStream::connect(&agent_sock).unwrap();
    raw.write_all(&[0x12, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let answer = cabin_agent::read_frame(&mut raw).unwrap();
    assert!(
        matches!(answer, Some(cabin_agent::Frame::Error { .. })),
        "{answer:?}"
    );
    let output = vm.exec(&["echo", "still here"]);
    assert_eq!(text(&output.stdout), "still here\n");
}
