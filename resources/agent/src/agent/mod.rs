//! The agent: accepts connections on AF_VSOCK (or, for host tests, a Unix socket)
//! and serves each on its own thread: one request, then that request's frames.

mod connect;
mod copy;
mod exec;
mod listen;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::protocol::{read_frame, write_frame, Frame, PORT};
use listen::Listener;

/// Most connections served at once; more get an Error frame and are closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Stack of a connection's threads (they hold one 64 KiB buffer on the heap).
const THREAD_STACK: usize = 256 * 1024;
/// Pause after a failed accept (out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Exit status for a command-line mistake.
const EXIT_USAGE: u8 = 2;
/// Exit status when the agent cannot listen.
const EXIT_ERROR: u8 = 1;

const USAGE: &str = "usage: cabin-agent [--port N]\n\
    \x20      cabin-agent connect PORT\n\
    Serves `cabin exec` and `cabin cp` on AF_VSOCK port N (default 10789); with\n\
    `connect`, sends stdin to the host's vsock PORT and prints the answer.";

/// Where to listen.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Vsock(u32),
    /// For host tests only: a Unix socket path instead of AF_VSOCK.
    Unix(OsString),
    /// `connect PORT`: a client of the host's vsock PORT, not a server.
    Connect(u32),
}

/// A vsock port given after `option` (any u32 but VMADDR_PORT_ANY).
fn parse_port(option: &str, value: OsString) -> Result<u32, (String, u8)> {
    value
        .to_str()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&p| p != u32::MAX)
        .ok_or_else(|| {
            (
                format!("cabin-agent: {option} {value:?} is not a port number (0 to 4294967294)"),
                EXIT_USAGE,
            )
        })
}

/// Parses the options; `Err` holds the line to print and the exit status.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Endpoint, (String, u8)> {
    let mut endpoint = Endpoint::Vsock(PORT);
    let mut args = args.into_iter().peekable();
    if args.peek().and_then(|a| a.to_str()) == Some("connect") {
        args.next();
        let port = parse_port("connect", args.next().unwrap_or_default())?;
        if let Some(extra) = args.next() {
            return Err((
                format!("cabin-agent: unknown argument {extra:?} after connect PORT"),
                EXIT_USAGE,
            ));
        }
        return Ok(Endpoint::Connect(port));
    }
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--port") => {
                endpoint = Endpoint::Vsock(parse_port("--port", args.next().unwrap_or_default())?);
            }
            Some("--unix") => match args.next() {
                Some(path) => endpoint = Endpoint::Unix(path),
                None => return Err(("cabin-agent: --unix needs a PATH".into(), EXIT_USAGE)),
            },
            Some("--help" | "-h") => return Err((USAGE.into(), 0)),
            Some("--version" | "-V") => {
                return Err((format!("cabin-agent {}", env!("CARGO_PKG_VERSION")), 0))
            }
            _ => {
                return Err((
                    format!("cabin-agent: unknown argument {arg:?}\n{USAGE}"),
                    EXIT_USAGE,
                ))
            }
        }
    }
    Ok(endpoint)
}

/// The whole agent: parses `args` (without the program name), listens, serves
/// forever; returns the exit status only when it cannot start.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    let endpoint = match parse_args(args) {
        Ok(endpoint) => endpoint,
        Err((text, status)) => {
            say(&text);
            return status;
        }
    };
    let listener = match &endpoint {
        Endpoint::Vsock(port) => Listener::vsock(*port),
        Endpoint::Unix(path) => Listener::unix(path.as_ref()),
        Endpoint::Connect(port) => {
            return match connect::run(*port) {
                Ok(()) => 0,
                Err(message) => {
                    say(&format!("cabin-agent: {message}"));
                    EXIT_ERROR
                }
            }
        }
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(e) => {
            say(&format!("cabin-agent: {}", error_chain(&e)));
            return EXIT_ERROR;
        }
    };
    match &endpoint {
        Endpoint::Vsock(port) => say(&format!("cabin-agent: listening on vsock port {port}")),
        Endpoint::Unix(path) => say(&format!(
            "cabin-agent: listening on {}",
            path.to_string_lossy()
        )),
        Endpoint::Connect(_) => {}
    }
    serve_forever(&listener)
}

/// Prints one line on stderr; unlike `eprintln!`, a broken stderr (init may give
/// the agent a pipe nobody reads) is ignored instead of panicking. The line and its
/// newline go out in one write: started from init, the agent shares the console
/// with whatever init runs next, and `writeln!` on the unbuffered stderr writes
/// the text and the newline apart, so another line could land between them.
fn say(line: &str) {
    let _ = io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn serve_forever(listener: &Listener) -> u8 {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let mut conn = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // EMFILE, ENOBUFS, ECONNABORTED: the listener stays usable; wait a
                // little so that a lasting shortage does not spin.
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let message = format!("cabin-agent is busy: {MAX_CONNECTIONS} requests are running");
            let _ = write_frame(&mut conn, &Frame::Error { errno: 0, message });
            continue;
        }
        let counter = ActiveGuard(Arc::clone(&active));
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _counter = counter;
                serve(conn);
            });
        // A failed spawn drops the closure: the connection closes, the count drops.
        drop(spawned);
    }
}

/// Decrements the count of active connections when the connection's thread ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection: its first frame says what to do.
fn serve(mut conn: File) {
    let request = match read_frame(&mut conn) {
        Ok(Some(frame)) => frame,
        Ok(None) => return,
        Err(e) => {
            refuse(&mut conn, format!("cabin-agent: {}", error_chain(&e)));
            return;
        }
    };
    match request {
        Frame::Exec(request) => exec::run(conn, request),
        Frame::CopyIn { path, mode } => copy::copy_in(conn, path, mode),
        Frame::CopyOut { path } => copy::copy_out(conn, path),
        other => refuse(
            &mut conn,
            format!(
                "cabin-agent: expected Exec, CopyIn or CopyOut first, got {}",
                other.name()
            ),
        ),
    }
}

/// Sends an Error frame (errno 0); the caller then closes the connection.
fn refuse(conn: &mut File, message: String) {
    let _ = write_frame(conn, &Frame::Error { errno: 0, message });
}

/// Shuts the connection down both ways, which wakes a thread blocked reading it.
fn shutdown(conn: &File) {
    // SAFETY: shutdown(2) only changes the state of the socket `conn` owns (open for
    // as long as the borrow lasts); it touches no memory.
    unsafe { libc::shutdown(conn.as_raw_fd(), libc::SHUT_RDWR) };
}

/// An OS error as text without Rust's " (os error N)" suffix.
fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&os_text_of(cause));
        source = cause.source();
    }
    line
}

fn os_text_of(err: &(dyn std::error::Error + 'static)) -> String {
    match err.downcast_ref::<io::Error>() {
        Some(e) => os_text(e),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Endpoint, (String, u8)> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn parse_args_defaults_to_the_documented_port() {
        assert_eq!(parse(&[]), Ok(Endpoint::Vsock(10789)));
        assert_eq!(parse(&["--port", "52"]), Ok(Endpoint::Vsock(52)));
        assert_eq!(
            parse(&["--unix", "/tmp/a"]),
            Ok(Endpoint::Unix("/tmp/a".into()))
        );
    }

    #[test]
    fn parse_args_mistakes_are_one_line_and_status_2() {
        let (text, status) = parse(&["--port", "x"]).unwrap_err();
        assert_eq!(status, 2);
        assert!(text.contains("not a port number"), "{text}");
        assert_eq!(parse(&["--port"]).unwrap_err().1, 2);
        assert_eq!(parse(&["--bogus"]).unwrap_err().1, 2);
        assert_eq!(parse(&["--help"]).unwrap_err().1, 0);
    }

    #[test]
    fn parse_args_connect_takes_one_port() {
        assert_eq!(parse(&["connect", "5000"]), Ok(Endpoint::Connect(5000)));
        let (text, status) = parse(&["connect", "x"]).unwrap_err();
        assert_eq!(status, 2);
        assert!(
            text.contains("connect \"x\" is not a port number"),
            "{text}"
        );
        assert_eq!(parse(&["connect"]).unwrap_err().1, 2);
        assert_eq!(parse(&["connect", "1", "2"]).unwrap_err().1, 2);
    }

    #[test]
    fn os_text_drops_the_error_number() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_text(&e), "No such file or directory");
    }
}
