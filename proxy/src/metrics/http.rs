//! A tiny HTTP/1.1 responder for `/metrics`, `/healthz` and `/readyz`.
//!
//! The Prometheus exporter's own listener answers every path with the
//! metrics and cannot say "not ready" (503), so pgsieve answers the three
//! endpoints itself: one `GET`/`HEAD` per connection, a bounded request
//! head, a deadline per connection, a cap on concurrent connections, and
//! `Connection: close`. No keep-alive, no request bodies, no TLS: scrapers
//! and probes need nothing more, and nothing here can stall the pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// Deadline for reading one request and writing its answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 32;

/// One answer: the router's whole output, so routing stays testable without
/// sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Body (also sized for `HEAD`, which sends no body).
    pub body: String,
}

impl Response {
    /// A `text/plain` answer: health probes and errors read well in a shell.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Maps a request path (query string removed) to an answer. Called on a
/// blocking thread, so it may take locks or render at length.
pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Serves `listener` until the task is aborted; a failing connection never
/// ends the loop.
pub async fn serve(listener: TcpListener, handler: Handler) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "Metrics listener: accept failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "Metrics listener busy; closing a connection.");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(CONNECTION_DEADLINE, connection(stream, handler)).await;
            if let Ok(Err(e)) = result {
                tracing::debug!(%peer, error = %e, "Metrics connection failed.");
            }
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        if head.len() >= MAX_HEAD {
            return answer(
                &mut stream,
                &Response::text(431, "request head too large\n"),
                false,
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let (response, send_body) = match parse_request_line(&head[..end]) {
        Ok((method, path)) => {
            let path = path.to_owned();
            let handler = handler.clone();
            let response = tokio::task::spawn_blocking(move || handler(&path))
                .await
                .unwrap_or_else(|_| Response::text(500, "internal error\n"));
            (response, method == "GET")
        }
        Err(response) => (response, true),
    };
    answer(&mut stream, &response, send_body).await
}

/// Index just past the blank line ending the head, if it arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// `(method, path)` of the request line, or the error answer.
fn parse_request_line(head: &[u8]) -> Result<(&str, &str), Response> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .map_err(|_| Response::text(400, "bad request\n"))?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "bad request\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(400, "bad request\n"));
    }
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(405, "only GET and HEAD\n"));
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    Ok((method, path))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

async fn answer(
    stream: &mut TcpStream,
    response: &Response,
    send_body: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    if send_body {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    stream.write_all(&bytes).await?;
    stream.shutdown().await?;
    // Read what the client still sends (briefly), so closing with unread
    // input does not reset the connection before the answer is read.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_or_fail_with_a_status() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").ok(),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            parse_request_line(b"HEAD /readyz HTTP/1.0\n\n").ok(),
            Some(("HEAD", "/readyz"))
        );
        let status = |head: &[u8]| parse_request_line(head).err().map(|r| r.status);
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n"), Some(405));
        assert_eq!(status(b"GET /metrics\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET /metrics SPDY/3\r\n\r\n"), Some(400));
        assert_eq!(status(b"\xff\xfe\r\n\r\n"), Some(400));
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
    }

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_routes_over_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handler: Handler = Arc::new(|path: &str| match path {
            "/healthz" => Response::text(200, "ok\n"),
            _ => Response::text(404, "not found\n"),
        });
        let server = tokio::spawn(serve(listener, handler));
        let ok = get(addr, "GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        assert!(ok.contains("Content-Length: 3\r\n"), "{ok}");
        let head = get(addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
        let missing = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let refused = get(addr, &big).await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        server.abort();
    }
}
