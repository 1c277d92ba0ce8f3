//! Exec: run one command with piped stdio and stream it over the connection.
//!
//! Threads per command: the connection's own (spawns, waits, sends Exit), one pump
//! each for stdout and stderr, and one reading the connection (Stdin frames into the
//! child's stdin; the connection ending kills the command). Frames are written whole
//! under one lock. The command runs in its own process group, and the group is killed
//! with SIGKILL when the client goes away; the kill and the reaping are ordered by a
//! lock, so a reaped (and possibly reused) pid is never signalled.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{os_text, refuse, shutdown, THREAD_STACK};
use crate::protocol::{read_frame, write_frame, ExecRequest, ExitReason, Frame, DATA_CHUNK};

/// PATH for the command when neither the agent nor the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// After the command exits, its output pipes are drained until they have been empty
/// this long (a background process it left may hold them open forever).
const DRAIN_IDLE: Duration = Duration::from_millis(200);
/// How often the drain checks the pumps.
const DRAIN_POLL: Duration = Duration::from_millis(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection's write side, shared by the threads; `None` once the command's
/// Exit is sent or a write failed.
type Writer = Arc<Mutex<Option<File>>>;

/// One of the command's output pipes, if it was piped.
type OutputPipe = Option<Box<dyn Read + Send>>;

/// Wraps output bytes in their frame (Stdout or Stderr).
type FrameKind = fn(Vec<u8>) -> Frame;

/// The child's pid, and whether it has been reaped.
struct ChildGuard {
    pid: libc::pid_t,
    reaped: Mutex<bool>,
}

impl ChildGuard {
    /// SIGKILLs the command's process group unless the command has been reaped.
    fn kill(&self) {
        let reaped = lock(&self.reaped);
        if !*reaped {
            // SAFETY: kill(2) takes no pointers. The group leader `pid` is our child
            // and not reaped (checked under the lock the reaper holds while reaping),
            // so the group id still names its group and not a reused one.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }
}

/// Sends a frame unless the writer is closed; a failed write closes it and kills the
/// command (the client is gone). Returns whether the frame was sent.
fn send(writer: &Writer, child: &ChildGuard, frame: &Frame) -> bool {
    let mut conn = lock(writer);
    let Some(file) = conn.as_mut() else {
        return false;
    };
    if write_frame(file, frame).is_ok() {
        return true;
    }
    *conn = None;
    drop(conn);
    child.kill();
    false
}

/// What the drain watches in an output pump.
#[derive(Default)]
struct PumpState {
    /// Since when the pump has been waiting in read(), if it is.
    waiting_since: Mutex<Option<Instant>>,
    /// The pipe reached EOF (or the pump stopped).
    done: AtomicBool,
}

/// Copies one output pipe of the command into Stdout or Stderr frames.
fn pump(
    mut pipe: impl Read,
    wrap: FrameKind,
    writer: Writer,
    child: Arc<ChildGuard>,
    state: Arc<PumpState>,
) {
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        *lock(&state.waiting_since) = Some(Instant::now());
        let read = pipe.read(&mut buf);
        *lock(&state.waiting_since) = None;
        match read {
            Ok(0) => break,
            Ok(n) => {
                if !send(&writer, &child, &wrap(buf[..n].to_vec())) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    state.done.store(true, Ordering::SeqCst);
}

/// Reads the client's frames: Stdin data into the child, StdinEof closes its stdin.
/// The connection ending, or any other frame, kills the command.
fn feed_stdin(mut conn: File, mut stdin: Option<ChildStdin>, child: Arc<ChildGuard>) {
    loop {
        match read_frame(&mut conn) {
            Ok(Some(Frame::Stdin(data))) => {
                if let Some(pipe) = stdin.as_mut() {
                    // The command may have closed its stdin or exited: drop the rest.
                    if pipe.write_all(&data).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(Frame::StdinEof)) => stdin = None,
            // EOF, an error, a malformed or unexpected frame: the client is gone or
            // broken, and the command goes with it (a no-op once it was reaped).
            _ => {
                child.kill();
                return;
            }
        }
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
        .spawn(f)
        .ok()
}

/// The command for a request.
fn command(request: &ExecRequest) -> Command {
    let mut command = Command::new(OsStr::from_bytes(&request.argv[0]));
    command.args(request.argv[1..].iter().map(|a| OsStr::from_bytes(a)));
    if std::env::var_os("PATH").is_none() {
        command.env("PATH", DEFAULT_PATH);
    }
    for entry in &request.env {
        // The protocol guarantees KEY=VALUE with a non-empty KEY.
        if let Some(at) = entry.iter().position(|&b| b == b'=') {
            command.env(
                OsStr::from_bytes(&entry[..at]),
                OsStr::from_bytes(&entry[at + 1..]),
            );
        }
    }
    if let Some(cwd) = &request.cwd {
        command.current_dir(OsStr::from_bytes(cwd));
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Runs the request's command and streams it over `conn` until it exits.
pub fn run(mut conn: File, request: ExecRequest) {
    if let Some(cwd) = &request.cwd {
        let cwd = OsStr::from_bytes(cwd);
        if let Err(e) = std::fs::read_dir(cwd) {
            let cwd = cwd.to_string_lossy();
            refuse(
                &mut conn,
                format!("cannot use {cwd} as the working directory: {}", os_text(&e)),
            );
            return;
        }
    }
    let mut child = match command(&request).spawn() {
        Ok(child) => child,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            let message = os_text(&e);
            let _ = write_frame(&mut conn, &Frame::Error { errno, message });
            return;
        }
    };
    let guard = Arc::new(ChildGuard {
        pid: child.id() as libc::pid_t,
        reaped: Mutex::new(false),
    });
    let Ok(reader) = conn.try_clone() else {
        guard.kill();
        let _ = child.wait();
        return;
    };
    let writer: Writer = Arc::new(Mutex::new(Some(conn)));
    let stdin = child.stdin.take();
    let feeder = {
        let guard = Arc::clone(&guard);
        spawn_thread("stdin", move || feed_stdin(reader, stdin, guard))
    };
    let mut pumps = Vec::new();
    let outputs: [(OutputPipe, FrameKind); 2] = [
        (child.stdout.take().map(|p| Box::new(p) as _), Frame::Stdout),
        (child.stderr.take().map(|p| Box::new(p) as _), Frame::Stderr),
    ];
    for (pipe, wrap) in outputs {
        let state = Arc::new(PumpState::default());
        if let Some(pipe) = pipe {
            let (writer, guard, pump_state) =
                (Arc::clone(&writer), Arc::clone(&guard), Arc::clone(&state));
            if spawn_thread("output", move || {
                pump(pipe, wrap, writer, guard, pump_state)
            })
            .is_none()
            {
                // A pump that could not start counts as drained.
                state.done.store(true, Ordering::SeqCst);
            }
        }
        pumps.push(state);
    }
    if feeder.is_none() {
        guard.kill();
    }
    let status = wait_exit(&guard, &mut child);
    drain(&pumps);
    let reason = match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitReason::Code(code),
            (None, Some(signal)) => ExitReason::Signal(signal),
            (None, None) => ExitReason::Code(-1),
        },
        None => ExitReason::Code(-1),
    };
    let mut conn = lock(&writer);
    if let Some(mut file) = conn.take() {
        let _ = write_frame(&mut file, &Frame::Exit(reason));
        // Wakes the stdin thread, which then ends.
        shutdown(&file);
    }
    drop(conn);
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
}

/// Waits for the command to exit, then reaps it under the guard's lock.
fn wait_exit(
    guard: &ChildGuard,
    child: &mut std::process::Child,
) -> Option<std::process::ExitStatus> {
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value for waitid
        // to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t that waitid writes into; WNOWAIT leaves
        // the child a zombie, so its pid stays ours until `child.wait()` below.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                guard.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let mut reaped = lock(&guard.reaped);
    let status = child.wait().ok();
    *reaped = true;
    status
}

/// Lets the pumps forward what the command wrote before it exited: returns when both
/// reached EOF, or when each one still running has found its pipe empty for
/// [`DRAIN_IDLE`] (something the command left behind holds the pipe open).
fn drain(pumps: &[Arc<PumpState>]) {
    loop {
        let settled = pumps.iter().all(|pump| {
            pump.done.load(Ordering::SeqCst)
                || lock(&pump.waiting_since).is_some_and(|since| since.elapsed() >= DRAIN_IDLE)
        });
        if settled {
            return;
        }
        thread::sleep(DRAIN_POLL);
    }
}
