//! A small blocking HTTP/1.1 client for loopback.
//!
//! Each request opens a connection, sends `Connection: close` and reads one response, so
//! the response is exactly what came off the wire: header names as sent (lower-cased for
//! lookup), duplicates kept, values not merged. Tests of response hardening need that view;
//! a full client library would normalise it away.
//!
//! A response is read until its framing (`content-length`, chunked, or a status without a
//! body) says it is complete, and to end of stream only when it has no framing. Waiting for
//! end of stream after every response cost a second per local reply: Envoy closes such a
//! connection only after its `delayed_close_timeout` (1 s), waiting for the client to close
//! first.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Context, Error, Result};

/// How long one request may take end to end on loopback before the test gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// In wire order, names lower-cased, values with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`, in wire order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `127.0.0.1:port`.
pub fn get(port: u16, path: &str) -> Result<Response> {
    request(port, "GET", path, &[])
}

/// `GET path` with extra request headers.
pub fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(port, "GET", path, headers)
}

/// Sends one request without a body. A `host` header is added unless `headers` has one.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    send(port, method, path, headers)
        .with_context(|| format!("{method} http://127.0.0.1:{port}{path}"))
}

fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;

    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str("host: localhost\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;

    let head_request = method.eq_ignore_ascii_case("HEAD");
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        raw.extend_from_slice(buffer.get(..read).unwrap_or_default());
        if is_complete(&raw, head_request) {
            break;
        }
    }
    parse_response(&raw, head_request)
}

/// Whether `raw` holds a whole response by its own framing. A response without framing
/// ends only with the connection: never complete here.
fn is_complete(raw: &[u8], head_request: bool) -> bool {
    // `parse_response` fails on an unfinished head, a short content-length body or a
    // truncated chunked one.
    parse_response(raw, head_request).is_ok_and(|response| {
        !matches!(
            body_framing(&response, head_request),
            BodyFraming::UntilClose
        )
    })
}

/// How the end of a response body is known (RFC 9112 §6.3).
enum BodyFraming<'a> {
    None,
    Chunked,
    Length(&'a str),
    UntilClose,
}

fn body_framing(response: &Response, head_request: bool) -> BodyFraming<'_> {
    let status = response.status;
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        BodyFraming::None
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.contains("chunked"))
    {
        BodyFraming::Chunked
    } else if let Some(length) = response.header("content-length") {
        BodyFraming::Length(length)
    } else {
        BodyFraming::UntilClose
    }
}

fn parse_response(raw: &[u8], head_request: bool) -> Result<Response> {
    let head_end = find(raw, b"\r\n\r\n")
        .ok_or_else(|| Error::new(format!("incomplete response ({} bytes)", raw.len())))?;
    let head = String::from_utf8_lossy(raw.get(..head_end).unwrap_or_default());
    let rest = raw.get(head_end + 4..).unwrap_or_default();

    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| Error::new(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Error::new(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }

    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    response.body = match body_framing(&response, head_request) {
        BodyFraming::None => Vec::new(),
        BodyFraming::Chunked => decode_chunked(rest)?,
        BodyFraming::Length(length) => {
            let length: usize = length
                .parse()
                .map_err(|_| Error::new(format!("bad content-length {length:?}")))?;
            rest.get(..length)
                .ok_or_else(|| Error::new(format!("body shorter than content-length {length}")))?
                .to_vec()
        }
        BodyFraming::UntilClose => rest.to_vec(),
    };
    Ok(response)
}

fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end =
            find(rest, b"\r\n").ok_or_else(|| Error::new("truncated chunk size line"))?;
        let size_line = String::from_utf8_lossy(rest.get(..line_end).unwrap_or_default());
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| Error::new(format!("bad chunk size {size_hex:?}")))?;
        rest = rest.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| Error::new("truncated chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicate_headers_and_decodes_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: a\r\nx-dup: 1\r\nX-Dup: 2\r\n\
                    transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
        let response = parse_response(raw, false).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("server"), Some("a"));
        assert_eq!(
            response.headers_named("x-dup").collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn honours_content_length_and_rejects_garbage() {
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nokEXTRA";
        let response = parse_response(raw, false).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (404, &b"ok"[..])
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n", false).is_err());
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab", false).is_err());
    }

    #[test]
    fn a_response_is_complete_when_its_framing_says_so() {
        let framed = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}";
        assert!(is_complete(framed, false));
        assert!(!is_complete(&framed[..framed.len() - 1], false));
        assert!(!is_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",
            false
        ));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        assert!(is_complete(chunked, false));
        assert!(!is_complete(&chunked[..chunked.len() - 5], false));
        // No framing: only the end of the stream ends it.
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\n\r\nbody", false));
        assert!(is_complete(b"HTTP/1.1 204 No Content\r\n\r\n", false));
        assert!(is_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            true
        ));
    }
}
