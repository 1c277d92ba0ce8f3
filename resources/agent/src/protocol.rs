//! The wire protocol between `cabin exec` / `cabin cp` (host) and `cabin-agent` (guest).
//!
//! A connection carries frames: a 5-byte header (type `u8`, payload length `u32`
//! big-endian) then the payload. The payload never exceeds [`MAX_PAYLOAD`]; a header
//! announcing more, an unknown type, or a payload that does not parse exactly is a
//! [`ProtocolError`], and the side that sees it closes the connection.
//!
//! The host sends one request frame first, and what follows depends on it:
//!
//! | Request | Host then sends | Agent answers |
//! |---|---|---|
//! | [`Frame::Exec`] | [`Frame::Stdin`]*, [`Frame::StdinEof`] | [`Frame::Stdout`] / [`Frame::Stderr`]* as output arrives, then [`Frame::Exit`]; or one [`Frame::Error`] when the program cannot start |
//! | [`Frame::CopyIn`] | [`Frame::Data`]*, [`Frame::End`] | [`Frame::Ok`] once the file is renamed into place, or [`Frame::Error`] (possibly early) |
//! | [`Frame::CopyOut`] | nothing | [`Frame::Data`]*, [`Frame::End`]; or [`Frame::Error`] |
//!
//! Payload fields: integers are big-endian; byte strings are a `u32` length then the
//! bytes (arguments, environment entries and paths are bytes, not necessarily UTF-8).

use std::io::{self, Read, Write};

use thiserror::Error;

/// The AF_VSOCK port cabin-agent listens on (`CONNECT 10789` on the hybrid socket).
pub const PORT: u32 = 10789;
/// Bytes in a frame header: type (1) and payload length (4).
pub const HEADER_LEN: usize = 5;
/// Largest payload accepted in any frame.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest payload a sender puts in one Stdin/Stdout/Stderr/Data frame.
pub const DATA_CHUNK: usize = 64 * 1024;
/// Most argv plus environment entries in one Exec request.
pub const MAX_ARGS: usize = 4096;
/// Longest path accepted (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest error message accepted.
pub const MAX_MESSAGE: usize = 4096;

/// Frame type codes.
mod kind {
    pub const EXEC: u8 = 0x01;
    pub const COPY_IN: u8 = 0x02;
    pub const COPY_OUT: u8 = 0x03;
    pub const STDIN: u8 = 0x10;
    pub const STDIN_EOF: u8 = 0x11;
    pub const STDOUT: u8 = 0x12;
    pub const STDERR: u8 = 0x13;
    pub const EXIT: u8 = 0x14;
    pub const DATA: u8 = 0x20;
    pub const END: u8 = 0x21;
    pub const OK: u8 = 0x30;
    pub const ERROR: u8 = 0x31;
}

/// What to run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Program and arguments (at least the program; no NUL bytes).
    pub argv: Vec<Vec<u8>>,
    /// Extra `KEY=VALUE` environment entries on top of the agent's.
    pub env: Vec<Vec<u8>>,
    /// Working directory (absolute), or the agent's.
    pub cwd: Option<Vec<u8>>,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// It exited with this status.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Request: run a command.
    Exec(ExecRequest),
    /// Request: write a file at `path` (absolute) with permission bits `mode`.
    CopyIn {
        /// Destination path in the guest.
        path: Vec<u8>,
        /// Permission bits (0o7777 at most).
        mode: u32,
    },
    /// Request: read the regular file at `path` (absolute).
    CopyOut {
        /// Source path in the guest.
        path: Vec<u8>,
    },
    /// Bytes for the command's stdin.
    Stdin(Vec<u8>),
    /// The command's stdin ends.
    StdinEof,
    /// Bytes the command wrote to stdout.
    Stdout(Vec<u8>),
    /// Bytes the command wrote to stderr.
    Stderr(Vec<u8>),
    /// The command ended.
    Exit(ExitReason),
    /// File content.
    Data(Vec<u8>),
    /// The file content ends.
    End,
    /// The request succeeded.
    Ok,
    /// The request failed. `errno` is non-zero only when the program of an Exec
    /// could not be executed (ENOENT, EACCES, ...), so the host can pick 127 or 126.
    Error {
        /// The OS error number, or 0.
        errno: i32,
        /// What went wrong, one line.
        message: String,
    },
}

/// A frame that cannot be encoded or decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The header names no frame type this side knows.
    #[error("Frame type {0:#04x} is unknown")]
    UnknownType(u8),
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("A frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    /// The payload does not parse as its type requires.
    #[error("The {frame} frame is malformed: {problem}")]
    Malformed {
        /// The frame type.
        frame: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Why [`read_frame`] returned no frame.
#[derive(Debug, Error)]
pub enum ReadError {
    /// Reading the connection failed.
    #[error("Cannot read from the connection")]
    Io(#[source] io::Error),
    /// The connection closed in the middle of a frame.
    #[error("The connection closed in the middle of a frame")]
    Truncated,
    /// The frame is invalid.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl Frame {
    /// The name of the frame's type, for messages.
    pub fn name(&self) -> &'static str {
        type_name(self.kind())
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Exec(_) => kind::EXEC,
            Frame::CopyIn { .. } => kind::COPY_IN,
            Frame::CopyOut { .. } => kind::COPY_OUT,
            Frame::Stdin(_) => kind::STDIN,
            Frame::StdinEof => kind::STDIN_EOF,
            Frame::Stdout(_) => kind::STDOUT,
            Frame::Stderr(_) => kind::STDERR,
            Frame::Exit(_) => kind::EXIT,
            Frame::Data(_) => kind::DATA,
            Frame::End => kind::END,
            Frame::Ok => kind::OK,
            Frame::Error { .. } => kind::ERROR,
        }
    }

    /// The frame's bytes, header included; fails when it breaks a limit (the peer
    /// would refuse it).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut payload = Vec::new();
        let name = self.name();
        match self {
            Frame::Exec(request) => {
                check_exec(request)?;
                put_u32(&mut payload, len_u32(request.argv.len()));
                for arg in &request.argv {
                    put_bytes(&mut payload, arg);
                }
                put_u32(&mut payload, len_u32(request.env.len()));
                for entry in &request.env {
                    put_bytes(&mut payload, entry);
                }
                match &request.cwd {
                    Some(cwd) => {
                        payload.push(1);
                        put_bytes(&mut payload, cwd);
                    }
                    None => payload.push(0),
                }
            }
            Frame::CopyIn { path, mode } => {
                check_path(name, path)?;
                check_mode(name, *mode)?;
                put_bytes(&mut payload, path);
                put_u32(&mut payload, *mode);
            }
            Frame::CopyOut { path } => {
                check_path(name, path)?;
                put_bytes(&mut payload, path);
            }
            Frame::Stdin(data) | Frame::Stdout(data) | Frame::Stderr(data) | Frame::Data(data) => {
                payload.extend_from_slice(data)
            }
            Frame::StdinEof | Frame::End | Frame::Ok => {}
            Frame::Exit(reason) => {
                let (tag, value) = match reason {
                    ExitReason::Code(code) => (0u8, *code),
                    ExitReason::Signal(signal) => (1u8, *signal),
                };
                payload.push(tag);
                payload.extend_from_slice(&value.to_be_bytes());
            }
            Frame::Error { errno, message } => {
                if message.len() > MAX_MESSAGE {
                    return Err(malformed(name, "the message is too long"));
                }
                payload.extend_from_slice(&errno.to_be_bytes());
                put_bytes(&mut payload, message.as_bytes());
            }
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(payload.len()));
        }
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
        frame.push(self.kind());
        frame.extend_from_slice(&len_u32(payload.len()).to_be_bytes());
        frame.extend_from_slice(&payload);
        Ok(frame)
    }

    /// Parses the payload of a frame of type `kind` (all of it, nothing more).
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Frame, ProtocolError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(payload.len()));
        }
        let name = type_name(kind);
        let mut fields = Fields {
            frame: name,
            rest: payload,
        };
        let frame = match kind {
            kind::EXEC => {
                let argc = fields.count()?;
                let mut argv = Vec::new();
                for _ in 0..argc {
                    argv.push(fields.bytes()?.to_vec());
                }
                let envc = fields.count()?;
                let mut env = Vec::new();
                for _ in 0..envc {
                    env.push(fields.bytes()?.to_vec());
                }
                let cwd = match fields.u8()? {
                    0 => None,
                    1 => Some(fields.bytes()?.to_vec()),
                    _ => return Err(malformed(name, "the cwd flag is not 0 or 1")),
                };
                let request = ExecRequest { argv, env, cwd };
                check_exec(&request)?;
                Frame::Exec(request)
            }
            kind::COPY_IN => {
                let path = fields.bytes()?.to_vec();
                let mode = fields.u32()?;
                check_path(name, &path)?;
                check_mode(name, mode)?;
                Frame::CopyIn { path, mode }
            }
            kind::COPY_OUT => {
                let path = fields.bytes()?.to_vec();
                check_path(name, &path)?;
                Frame::CopyOut { path }
            }
            kind::STDIN => Frame::Stdin(fields.take_all()),
            kind::STDOUT => Frame::Stdout(fields.take_all()),
            kind::STDERR => Frame::Stderr(fields.take_all()),
            kind::DATA => Frame::Data(fields.take_all()),
            kind::STDIN_EOF => Frame::StdinEof,
            kind::END => Frame::End,
            kind::OK => Frame::Ok,
            kind::EXIT => {
                let tag = fields.u8()?;
                let value = fields.i32()?;
                match tag {
                    0 => Frame::Exit(ExitReason::Code(value)),
                    1 if value > 0 => Frame::Exit(ExitReason::Signal(value)),
                    _ => return Err(malformed(name, "the exit reason is invalid")),
                }
            }
            kind::ERROR => {
                let errno = fields.i32()?;
                let message = fields.bytes()?;
                if message.len() > MAX_MESSAGE {
                    return Err(malformed(name, "the message is too long"));
                }
                Frame::Error {
                    errno,
                    message: String::from_utf8_lossy(message).into_owned(),
                }
            }
            other => return Err(ProtocolError::UnknownType(other)),
        };
        if !fields.rest.is_empty() {
            return Err(malformed(name, "bytes follow the last field"));
        }
        Ok(frame)
    }
}

/// Checks a header: returns the frame type and the payload length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, usize), ProtocolError> {
    let kind = header[0];
    if type_name(kind) == "unknown" {
        return Err(ProtocolError::UnknownType(kind));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge(len));
    }
    Ok((kind, len))
}

/// Decodes the first frame in `bytes`: `Ok(None)` while it is incomplete, else the
/// frame and how many bytes it took.
pub fn decode(bytes: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let (kind, len) = parse_header(header)?;
    let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((Frame::decode(kind, payload)?, HEADER_LEN + len)))
}

/// Reads one frame; `Ok(None)` when the connection ends cleanly between frames.
pub fn read_frame(reader: &mut impl Read) -> Result<Option<Frame>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(ReadError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    let (kind, len) = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Truncated,
            _ => ReadError::Io(e),
        })?;
    Ok(Some(Frame::decode(kind, &payload)?))
}

/// Writes one frame (in one `write_all`, so frames written under a lock never mix).
pub fn write_frame(writer: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let bytes = frame
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    writer.write_all(&bytes)
}

fn type_name(code: u8) -> &'static str {
    match code {
        kind::EXEC => "Exec",
        kind::COPY_IN => "CopyIn",
        kind::COPY_OUT => "CopyOut",
        kind::STDIN => "Stdin",
        kind::STDIN_EOF => "StdinEof",
        kind::STDOUT => "Stdout",
        kind::STDERR => "Stderr",
        kind::EXIT => "Exit",
        kind::DATA => "Data",
        kind::END => "End",
        kind::OK => "Ok",
        kind::ERROR => "Error",
        _ => "unknown",
    }
}

fn malformed(frame: &'static str, problem: &'static str) -> ProtocolError {
    ProtocolError::Malformed { frame, problem }
}

fn check_exec(request: &ExecRequest) -> Result<(), ProtocolError> {
    let name = "Exec";
    if request.argv.is_empty() {
        return Err(malformed(name, "argv is empty"));
    }
    if request.argv.len() + request.env.len() > MAX_ARGS {
        return Err(malformed(
            name,
            "too many arguments and environment entries",
        ));
    }
    if request
        .argv
        .iter()
        .chain(&request.env)
        .any(|s| s.contains(&0))
    {
        return Err(malformed(
            name,
            "an argument or environment entry holds a NUL byte",
        ));
    }
    if request.argv[0].is_empty() {
        return Err(malformed(name, "the program name is empty"));
    }
    if request
        .env
        .iter()
        .any(|e| e.first() == Some(&b'=') || !e.contains(&b'='))
    {
        return Err(malformed(name, "an environment entry is not KEY=VALUE"));
    }
    if let Some(cwd) = &request.cwd {
        check_path(name, cwd)?;
    }
    Ok(())
}

fn check_path(name: &'static str, path: &[u8]) -> Result<(), ProtocolError> {
    if path.first() != Some(&b'/') {
        return Err(malformed(name, "the path is not absolute"));
    }
    if path.len() > MAX_PATH {
        return Err(malformed(name, "the path is too long"));
    }
    if path.contains(&0) {
        return Err(malformed(name, "the path holds a NUL byte"));
    }
    Ok(())
}

fn check_mode(name: &'static str, mode: u32) -> Result<(), ProtocolError> {
    if mode > 0o7777 {
        return Err(malformed(name, "the mode has bits beyond 0o7777"));
    }
    Ok(())
}

/// A length as u32: callers have checked it against limits far below 4 GiB; a larger
/// one saturates and is then refused by the payload limit.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, len_u32(bytes.len()));
    out.extend_from_slice(bytes);
}

/// A cursor over a payload whose every read is bounds-checked.
struct Fields<'a> {
    frame: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.rest.len() {
            return Err(malformed(self.frame, "a field runs past the payload"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An entry count, refused beyond [`MAX_ARGS`] before anything is allocated.
    fn count(&mut self) -> Result<usize, ProtocolError> {
        let n = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if n > MAX_ARGS {
            return Err(malformed(self.frame, "too many entries"));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        self.take(len)
    }

    fn take_all(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest).to_vec()
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
