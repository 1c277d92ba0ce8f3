//! HTTP/1.1 framing for the API server: read one request (head parsed by `httparse`,
//! body read only up to its declared `Content-Length` and only within the limit), and
//! write one reply. No routing, no JSON beyond error bodies.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use serde::Serialize;

use super::Limits;

/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;
/// Bytes read from a socket at a time.
pub(super) const READ_CHUNK: usize = 4096;

/// A response before it is written.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Reply {
    /// HTTP status.
    pub(super) status: u16,
    /// JSON body, absent for 204.
    pub(super) body: Option<String>,
    /// `Allow` header of a 405.
    pub(super) allow: Option<&'static str>,
    /// Close the connection after this reply.
    pub(super) close: bool,
}

impl Reply {
    pub(super) fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
            allow: None,
            close: false,
        }
    }

    pub(super) fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        match serde_json::to_string(value) {
            Ok(body) => Reply {
                status,
                body: Some(body),
                allow: None,
                close: false,
            },
            Err(e) => Reply::fault(500, format!("Cannot encode the answer: {e}")),
        }
    }

    pub(super) fn fault(status: u16, message: impl Into<String>) -> Reply {
        let body = serde_json::json!({ "fault_message": message.into() }).to_string();
        Reply {
            status,
            body: Some(body),
            allow: None,
            close: false,
        }
    }

    pub(super) fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

pub(super) fn write_reply(stream: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: cabin\r\n",
        reply.status,
        reason(reply.status)
    );
    if let Some(allow) = reply.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    if reply.close {
        head.push_str("Connection: close\r\n");
    }
    // 204 carries neither a body nor a Content-Length (RFC 9110, 8.6).
    if let Some(body) = &reply.body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    if let Some(body) = &reply.body {
        head.push_str(body);
    }
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

/// One request as read from a client.
#[derive(Debug)]
pub(super) struct HttpRequest {
    /// `GET`, `PUT`, ...
    pub(super) method: String,
    /// Path and query.
    pub(super) target: String,
    /// Exactly Content-Length bytes.
    pub(super) body: Vec<u8>,
    /// The client asked to close after this request (or speaks HTTP/1.0).
    pub(super) close: bool,
}

/// What reading a request produced.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A whole request, body included.
    Request(HttpRequest),
    /// Answer this and close the connection.
    Refuse(Reply),
    /// The client went away or stayed silent; close without a word.
    Gone,
}

/// The parts of a request head the server needs, owned.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    content_length: usize,
    close: bool,
    expect_continue: bool,
}

/// Reads more bytes into `buf` unless `deadline` has passed; Ok(0) is end of stream.
fn read_more(stream: &mut UnixStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; READ_CHUNK];
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads one request (head, then a body of its Content-Length) from `stream`, keeping
/// whatever follows in `buf` for the next one.
pub(super) fn read_request(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    limits: &Limits,
    deadline: Instant,
) -> Incoming {
    let timed_out = || Reply::fault(408, "The request did not arrive in time");
    let (head, head_len) = loop {
        match parse_head(buf, limits) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(reply) => return Incoming::Refuse(reply),
        }
        match read_more(stream, buf, deadline) {
            Ok(0) => return Incoming::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut && !buf.is_empty() => {
                return Incoming::Refuse(timed_out())
            }
            Err(_) => return Incoming::Gone,
        }
    };
    buf.drain(..head_len);
    if head.content_length > limits.max_body_bytes {
        let message = format!(
            "The request body of {} bytes is larger than the {} bytes cabin accepts",
            head.content_length, limits.max_body_bytes
        );
        return Incoming::Refuse(Reply::fault(413, message));
    }
    if head.expect_continue && buf.len() < head.content_length {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while buf.len() < head.content_length {
        match read_more(stream, buf, deadline) {
            Ok(0) => return Incoming::Gone,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Incoming::Refuse(timed_out()),
            Err(_) => return Incoming::Gone,
        }
    }
    let body: Vec<u8> = buf.drain(..head.content_length).collect();
    Incoming::Request(HttpRequest {
        method: head.method,
        target: head.target,
        body,
        close: head.close,
    })
}

/// Parses a request head from the start of `buf`: Ok(None) while incomplete,
/// Ok((head, its length)) when complete, Err(reply) for a request cabin refuses.
fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, Reply> {
    let too_large = || {
        let message = format!(
            "The request head is larger than the {} bytes cabin accepts",
            limits.max_header_bytes
        );
        Reply::fault(431, message)
    };
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_header_bytes => {
            return Err(too_large())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(e) => return Err(Reply::fault(400, format!("Malformed HTTP request: {e}"))),
    };
    if len > limits.max_header_bytes {
        return Err(too_large());
    }
    let mut content_length: Option<usize> = None;
    let mut close = request.version == Some(0);
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => {
                let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<usize>().ok())
                    .flatten();
                match (parsed, content_length) {
                    (Some(n), None) => content_length = Some(n),
                    (Some(n), Some(seen)) if n == seen => {}
                    _ => {
                        let message = format!("Invalid Content-Length: {value}");
                        return Err(Reply::fault(400, message));
                    }
                }
            }
            "transfer-encoding" => {
                let message =
                    "Transfer-Encoding is not supported: send the body with a Content-Length";
                return Err(Reply::fault(501, message));
            }
            "connection" => {
                let tokens = value.to_ascii_lowercase();
                if tokens.split(',').any(|t| t.trim() == "close") {
                    close = true;
                } else if tokens.split(',').any(|t| t.trim() == "keep-alive") {
                    close = false;
                }
            }
            "expect" => {
                if !value.eq_ignore_ascii_case("100-continue") {
                    let message = format!("Unsupported Expect: {value}");
                    return Err(Reply::fault(400, message));
                }
                expect_continue = true;
            }
            _ => {}
        }
    }
    let head = Head {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        content_length: content_length.unwrap_or(0),
        close,
        expect_continue,
    };
    Ok(Some((head, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn parse_head_reads_length_and_connection() {
        let raw = b"PUT /vm HTTP/1.1\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{";
        let (head, len) = parse_head(raw, &limits()).unwrap().unwrap();
        assert_eq!((head.method.as_str(), head.target.as_str()), ("PUT", "/vm"));
        assert_eq!(head.content_length, 17);
        assert!(head.close);
        assert_eq!(len, raw.len() - 1);
        let (head, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n", &limits())
            .unwrap()
            .unwrap();
        assert!(head.close, "HTTP/1.0 closes unless keep-alive");
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", &limits())
            .unwrap()
            .is_none());
    }

    #[test]
    fn parse_head_refuses_bad_heads() {
        let cases: [(&[u8], u16); 5] = [
            (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (b"GET / HTTP/9.9\r\n\r\n", 400),
            (b"G\x01T / HTTP/1.1\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let reply = parse_head(raw, &limits()).unwrap_err();
            assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(raw));
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(limits().max_header_bytes + 1, b'a');
        assert_eq!(parse_head(&long, &limits()).unwrap_err().status, 431);
    }

    #[test]
    fn write_reply_formats_204_without_length() {
        let mut out = Vec::new();
        write_reply(&mut out, &Reply::no_content()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!text.contains("Content-Length"));
        let mut out = Vec::new();
        write_reply(&mut out, &Reply::fault(404, "x").closing()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Connection: close\r\n"));
        assert!(
            text.ends_with("\r\n\r\n{\"fault_message\":\"x\"}"),
            "{text}"
        );
    }
}
