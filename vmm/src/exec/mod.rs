//! `cabin exec` and `cabin cp`: run commands and copy files in a running guest
//! through cabin-agent, over the VM's vsock.
//!
//! The way in: `GET /vm/config` on the API socket gives the vsock's `uds_path`, the
//! Unix socket of Firecracker's hybrid vsock backend. A connection there that writes
//! `CONNECT 10789\n` and reads `OK <host_port>\n` is joined to the guest's listener
//! on that port; the VMM closes it instead (EOF before `OK`) when nothing listens,
//! for instance while the guest still boots. Then the connection carries the
//! [`cabin_agent`] protocol.

mod copy;
mod session;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use thiserror::Error;

use crate::api::client::{self, CtlError};
use crate::error_chain;

pub use copy::run_cp;
pub use session::run_exec;

/// `cabin exec`: the program was not found in the guest (as shells do).
pub const EXIT_NOT_FOUND: i32 = 127;
/// `cabin exec`: the program could not be executed (as shells do).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// `cabin exec` / `cabin cp`: cabin's own failure (no API, no vsock, no agent, lost
/// connection).
pub const EXIT_FAILURE: i32 = 255;
/// `cabin cp`: a file could not be read or written (on either side).
pub const EXIT_COPY_FAILED: i32 = 1;

/// How often the connection to the agent is tried while it does not answer.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Longest reply line accepted from the VMM's hybrid vsock socket.
const MAX_REPLY_LINE: usize = 64;
/// Default of `--timeout`, in seconds.
const DEFAULT_TIMEOUT_S: u64 = 10;

/// Arguments of `cabin exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The API socket of the cabin running the VM.
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Seconds to wait for cabin-agent to answer (the guest may still be booting);
    /// the command itself runs as long as it takes.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: u64,
    /// Set an environment variable for the command; repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,
    /// The command's working directory in the guest (absolute) [default: the agent's].
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// The command and its arguments; it gets this stdin, and its stdout, stderr and
    /// exit status (128+N when signal N killed it) become cabin's.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// Arguments of `cabin cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// The API socket of the cabin running the VM.
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Seconds to wait for cabin-agent to answer (the guest may still be booting).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_S)]
    pub timeout: u64,
    /// The file to copy: a host path, or guest:/ABSOLUTE/PATH.
    #[arg(value_name = "SRC")]
    pub src: OsString,
    /// Where to copy it: a host path, or guest:/ABSOLUTE/PATH (exactly one of SRC and
    /// DST is a guest path; a DST ending in / or naming a directory gets SRC's name).
    #[arg(value_name = "DST")]
    pub dst: OsString,
}

fn parse_env(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() && !text.contains('\0') => Ok(text.to_owned()),
        _ => Err(format!("'{text}' is not KEY=VALUE")),
    }
}

/// Why `cabin exec` or `cabin cp` failed.
#[derive(Debug, Error)]
pub enum ExecError {
    /// The API socket does not answer.
    #[error("cannot reach cabin at {path}")]
    Api {
        /// The API socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: CtlError,
    },
    /// The API answered GET /vm/config with an error or with something unreadable.
    #[error("cabin at {path} did not give its configuration: {problem}")]
    Config {
        /// The API socket.
        path: PathBuf,
        /// What was wrong.
        problem: String,
    },
    /// The configuration has no vsock.
    #[error("the VM of cabin at {0} has no vsock device")]
    NoVsock(PathBuf),
    /// The VM is not running (not started yet, or paused): no agent can answer.
    #[error("the VM of cabin at {path} is {state}")]
    NotRunning {
        /// The API socket.
        path: PathBuf,
        /// Its state as `GET /` says it (`Not started`, `Paused`).
        state: String,
    },
    /// Nothing answered on the agent's port in time.
    #[error("no agent answered on vsock port {port} within {secs} s (last try: {last})")]
    NoAgent {
        /// The port.
        port: u32,
        /// The timeout.
        secs: u64,
        /// What the last attempt met.
        last: String,
    },
    /// The connection ended before the command finished.
    #[error("the connection closed before the command finished")]
    Closed,
    /// The connection ended before the copy finished.
    #[error("the connection closed before the copy finished")]
    CopyClosed,
    /// The agent sent something that is not the protocol.
    #[error("the agent's answer cannot be read")]
    Protocol(#[source] cabin_agent::ReadError),
    /// The request breaks a protocol rule (too many or too long arguments, a relative
    /// working directory).
    #[error("the request cannot be sent to the agent")]
    Request(#[source] cabin_agent::ProtocolError),
    /// The program does not exist in the guest.
    #[error("{0}: No such file or directory")]
    NotFound(String),
    /// The program exists but cannot be executed.
    #[error("{program}: {message}")]
    NotExecutable {
        /// The program.
        program: String,
        /// The guest's error text.
        message: String,
    },
    /// The agent refused the request (its message, e.g. a missing guest file).
    #[error("in the guest: {0}")]
    Guest(String),
    /// A host file could not be read or written.
    #[error("cannot {what} {path}")]
    HostFile {
        /// What was attempted.
        what: &'static str,
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command line is not usable (e.g. cp without a guest path).
    #[error("{0}")]
    Usage(String),
}

impl ExecError {
    /// What to do about it, when there is something to say.
    fn hint(&self) -> Option<String> {
        match self {
            ExecError::Api { path, .. } => {
                Some(format!("is it running with --api-sock {}?", path.display()))
            }
            ExecError::NoVsock(_) => Some(
                "start cabin with --vsock cid=3,path=PATH, or PUT /vsock before InstanceStart"
                    .into(),
            ),
            ExecError::NotRunning { path, state } => Some(format!(
                "{} it first: cabin ctl --api-sock {} {}",
                if state == "Paused" { "resume" } else { "start" },
                path.display(),
                if state == "Paused" { "resume" } else { "start" },
            )),
            ExecError::NoAgent { .. } => Some("is cabin-agent running in the guest?".into()),
            ExecError::Closed => Some("the agent or the guest stopped mid-command".into()),
            ExecError::CopyClosed => Some("the agent or the guest stopped mid-copy".into()),
            _ => None,
        }
    }

    /// The one line `prefix` (`cabin exec` or `cabin cp`) prints.
    pub fn line(&self, prefix: &str) -> String {
        let mut line = format!("{prefix}: {}", error_chain(self));
        if let Some(hint) = self.hint() {
            line.push_str("; ");
            line.push_str(&hint);
        }
        line.replace('\n', " ")
    }
}

/// The `uds_path` of the VM's vsock, from GET /vm/config.
pub fn vsock_uds_path(api_sock: &Path) -> Result<PathBuf, ExecError> {
    let answer = client::send_request(api_sock, "GET", "/vm/config", None).map_err(|source| {
        ExecError::Api {
            path: api_sock.to_owned(),
            source,
        }
    })?;
    let config_error = |problem: String| ExecError::Config {
        path: api_sock.to_owned(),
        problem,
    };
    let body = String::from_utf8_lossy(&answer.body);
    if !(200..300).contains(&answer.status) {
        return Err(config_error(format!(
            "HTTP status {} {}",
            answer.status,
            body.trim()
        )));
    }
    let config: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| config_error(format!("its answer is not JSON: {e}")))?;
    let uds = match config.get("vsock") {
        None | Some(serde_json::Value::Null) => {
            return Err(ExecError::NoVsock(api_sock.to_owned()))
        }
        Some(vsock) => vsock
            .get("uds_path")
            .and_then(serde_json::Value::as_str)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| config_error("its vsock has no uds_path".into()))?,
    };
    check_running(api_sock)?;
    Ok(uds)
}

/// Refuses a VM that is not started or is paused (`GET /`'s `state`), where no
/// agent could answer; any other answer lets the connection attempts decide.
fn check_running(api_sock: &Path) -> Result<(), ExecError> {
    let Ok(answer) = client::send_request(api_sock, "GET", "/", None) else {
        return Ok(());
    };
    let info: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    match info.get("state").and_then(serde_json::Value::as_str) {
        Some(state @ ("Not started" | "Paused")) => Err(ExecError::NotRunning {
            path: api_sock.to_owned(),
            state: state.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Connects to the agent through the hybrid vsock socket `uds`, trying every
/// [`RETRY_INTERVAL`] until `timeout` while the connection is refused or closed
/// before `OK` (the guest may still be booting, or the agent starting).
pub fn connect_agent(uds: &Path, timeout: Duration) -> Result<UnixStream, ExecError> {
    let port = cabin_agent::PORT;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match try_connect(uds, port, deadline) {
            Ok(stream) => return Ok(stream),
            Err(last) => last,
        };
        if Instant::now() + RETRY_INTERVAL >= deadline {
            return Err(ExecError::NoAgent {
                port,
                secs: timeout.as_secs(),
                last,
            });
        }
        std::thread::sleep(RETRY_INTERVAL);
    }
}

/// One connection attempt; `Err` says what it met.
fn try_connect(uds: &Path, port: u32, deadline: Instant) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(uds)
        .map_err(|e| format!("cannot connect to {}: {e}", uds.display()))?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(RETRY_INTERVAL);
    stream
        .set_read_timeout(Some(wait))
        .and_then(|()| stream.set_write_timeout(Some(wait)))
        .and_then(|()| stream.write_all(format!("CONNECT {port}\n").as_bytes()))
        .map_err(|e| format!("cannot send CONNECT: {e}"))?;
    // Byte by byte: what follows the line belongs to the agent.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_REPLY_LINE {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(
                    "the VMM closed the connection (nothing listens on the port yet)".into(),
                )
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no answer to CONNECT: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let ok = text
        .strip_prefix("OK ")
        .is_some_and(|n| n.trim().parse::<u32>().is_ok());
    if !ok {
        return Err(format!("the VMM answered {text:?} to CONNECT"));
    }
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| format!("cannot configure the connection: {e}"))?;
    Ok(stream)
}

/// The API socket's vsock, then a connection to the agent.
fn open(api_sock: &Path, timeout_s: u64) -> Result<UnixStream, ExecError> {
    let uds = vsock_uds_path(api_sock)?;
    connect_agent(&uds, Duration::from_secs(timeout_s))
}

/// Maps a failure to read the agent's frames: the connection ending is [`Closed`].
///
/// [`Closed`]: ExecError::Closed
fn read_error(e: cabin_agent::ReadError) -> ExecError {
    match e {
        cabin_agent::ReadError::Truncated | cabin_agent::ReadError::Io(_) => ExecError::Closed,
        e => ExecError::Protocol(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_env_wants_key_and_equals() {
        assert_eq!(parse_env("A=b=c"), Ok("A=b=c".into()));
        assert_eq!(parse_env("A="), Ok("A=".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("A").is_err());
    }

    #[test]
    fn error_lines_name_what_to_do() {
        let line = ExecError::NoVsock("/run/api.sock".into()).line("cabin exec");
        assert_eq!(
            line,
            "cabin exec: the VM of cabin at /run/api.sock has no vsock device; \
             start cabin with --vsock cid=3,path=PATH, or PUT /vsock before InstanceStart"
        );
        let line = ExecError::NotFound("ls".into()).line("cabin exec");
        assert_eq!(line, "cabin exec: ls: No such file or directory");
    }

    #[test]
    fn missing_api_socket_is_unreachable() {
        let err = vsock_uds_path(Path::new("/nonexistent/api.sock")).unwrap_err();
        let line = err.line("cabin exec");
        assert!(line.starts_with("cabin exec: cannot reach cabin at /nonexistent/api.sock"));
        assert!(line.ends_with("is it running with --api-sock /nonexistent/api.sock?"));
    }

    #[test]
    fn connect_agent_without_socket_times_out_after_retrying() {
        let start = Instant::now();
        let err = connect_agent(Path::new("/nonexistent/v.sock"), Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(err, ExecError::NoAgent { .. }), "{err:?}");
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
