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
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{os_text, refuse, shutdown, THREAD_STACK};
use crate::protocol::{read_frame, write_frame, ExecRequest, ExitReason, Frame, DATA_CHUNK};

/// PATH for the command when neither the agent nor the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// After the command exits, its output pipes are forwarded until they reach EOF or
/// stay empty this long (a background process it left may hold them open forever).
const DRAIN_IDLE: Duration = Duration::from_millis(200);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection's write side, shared by the threads; `None` once the command's
/// Exit is sent or a write failed.
type Writer = Arc<Mutex<Option<File>>>;

/// One of the command's output pipes, if it was piped.
type OutputPipe = Option<File>;

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

/// What a pump's wait ended with.
enum Wake {
    /// The pipe has data, EOF or an error: the next read tells.
    Pipe,
    /// The command exited (its notifier hung up).
    Exited,
    /// Nothing within the timeout.
    Idle,
    /// poll failed (interrupted): wait again.
    Again,
}

/// Waits for the pipe, and for the exit notifier unless `exit` is None; `None` as
/// timeout waits without one.
fn wait(pipe: &File, exit: Option<&UnixStream>, timeout: Option<Duration>) -> Wake {
    let entry = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [
        entry(pipe.as_raw_fd()),
        entry(exit.map_or(-1, |e| e.as_raw_fd())),
    ];
    let millis = timeout.map_or(-1, |t| {
        libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: `fds` is an array of two live pollfds and the count passed is 2, so
    // poll writes only their `revents`; the descriptors stay open for the call
    // (borrowed from `pipe` and `exit`), and a negative fd is ignored by poll.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
    if rc < 0 {
        Wake::Again
    } else if fds[0].revents != 0 {
        Wake::Pipe
    } else if fds[1].revents != 0 {
        Wake::Exited
    } else {
        Wake::Idle
    }
}

/// Copies one output pipe of the command into Stdout or Stderr frames until EOF, or
/// until the pipe has stayed empty for [`DRAIN_IDLE`] after the command exited (a
/// background process it left may hold the pipe open forever). Whatever the command
/// wrote before exiting is in the pipe before that wait begins, so it is all
/// forwarded. `exit` hangs up when the command has exited.
fn pump(mut pipe: File, wrap: FrameKind, writer: Writer, child: Arc<ChildGuard>, exit: UnixStream) {
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut exited = false;
    loop {
        let wake = if exited {
            wait(&pipe, None, Some(DRAIN_IDLE))
        } else {
            wait(&pipe, Some(&exit), None)
        };
        match wake {
            Wake::Pipe => {}
            Wake::Exited => {
                exited = true;
                continue;
            }
            Wake::Idle => return,
            Wake::Again => continue,
        }
        match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !send(&writer, &child, &wrap(buf[..n].to_vec())) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads the client's frames: Stdin data into the child, StdinEof closes its stdin.
/// The connection ending, or any other frame, kills the command.
fn feed_stdin(mut conn: File, stdin: Option<ChildStdin>, child: Arc<ChildGuard>) {
    let mut stdin = stdin.and_then(|pipe| nonblocking(File::from(OwnedFd::from(pipe))));
    loop {
        match read_frame(&mut conn) {
            Ok(Some(Frame::Stdin(data))) => {
                if let Some(pipe) = stdin.as_mut() {
                    match write_stdin(pipe, &data, &conn) {
                        StdinWrite::Done => {}
                        // The command closed its stdin or exited: drop the rest.
                        StdinWrite::PipeClosed => stdin = None,
                        StdinWrite::ClientGone => {
                            child.kill();
                            return;
                        }
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

/// The pipe in non-blocking mode, or None (no stdin) when that fails.
fn nonblocking(pipe: File) -> Option<File> {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl F_GETFL/F_SETFL take no pointers and only change the flags of the
    // open file description of `pipe`, our write end of the command's stdin (the
    // command's read end is another description, so it stays blocking).
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    ok.then_some(pipe)
}

/// How writing to the command's stdin ended.
enum StdinWrite {
    Done,
    PipeClosed,
    ClientGone,
}

/// Writes `data` into the command's (non-blocking) stdin while watching the
/// connection, so that a command that does not read its stdin cannot hide that the
/// client went away.
fn write_stdin(pipe: &mut File, mut data: &[u8], conn: &File) -> StdinWrite {
    while !data.is_empty() {
        match pipe.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = [
                    libc::pollfd {
                        fd: pipe.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: conn.as_raw_fd(),
                        events: libc::POLLRDHUP,
                        revents: 0,
                    },
                ];
                // SAFETY: `fds` is an array of two live pollfds and the count passed
                // is 2, so poll writes only their `revents`; both descriptors stay
                // open for the call (borrowed from `pipe` and `conn`).
                unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                if fds[1].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                    return StdinWrite::ClientGone;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return StdinWrite::PipeClosed,
        }
    }
    StdinWrite::Done
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
    // Dropping `exit_notifier` when the command has exited wakes the pumps.
    let Ok((exit_notifier, exit_watch)) = UnixStream::pair() else {
        guard.kill();
        let _ = child.wait();
        return;
    };
    let mut pumps = Vec::new();
    let outputs: [(OutputPipe, FrameKind); 2] = [
        (
            child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            Frame::Stdout,
        ),
        (
            child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
            Frame::Stderr,
        ),
    ];
    for (pipe, wrap) in outputs.into_iter() {
        let Some(pipe) = pipe else { continue };
        let (writer, guard) = (Arc::clone(&writer), Arc::clone(&guard));
        let Ok(exit) = exit_watch.try_clone() else {
            continue;
        };
        // A pump that cannot start loses that output; the command still runs.
        pumps.extend(spawn_thread("output", move || {
            pump(pipe, wrap, writer, guard, exit)
        }));
    }
    if feeder.is_none() {
        guard.kill();
    }
    let status = wait_exit(&guard, &mut child);
    drop(exit_notifier);
    for pump in pumps {
        let _ = pump.join();
    }
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
