//! A tiny HTTP/1.1 responder for `/metrics`, `/healthz` and `/readyz`.
//!
//! The Prometheus exporter's own listener answers every path with the
//! metrics and cannot say "not ready" (503), so pgsieve answers the three
//! endpoints itself: one `GET`/`HEAD` per connection, a bounded request
//! head, a deadline per connection, a cap on concurrent connections, and
//! `Connection: close`. No keep-alive, no request bodies, no TLS: scrapers
//! and probes need nothing more, and nothing here can stall the pipeline.
//!
//! Idle connections cannot starve the probes: at the cap, the oldest
//! connection is closed to make room for the new one (answered requests
//! finish in milliseconds, so the oldest is the idlest). With a token,
//! `/metrics` needs `Authorization: Bearer <token>` and `/readyz` answers
//! with its status code only unless the token is given.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head accepted (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// Deadline for receiving the request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline for reading one request and writing its answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections open at once; a new one beyond this closes the oldest.
const MAX_CONNECTIONS: usize = 64;

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
/// ends the loop. `token`: the bearer token `/metrics` requires.
pub async fn serve(listener: TcpListener, handler: Handler, token: Option<Arc<str>>) {
    let mut open: VecDeque<tokio::task::JoinHandle<()>> = VecDeque::new();
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
        open.retain(|task| !task.is_finished());
        if open.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = open.pop_front() {
                tracing::debug!(%peer, "Metrics listener full; closing the oldest connection.");
                oldest.abort();
            }
        }
        let handler = handler.clone();
        let token = token.clone();
        open.push_back(tokio::spawn(async move {
            let result =
                tokio::time::timeout(CONNECTION_DEADLINE, connection(stream, handler, token)).await;
            if let Ok(Err(e)) = result {
                tracing::debug!(%peer, error = %e, "Metrics connection failed.");
            }
        }));
    }
}

async fn connection(
    mut stream: TcpStream,
    handler: Handler,
    token: Option<Arc<str>>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        loop {
            if let Some(end) = head_end(&head) {
                return Ok::<_, std::io::Error>(Some(end));
            }
            if head.len() >= MAX_HEAD {
                return Ok(None);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
    };
    let end = match tokio::time::timeout(HEAD_DEADLINE, read_head).await {
        Ok(Ok(Some(end))) => end,
        Ok(Ok(None)) => {
            return answer(
                &mut stream,
                &Response::text(431, "request head too large\n"),
                false,
            )
            .await;
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let head = &head[..end];
    let (response, send_body) = match parse_request_line(head) {
        Ok((method, path)) => {
            let authorized = match &token {
                None => true,
                Some(token) => bearer(head).is_some_and(|given| same(given, token)),
            };
            let response = if path == "/metrics" && !authorized {
                Response::text(401, "unauthorized: send Authorization: Bearer <token>\n")
            } else {
                let path_is_readyz = path == "/readyz";
                let path = path.to_owned();
                let handler = handler.clone();
                let mut response = tokio::task::spawn_blocking(move || handler(&path))
                    .await
                    .unwrap_or_else(|_| Response::text(500, "internal error\n"));
                if !authorized && path_is_readyz {
                    // Status only: the reason may name servers and errors.
                    response.body = if response.status == 200 {
                        "ready\n"
                    } else {
                        "not ready\n"
                    }
                    .to_owned();
                }
                response
            };
            (response, method == "GET")
        }
        Err(response) => (response, true),
    };
    answer(&mut stream, &response, send_body).await
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(head: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let value = value.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// Compares without an early exit, so timing does not tell how much matched.
fn same(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
        401 => "Unauthorized",
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
    if response.status == 401 {
        out.push_str("WWW-Authenticate: Bearer\r\n");
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
        let server = tokio::spawn(serve(listener, handler, None));
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

    #[tokio::test]
    async fn token_guards_metrics_and_idle_connections_do_not_starve_probes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handler: Handler = Arc::new(|path: &str| match path {
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => Response::text(503, "follower x: secret reason\n"),
            "/metrics" => Response::text(200, "pgsieve_up 1\n"),
            _ => Response::text(404, "not found\n"),
        });
        let server = tokio::spawn(serve(listener, handler, Some(Arc::from("t0ken"))));
        let denied = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(denied.starts_with("HTTP/1.1 401 "), "{denied}");
        assert!(denied.contains("WWW-Authenticate: Bearer\r\n"), "{denied}");
        let wrong = get(
            addr,
            "GET /metrics HTTP/1.1\r\nAuthorization: Bearer t0kem\r\n\r\n",
        )
        .await;
        assert!(wrong.starts_with("HTTP/1.1 401 "), "{wrong}");
        let ok = get(
            addr,
            "GET /metrics HTTP/1.1\r\nauthorization: bearer t0ken\r\n\r\n",
        )
        .await;
        assert!(ok.ends_with("pgsieve_up 1\n"), "{ok}");
        let ready = get(addr, "GET /readyz HTTP/1.1\r\n\r\n").await;
        assert!(
            ready.starts_with("HTTP/1.1 503 ") && ready.ends_with("\r\n\r\nnot ready\n"),
            "{ready}"
        );

        // Twice the cap of idle connections, then a probe: answered at once.
        let mut idle = Vec::new();
        for _ in 0..2 * MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.expect("idle connect"));
        }
        let started = std::time::Instant::now();
        let health = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(health.ends_with("ok\n"), "{health}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }
}
