//! virtio-vsock and cabin-agent with real Linux guests: `cabin exec` and `cabin cp`
//! against the busybox initramfs, whose init starts cabin-agent. Run through
//! `make test` (native KVM or the sandbox), with `--ignored`.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};

use common::{cabin_bin, ctl, scratch_dir, spawn_interactive_initramfs, Cabin};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const EXEC_TIMEOUT: Duration = Duration::from_secs(240);
/// What the guest's init prints once cabin-agent listens.
const AGENT_READY: &str = "cabin-agent: listening on vsock port 10789";

/// A booted initramfs guest with a vsock device and an API socket.
struct Guest {
    cabin: Cabin,
    dir: PathBuf,
    sock: PathBuf,
    uds: PathBuf,
}

impl Guest {
    fn boot(name: &str) -> Guest {
        let dir = scratch_dir(name);
        let sock = dir.join("api.sock");
        let uds = dir.join("v.sock");
        let vsock = format!("cid=3,path={}", uds.display());
        let cabin =
            spawn_interactive_initramfs(&["--vsock", &vsock, "--api-sock", sock.to_str().unwrap()]);
        common::wait_for_socket(&sock, &cabin);
        let out = ctl(&sock, &["start"]);
        assert!(out.status.success(), "{out:?}");
        cabin.expect_stdout(AGENT_READY, BOOT_TIMEOUT);
        Guest {
            cabin,
            dir,
            sock,
            uds,
        }
    }

    fn command(&self, verb: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(cabin_bin());
        cmd.arg(verb).arg("--api-sock").arg(&self.sock).args(args);
        cmd
    }

    /// `cabin exec -- ARGS` with `stdin`, to completion.
    fn exec(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut full = vec!["--"];
        full.extend(args);
        run(self.command("exec", &full), stdin)
    }

    /// `cabin exec` that must succeed; its stdout.
    fn exec_ok(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script], b"");
        assert!(out.status.success(), "{script}: {}", describe(&out, self));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts the VMM still runs the guest (it survived what the test did).
    fn assert_alive(&self) {
        let out = ctl(&self.sock, &["status"]);
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(
            status.contains("Running"),
            "{status}\n{}",
            self.cabin.stderr.text()
        );
    }
}

fn describe(out: &Output, guest: &Guest) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- cabin stderr ---\n{}\n--- console ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        guest.cabin.stderr.text(),
        guest.cabin.stdout.text()
    )
}

/// Runs `cmd` with `stdin` written from a thread; kills it after EXEC_TIMEOUT.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start cabin");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    wait_output(child, EXEC_TIMEOUT)
}

fn wait_output(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill() of a child this test spawned and that has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("cabin did not finish within {timeout:?}");
        }
    }
}

fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = thread::spawn(move || input.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    data
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn exec_gives_stdout_stderr_and_exit_status_exactly() {
    let guest = Guest::boot("exec-exact");
    let out = guest.exec(
        &[
            "sh",
            "-c",
            "echo out-line; echo err-line >&2; printf 'no newline'; exit 7",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out, &guest));
    assert_eq!(out.stdout, b"out-line\nno newline");
    assert_eq!(out.stderr, b"err-line\n");

    // Arguments arrive as given, spaces and quotes included.
    let out = guest.exec(&["printf", "[%s]", "a b", "'c'", ""], b"");
    assert_eq!(out.stdout, b"[a b]['c'][]", "{}", describe(&out, &guest));
    assert!(out.status.success());

    // A command killed by a signal: 128 + N, as shells report it.
    let out = guest.exec(&["sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "{}",
        describe(&out, &guest)
    );

    // A missing program and one that is not executable: 127 and 126, one line.
    let out = guest.exec(&["/no/such/program", "x"], b"");
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out, &guest));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("cabin exec: /no/such/program: "),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    guest.exec_ok("echo data > /tmp/plain");
    let out = guest.exec(&["/tmp/plain"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out, &guest));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/tmp/plain: Permission denied"), "{stderr}");
    guest.assert_alive();
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn exec_and_cp_carry_16_mib_of_binary_data_intact() {
    let guest = Guest::boot("exec-16m");
    let data = random_bytes(16 << 20);
    let sum = sha256(&data);

    // stdin to stdout through the guest's cat.
    let out = guest.exec(&["cat"], &data);
    assert!(out.status.success(), "{}", describe(&out, &guest));
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sum);

    // The guest checksums what it read from stdin.
    let out = guest.exec(&["sha256sum"], &data);
    assert!(out.status.success(), "{}", describe(&out, &guest));
    assert_eq!(&String::from_utf8_lossy(&out.stdout)[..64], sum);

    // cp in, checksum in the guest, cp back out.
    let local = guest.dir.join("data.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(
        guest.command("cp", &[local.to_str().unwrap(), "guest:/tmp/data.bin"]),
        b"",
    );
    assert!(out.status.success(), "{}", describe(&out, &guest));
    let listing = guest.exec_ok("sha256sum /tmp/data.bin; stat -c %a /tmp/data.bin");
    assert_eq!(listing, format!("{sum}  /tmp/data.bin\n640\n"));
    let back = guest.dir.join("back.bin");
    let out = run(
        guest.command("cp", &["guest:/tmp/data.bin", back.to_str().unwrap()]),
        b"",
    );
    assert!(out.status.success(), "{}", describe(&out, &guest));
    assert_eq!(sha256(&std::fs::read(&back).unwrap()), sum);

    // A guest file that is not there: cabin cp says so.
    let out = run(
        guest.command("cp", &["guest:/tmp/nothing", back.to_str().unwrap()]),
        b"",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("cabin cp: ") && stderr.contains("/tmp/nothing"),
        "{stderr}"
    );
    guest.assert_alive();
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn exec_runs_32_commands_at_once() {
    let guest = Guest::boot("exec-32");
    let children: Vec<(u32, Child)> = (0..32u32)
        .map(|i| {
            let script = format!("sleep 1; echo $(({i} * {i}))");
            let child = guest
                .command("exec", &["--", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, child)
        })
        .collect();
    for (i, child) in children {
        let out = wait_output(child, EXEC_TIMEOUT);
        assert!(out.status.success(), "{i}: {}", describe(&out, &guest));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", i * i));
    }
    guest.assert_alive();
}

/// Starts `cabin exec -- sh -c SCRIPT`, feeding it `stdin` from a thread, and waits
/// for its first output line.
fn start_exec(
    guest: &Guest,
    script: &str,
    first: &str,
    stdin: Vec<u8>,
) -> (Child, std::process::ChildStdout) {
    let mut child = guest
        .command("exec", &["--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(first.as_bytes()) {
        let n = stdout.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "exec ended before {first:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    (child, stdout)
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn the_agent_killed_mid_command_is_reported_and_cabin_survives() {
    let guest = Guest::boot("exec-agent-killed");
    let (mut child, _stdout) =
        start_exec(&guest, "echo started; sleep 1000", "started\n", Vec::new());
    // Killing the agent also ends this exec's own connection: its result is moot.
    let _ = guest.exec(&["killall", "-KILL", "cabin-agent"], b"");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert!(stderr.starts_with("cabin exec: "), "{stderr}");
    assert!(stderr.contains("mid-command"), "{stderr}");
    guest.assert_alive();

    // With no agent, exec gives up after --timeout and says why.
    let start = Instant::now();
    let out = run(
        guest.command("exec", &["--timeout", "3", "--", "true"]),
        b"",
    );
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out, &guest));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no agent answered on vsock port 10789 within 3"),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(60),
        "{took:?}"
    );
    guest.assert_alive();
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn the_host_side_closing_mid_stream_ends_the_command() {
    let guest = Guest::boot("exec-host-closes");
    // A command streaming as fast as it can, and one that never reads the 8 MiB
    // its client sends (the guest's socket fills up, the device stops reading the
    // client for want of credit): each client is killed mid-stream.
    let cases = [
        (
            "streamer",
            "while :; do echo yyyyyyyyyyyyyyyyyyyyyyyy; done",
            Vec::new(),
        ),
        ("sleeper", "exec sleep 1000", vec![0x5a; 8 << 20]),
    ];
    for (name, body, stdin) in cases {
        let script = format!("echo $$ >/tmp/{name}.pid; echo started; {body}");
        let (mut child, stdout) = start_exec(&guest, &script, "started\n", stdin);
        child.kill().unwrap();
        child.wait().unwrap();
        drop(stdout);
        // The agent kills the orphaned command; ask the guest until it is gone.
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe =
            format!("kill -0 $(cat /tmp/{name}.pid) 2>/dev/null && echo alive || echo gone");
        while guest.exec_ok(&probe) != "gone\n" {
            assert!(Instant::now() < deadline, "the {name} outlived its client");
        }
    }

    // Raw host connections that go away at every step: before CONNECT, after half
    // a line, right after OK, and with a port nothing listens on.
    drop(UnixStream::connect(&guest.uds).unwrap());
    let mut half = UnixStream::connect(&guest.uds).unwrap();
    half.write_all(b"CONN").unwrap();
    drop(half);
    let mut ok = UnixStream::connect(&guest.uds).unwrap();
    ok.write_all(b"CONNECT 10789\n").unwrap();
    let mut line = [0u8; 3];
    ok.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK ");
    drop(ok);
    let mut nobody = UnixStream::connect(&guest.uds).unwrap();
    nobody.write_all(b"CONNECT 4444\n").unwrap();
    let mut rest = Vec::new();
    nobody.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    assert_eq!(guest.exec_ok("echo still-here"), "still-here\n");
    guest.assert_alive();
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn a_guest_connection_reaches_a_host_listener() {
    let guest = Guest::boot("exec-guest-connects");
    let path = PathBuf::from(format!("{}_5000", guest.uds.display()));
    let listener = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = [0u8; 17];
        conn.read_exact(&mut got).unwrap();
        conn.write_all(b"hello from the host\n").unwrap();
        got
    });
    let out = guest.exec(
        &[
            "sh",
            "-c",
            "echo hello-from-guest | cabin-agent connect 5000",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", describe(&out, &guest));
    assert_eq!(out.stdout, b"hello from the host\n");
    assert_eq!(&server.join().unwrap(), b"hello-from-guest\n");

    // Nothing listens on port 5001: the guest's connect is refused.
    let out = guest.exec(&["cabin-agent", "connect", "5001"], b"");
    assert!(!out.status.success(), "{}", describe(&out, &guest));
    guest.assert_alive();
}

#[test]
#[ignore = "boots a Linux guest: make test (or the sandbox) runs it"]
fn exec_works_after_pause_resume_and_after_a_restore() {
    let guest = Guest::boot("exec-pause");
    assert_eq!(
        guest.exec_ok("echo before > /tmp/mark; cat /tmp/mark"),
        "before\n"
    );
    for action in ["pause", "resume"] {
        let out = ctl(&guest.sock, &[action]);
        assert!(out.status.success(), "{action}: {out:?}");
    }
    assert_eq!(guest.exec_ok("cat /tmp/mark"), "before\n");

    // A snapshot, and a restore listening on another socket: the guest's driver
    // drops its old connections (transport reset) and the agent serves again.
    let snap = guest.dir.join("snap");
    std::fs::create_dir(&snap).unwrap();
    let out = ctl(&guest.sock, &["snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut original = guest;
    original.cabin.signal(libc::SIGKILL);
    original.cabin.wait_exit(BOOT_TIMEOUT);
    let sock = original.dir.join("restored.sock");
    let uds = original.dir.join("restored-v.sock");
    let restored = Cabin::spawn(&[
        "run",
        "--restore",
        snap.to_str().unwrap(),
        "--vsock",
        &format!("path={}", uds.display()),
        "--api-sock",
        sock.to_str().unwrap(),
    ]);
    common::wait_for_socket(&sock, &restored);
    let restored = Guest {
        cabin: restored,
        dir: original.dir.clone(),
        sock,
        uds,
    };
    assert_eq!(restored.exec_ok("cat /tmp/mark"), "before\n");
    restored.assert_alive();
}
