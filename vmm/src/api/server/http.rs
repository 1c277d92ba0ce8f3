//! HTTP/1.1 framing for the API server, without I/O: take one request from the bytes a
//! connection has received (head parsed by `httparse`, body taken only up to its
//! declared `Content-Length` and only within the limit), and format one reply. No
//! routing, no JSON beyond error bodies.

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

/// The bytes of `reply` on the wire.
pub(super) fn format_reply(reply: &Reply) -> Vec<u8> {
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
    head.into_bytes()
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

/// What the bytes received so far on a connection amount to.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole request yet; `send_continue` when the client waits for
    /// `100 Continue` before it sends the body.
    Incomplete {
        /// Answer `HTTP/1.1 100 Continue` now (once per request).
        send_continue: bool,
    },
    /// A whole request, removed from the buffer (what follows stays for the next one).
    Request(HttpRequest),
    /// Answer this and close the connection.
    Refuse(Reply),
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

/// The interim answer to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Takes one request (head, then a body of its Content-Length) from the start of
/// `buf` once all of it has arrived. A body larger than the limit is refused from
/// its head alone, before any of it is read. `continued` remembers, across calls for
/// the same request, that `100 Continue` was already asked for.
pub(super) fn parse_request(buf: &mut Vec<u8>, limits: &Limits, continued: &mut bool) -> Parsed {
    let (head, head_len) = match parse_head(buf, limits) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            return Parsed::Incomplete {
                send_continue: false,
            }
        }
        Err(reply) => return Parsed::Refuse(reply),
    };
    if head.content_length > limits.max_body_bytes {
        let message = format!(
            "The request body of {} bytes is larger than the {} bytes cabin accepts",
            head.content_length, limits.max_body_bytes
        );
        return Parsed::Refuse(Reply::fault(413, message));
    }
    let total = head_len.saturating_add(head.content_length);
    if buf.len() < total {
        let send_continue = head.expect_continue && !*continued;
        *continued |= send_continue;
        return Parsed::Incomplete { send_continue };
    }
    *continued = false;
    let body = buf[head_len..total].to_vec();
    buf.drain(..total);
    Parsed::Request(HttpRequest {
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
    fn format_reply_204_has_no_length() {
        let text = String::from_utf8(format_reply(&Reply::no_content())).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!text.contains("Content-Length"));
        let text = String::from_utf8(format_reply(&Reply::fault(404, "x").closing())).unwrap();
        assert!(text.contains("Connection: close\r\n"));
        assert!(
            text.ends_with("\r\n\r\n{\"fault_message\":\"x\"}"),
            "{text}"
        );
    }

    #[test]
    fn parse_request_waits_for_the_body_then_keeps_the_rest() {
        let mut continued = false;
        let mut buf = b"PUT /vm HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}".to_vec();
        assert!(matches!(
            parse_request(&mut buf, &limits(), &mut continued),
            Parsed::Incomplete {
                send_continue: false
            }
        ));
        buf.extend_from_slice(b"  GET / HTTP/1.1\r\n\r\n");
        let Parsed::Request(request) = parse_request(&mut buf, &limits(), &mut continued) else {
            panic!("a whole request");
        };
        assert_eq!(
            (request.method.as_str(), request.body.as_slice()),
            ("PUT", &b"{}  "[..])
        );
        assert_eq!(buf, b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse_request(&mut buf, &limits(), &mut continued),
            Parsed::Request(_)
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn parse_request_continue_asked_once_and_oversized_body_refused_from_head() {
        let mut continued = false;
        let mut buf =
            b"PUT /vm HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".to_vec();
        let first = parse_request(&mut buf, &limits(), &mut continued);
        assert!(matches!(
            first,
            Parsed::Incomplete {
                send_continue: true
            }
        ));
        let again = parse_request(&mut buf, &limits(), &mut continued);
        assert!(matches!(
            again,
            Parsed::Incomplete {
                send_continue: false
            }
        ));
        let mut huge = b"PUT /vm HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n".to_vec();
        let Parsed::Refuse(reply) = parse_request(&mut huge, &limits(), &mut continued) else {
            panic!("refused");
        };
        assert_eq!(reply.status, 413);
    }
}
