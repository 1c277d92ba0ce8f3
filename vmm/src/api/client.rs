//! `cabin ctl`: drive a cabin started with `--api-sock` from shell scripts.
//!
//! One request per invocation over the Unix socket; the answer is parsed with
//! `httparse` and its body read by its Content-Length.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::model::{Action, ActionType, VmStatePatch, VmStateRequest};
use crate::cli::{CtlAction, CtlArgs};
use crate::error_chain;

/// `cabin ctl` succeeded.
pub const EXIT_OK: i32 = 0;
/// cabin refused the request (or its answer could not be read).
pub const EXIT_REFUSED: i32 = 1;
/// Nothing answers on the socket.
pub const EXIT_UNREACHABLE: i32 = 3;

/// How long to wait for cabin's answer (its server gives the VMM 30 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after its shutdown timeout `cabin ctl shutdown` waits for cabin to exit.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// Largest answer head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest answer body accepted.
const MAX_BODY_BYTES: usize = 4 << 20;

/// Why a request could not be completed after connecting.
#[derive(Debug, Error)]
pub enum CtlError {
    /// Nothing listens on the socket (or it is not a socket).
    #[error("cannot reach cabin at {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the request failed.
    #[error("cannot send the request to cabin")]
    Send(#[source] io::Error),
    /// Reading the answer failed or timed out.
    #[error("no complete answer from cabin")]
    Receive(#[source] io::Error),
    /// The answer is not HTTP cabin would send.
    #[error("cabin's answer cannot be read: {0}")]
    BadAnswer(String),
    /// cabin refused (its fault message), or a step before the request failed.
    #[error("{0}")]
    Refused(String),
}

/// An HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body (empty for 204).
    pub body: Vec<u8>,
}

/// The request for each action: method, path, JSON body.
fn request_for(action: &CtlAction) -> (&'static str, &'static str, Option<String>) {
    let action_body = |action_type| serde_json::to_string(&Action::new(action_type)).ok();
    let state_body = |state| serde_json::to_string(&VmStatePatch { state }).ok();
    match action {
        CtlAction::Status => ("GET", "/", None),
        CtlAction::Start => ("PUT", "/actions", action_body(ActionType::InstanceStart)),
        CtlAction::Pause => ("PATCH", "/vm", state_body(VmStateRequest::Paused)),
        CtlAction::Resume => ("PATCH", "/vm", state_body(VmStateRequest::Resumed)),
        CtlAction::CtrlAltDel => ("PUT", "/actions", action_body(ActionType::SendCtrlAltDel)),
        CtlAction::Config => ("GET", "/vm/config", None),
        CtlAction::Version => ("GET", "/version", None),
        CtlAction::FlushMetrics => ("PUT", "/actions", action_body(ActionType::FlushMetrics)),
        CtlAction::Snapshot { .. } => ("GET", "/", None),
        CtlAction::Shutdown { timeout } => {
            let action = Action {
                timeout_s: Some(*timeout),
                ..Action::new(ActionType::Shutdown)
            };
            ("PUT", "/actions", serde_json::to_string(&action).ok())
        }
    }
}

/// The bytes of one request.
fn format_request(method: &str, path: &str, body: Option<&str>) -> String {
    match body {
        Some(body) => format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Connection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        ),
    }
}

/// Parses an answer from what was read so far: Ok(None) while incomplete; `eof` says
/// the server closed the connection (ending a body without Content-Length).
pub fn parse_answer(bytes: &[u8], eof: bool) -> Result<Option<Answer>, CtlError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() > MAX_HEAD_BYTES => {
            return Err(CtlError::BadAnswer("its head is too large".into()))
        }
        Ok(httparse::Status::Partial) if eof => {
            return Err(CtlError::BadAnswer(
                "the connection closed mid-answer".into(),
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(CtlError::BadAnswer(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if (100..200).contains(&status) {
        // An interim answer (100 Continue): the real one follows.
        return parse_answer(&bytes[head_len..], eof);
    }
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(CtlError::BadAnswer("unexpected Transfer-Encoding".into()));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = String::from_utf8_lossy(header.value);
            let value = text
                .trim()
                .parse::<usize>()
                .map_err(|_| CtlError::BadAnswer(format!("invalid Content-Length {text:?}")))?;
            length = Some(value);
        }
    }
    let rest = &bytes[head_len..];
    let length = match (status, length) {
        (204 | 304, _) => 0,
        (_, Some(length)) if length > MAX_BODY_BYTES => {
            return Err(CtlError::BadAnswer(format!("a body of {length} bytes")))
        }
        (_, Some(length)) => length,
        (_, None) if eof => rest.len(),
        (_, None) => return Ok(None),
    };
    if rest.len() < length {
        if eof {
            return Err(CtlError::BadAnswer("the connection closed mid-body".into()));
        }
        return Ok(None);
    }
    Ok(Some(Answer {
        status,
        body: rest[..length].to_vec(),
    }))
}

/// Sends one request to the API socket at `socket` and returns cabin's answer.
pub fn send_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Answer, CtlError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| CtlError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(CtlError::Send)?;
    stream
        .write_all(format_request(method, path, body).as_bytes())
        .map_err(CtlError::Send)?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CtlError::Receive(e)),
        };
        received.extend_from_slice(&chunk[..n]);
        if let Some(answer) = parse_answer(&received, n == 0)? {
            return Ok(answer);
        }
        if received.len() > MAX_HEAD_BYTES + MAX_BODY_BYTES {
            return Err(CtlError::BadAnswer("it is too large".into()));
        }
    }
}

/// The `fault_message` of an error answer, or what the answer was when it has none.
fn fault_message(answer: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("fault_message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let body = String::from_utf8_lossy(&answer.body);
            format!("HTTP status {} {}", answer.status, body.trim())
                .trim_end()
                .to_owned()
        })
}

/// Runs `cabin ctl --api-sock PATH ACTION`: sends the request for ACTION to the cabin
/// serving PATH; `status` and `config` print the JSON answer on stdout.
///
/// Exit codes, for scripts:
/// - `0` ([`EXIT_OK`]): done (for `status` and `config`, the JSON is on stdout);
/// - `1` ([`EXIT_REFUSED`]): cabin refused (`cabin ctl: <fault_message>` on stderr,
///   one line), for instance `pause` before `start`; also when its answer could not be
///   read;
/// - `3` ([`EXIT_UNREACHABLE`]): nothing answers at PATH (`cabin ctl: cannot reach
///   cabin at PATH: <error>; is it running with --api-sock PATH?`).
///
/// (`2` is the usual command-line syntax error.)
pub fn run_ctl(args: &CtlArgs) -> i32 {
    if let CtlAction::Snapshot { dir, diff } = &args.action {
        return match snapshot(&args.api_sock, dir, *diff) {
            Ok(()) => EXIT_OK,
            Err(e) => report(e),
        };
    }
    let (method, path, body) = request_for(&args.action);
    let sent = send_request(&args.api_sock, method, path, body.as_deref());
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => return report(e),
    };
    match answer {
        answer if (200..300).contains(&answer.status) => {
            if !answer.body.is_empty() {
                print_json(&answer.body);
            }
            match args.action {
                CtlAction::Shutdown { timeout } => wait_for_exit(&args.api_sock, timeout),
                _ => EXIT_OK,
            }
        }
        answer => report(CtlError::Refused(fault_message(&answer))),
    }
}

/// Prints why `cabin ctl` failed, one line, and gives its exit status.
fn report(error: CtlError) -> i32 {
    match error {
        CtlError::Connect { path, source } => {
            let path = path.display();
            eprintln!(
                "cabin ctl: cannot reach cabin at {path}: {source}; is it running with --api-sock {path}?"
            );
            EXIT_UNREACHABLE
        }
        CtlError::Refused(message) => {
            eprintln!("cabin ctl: {message}");
            EXIT_REFUSED
        }
        e => {
            eprintln!("cabin ctl: {}", error_chain(&e));
            EXIT_REFUSED
        }
    }
}

/// `cabin ctl snapshot DIR`: pauses the VM unless it is paused, then writes
/// DIR/state and DIR/memory; the VM stays paused.
fn snapshot(socket: &Path, dir: &Path, diff: bool) -> Result<(), CtlError> {
    let call = |method, path, body: Option<String>| -> Result<Answer, CtlError> {
        let answer = send_request(socket, method, path, body.as_deref())?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(CtlError::Refused(fault_message(&answer)))
        }
    };
    let status = call("GET", "/", None)?;
    let state = serde_json::from_slice::<serde_json::Value>(&status.body)
        .ok()
        .and_then(|v| v.get("state")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    if state == "Running" {
        call(
            "PATCH",
            "/vm",
            serde_json::to_string(&VmStatePatch {
                state: VmStateRequest::Paused,
            })
            .ok(),
        )?;
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        CtlError::Refused(format!(
            "cannot create the snapshot directory {}: {e}",
            dir.display()
        ))
    })?;
    // cabin resolves paths against its own working directory, not this one's.
    let dir = std::path::absolute(dir)
        .map_err(|e| CtlError::Refused(format!("cannot resolve {}: {e}", dir.display())))?;
    let body = serde_json::json!({
        "snapshot_path": dir.join(crate::snapshot::STATE_FILE),
        "mem_file_path": dir.join(crate::snapshot::MEMORY_FILE),
        "snapshot_type": if diff { "Diff" } else { "Full" },
    });
    call("PUT", "/snapshot/create", Some(body.to_string()))?;
    println!("{}", dir.display());
    Ok(())
}

/// After `Shutdown`: waits until the cabin serving `socket` is gone (it stops the
/// guest itself `timeout` seconds after the power button at the latest). A
/// connection kept open ends when the process exits; cabin also closes idle
/// connections, so each end is checked by connecting again.
fn wait_for_exit(socket: &Path, timeout: u64) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout) + EXIT_GRACE;
    loop {
        let Ok(mut stream) = UnixStream::connect(socket) else {
            return EXIT_OK;
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        // Returns when cabin exits or closes the connection as idle, or at the
        // deadline; the next round tells which.
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte);
    }
    eprintln!(
        "cabin ctl: cabin at {} is still running {} s after the shutdown request",
        socket.display(),
        (Duration::from_secs(timeout) + EXIT_GRACE).as_secs()
    );
    EXIT_REFUSED
}

/// Prints a JSON body pretty (as a config file would be written), or as it came when it
/// is not JSON.
fn print_json(body: &[u8]) {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    println!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    #[test]
    fn request_for_uses_firecracker_requests() {
        assert_eq!(request_for(&CtlAction::Status), ("GET", "/", None));
        assert_eq!(
            request_for(&CtlAction::Start),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type":"InstanceStart"}"#.into())
            )
        );
        assert_eq!(
            request_for(&CtlAction::Pause),
            ("PATCH", "/vm", Some(r#"{"state":"Paused"}"#.into()))
        );
        assert_eq!(
            request_for(&CtlAction::Resume),
            ("PATCH", "/vm", Some(r#"{"state":"Resumed"}"#.into()))
        );
        assert_eq!(
            request_for(&CtlAction::CtrlAltDel).2.as_deref(),
            Some(r#"{"action_type":"SendCtrlAltDel"}"#)
        );
        assert_eq!(request_for(&CtlAction::Config), ("GET", "/vm/config", None));
        assert_eq!(request_for(&CtlAction::Version), ("GET", "/version", None));
        assert_eq!(
            request_for(&CtlAction::FlushMetrics).2.as_deref(),
            Some(r#"{"action_type":"FlushMetrics"}"#)
        );
    }

    #[test]
    fn format_request_has_length_only_with_body() {
        let text = format_request("PATCH", "/vm", Some("{}"));
        assert!(text.starts_with("PATCH /vm HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
        assert!(!format_request("GET", "/", None).contains("Content-Length"));
    }

    #[test]
    fn parse_answer_honours_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}{}extra";
        let answer = parse_answer(raw, false).unwrap().unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"{}{}");
        assert!(parse_answer(&raw[..raw.len() - 8], false)
            .unwrap()
            .is_none());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-", false)
            .unwrap()
            .is_none());
        assert!(parse_answer(&raw[..raw.len() - 8], true).is_err());
    }

    #[test]
    fn parse_answer_204_and_interim_and_no_length() {
        let answer = parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((answer.status, answer.body.len()), (204, 0));
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_answer(raw, false).unwrap().unwrap().status, 204);
        let raw = b"HTTP/1.1 400 Bad Request\r\n\r\n{\"fault_message\":\"x\"}";
        assert!(parse_answer(raw, false).unwrap().is_none());
        let answer = parse_answer(raw, true).unwrap().unwrap();
        assert_eq!(fault_message(&answer), "x");
        assert!(parse_answer(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn fault_message_falls_back_to_status() {
        let answer = Answer {
            status: 502,
            body: b"".to_vec(),
        };
        assert_eq!(fault_message(&answer), "HTTP status 502");
    }

    #[test]
    fn send_request_reads_answer_sent_in_pieces() {
        let dir = std::env::temp_dir().join(format!("cabin-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).unwrap();
            assert!(request[..n].starts_with(b"GET / HTTP/1.1\r\n"));
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"id\":\"a\"}\n";
            for piece in answer.chunks(7) {
                stream.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(5));
            }
            // Keep the connection open: the client must stop at Content-Length.
            thread::sleep(Duration::from_millis(200));
        });
        let answer = send_request(&socket, "GET", "/", None).unwrap();
        assert_eq!(answer.body, b"{\"id\":\"a\"}\n");
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_ctl_missing_socket_is_unreachable() {
        let args = CtlArgs {
            api_sock: PathBuf::from("/nonexistent/cabin.sock"),
            action: CtlAction::Status,
        };
        assert_eq!(run_ctl(&args), EXIT_UNREACHABLE);
    }
}
