//! tokio-postgres sessions over sockets this module opened and secured.
//!
//! tokio-postgres gets the finished stream through `connect_raw` with
//! `sslnegotiation=direct`: it asks the [`Established`] "connector" to start
//! TLS and receives the same stream back, with its `tls-server-end-point`
//! channel binding, so SCRAM-SHA-256-PLUS works exactly as with a TLS crate.
//! Every byte the server sends before AuthenticationOk passes a guard that
//! fails the connection when the server asks for a cleartext password over a
//! connection whose certificate was not verified: tokio-postgres would send
//! it, and an impostor is exactly who asks for one.

use std::future::Ready;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Client;
use tokio_postgres::tls::{ChannelBinding as PgChannelBinding, TlsConnect, TlsStream};

use super::params::ChannelBinding;
use super::{BoxedIo, ConnConfig, ConnError, TlsInfo};

/// A SQL connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {what} at {target}: {source}")]
pub struct ConnectError {
    /// Which server, in the operator's words ("the leader", "follower east").
    pub what: String,
    /// `host:port/dbname`.
    pub target: String,
    /// The cause.
    #[source]
    pub source: Failure,
}

impl ConnectError {
    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        match &self.source {
            Failure::Conn(e) => e.is_transient(),
            Failure::Pg(e) => crate::conn::is_transient_sql_error(e),
        }
    }

    /// The tokio-postgres error, when the server answered.
    pub fn pg_error(&self) -> Option<&tokio_postgres::Error> {
        match &self.source {
            Failure::Pg(e) => Some(e),
            Failure::Conn(_) => None,
        }
    }
}

/// What went wrong: before the server spoke (socket, TLS, refused exchange),
/// or the server's (or tokio-postgres') own error.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Socket, TLS, verification, refused request.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Startup, authentication or the server's error.
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
}

/// Opens a SQL session to `cfg` (every host in turn, `target_session_attrs`
/// honoured), spawns its connection task and returns the client. `what`
/// names the server in errors.
pub async fn connect_sql(cfg: &ConnConfig, what: &str) -> Result<Arc<Client>, ConnectError> {
    connect_client(cfg, what)
        .await
        .map(|(client, _)| Arc::new(client))
}

/// As [`connect_sql`], returning the client itself and the TLS facts
/// (`None`: plain).
pub async fn connect_client(
    cfg: &ConnConfig,
    what: &str,
) -> Result<(Client, Option<TlsInfo>), ConnectError> {
    let fail = |source: Failure| ConnectError {
        what: what.to_owned(),
        target: cfg.describe(),
        source,
    };
    super::first_fitting(
        cfg,
        cfg.connect_timeout(),
        |host, plain_only| async move { connect_one(cfg, &host, plain_only, what).await },
        |session: (Client, Option<TlsInfo>)| async move {
            let answer = session.0.query_one(super::SESSION_STATE_SQL, &[]).await;
            let answer = answer.map(|row| (row.get(0), row.get(1)));
            (session, answer.map_err(Failure::Pg))
        },
    )
    .await
    .map_err(fail)
}

async fn connect_one(
    cfg: &ConnConfig,
    host: &super::Host,
    plain_only: bool,
    what: &str,
) -> Result<(Client, Option<TlsInfo>), Failure> {
    let opened = super::open(cfg, host, plain_only).await?;
    let addr: Arc<str> = Arc::from(opened.addr.as_str());
    let verified = opened.tls.as_ref().is_some_and(|t| t.verified);
    let stream = PgStream {
        io: opened.io,
        end_point: opened.tls.as_ref().and_then(|t| t.end_point.clone()),
        guard: Guard::new(verified),
        addr: addr.clone(),
    };
    let mut pg = tokio_postgres::Config::new();
    pg.user(cfg.user())
        .dbname(cfg.dbname())
        .application_name(cfg.params.application_name.as_deref().unwrap_or("pgsieve"))
        .channel_binding(match cfg.params.channel_binding {
            ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
        });
    if let Some(options) = &cfg.params.options {
        pg.options(options);
    }
    if let Some(password) = &cfg.password {
        pg.password(password);
    }
    if opened.tls.is_some() {
        pg.ssl_mode(tokio_postgres::config::SslMode::Require)
            .ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    } else {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let (client, connection) =
        pg.connect_raw(stream, Established)
            .await
            .map_err(|e| match refused(&e) {
                Some(reason) => Failure::Conn(ConnError::Refused {
                    addr: addr.to_string(),
                    reason,
                }),
                None => Failure::Pg(e),
            })?;
    let what = what.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(connection = %what, error = %e, "SQL connection ended.");
        }
    });
    Ok((client, opened.tls))
}

/// The guard's refusal inside a tokio-postgres I/O error.
fn refused(e: &tokio_postgres::Error) -> Option<String> {
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    let refusal = io.get_ref()?.downcast_ref::<CleartextRefused>()?;
    Some(refusal.to_string())
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the server asks for the password in cleartext, which pgsieve sends only over TLS with a verified certificate (sslmode=verify-ca or verify-full); use scram-sha-256 in pg_hba.conf"
)]
struct CleartextRefused;

/// The transport tokio-postgres reads and writes.
pub struct PgStream {
    io: BoxedIo,
    end_point: Option<Vec<u8>>,
    guard: Guard,
    addr: Arc<str>,
}

impl AsyncRead for PgStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            if this.guard.scan(&buf.filled()[before..]).is_err() {
                tracing::warn!(addr = %this.addr, "Refused a cleartext password request.");
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    CleartextRefused,
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl TlsStream for PgStream {
    fn channel_binding(&self) -> PgChannelBinding {
        match &self.end_point {
            Some(hash) => PgChannelBinding::tls_server_end_point(hash.clone()),
            None => PgChannelBinding::none(),
        }
    }
}

/// The "TLS connector" handed to tokio-postgres: TLS is already up (or not
/// wanted), so it returns the stream as it is.
pub struct Established;

impl TlsConnect<PgStream> for Established {
    type Stream = PgStream;
    type Error = std::io::Error;
    type Future = Ready<Result<PgStream, std::io::Error>>;

    fn connect(self, stream: PgStream) -> Self::Future {
        std::future::ready(Ok(stream))
    }
}

/// Watches backend messages until AuthenticationOk for a cleartext password
/// request (`R`, code 3) on an unverified connection.
#[derive(Debug)]
struct Guard {
    active: bool,
    verified: bool,
    head: [u8; 9],
    have: usize,
    skip: usize,
}

impl Guard {
    fn new(verified: bool) -> Guard {
        Guard {
            active: true,
            verified,
            head: [0; 9],
            have: 0,
            skip: 0,
        }
    }

    /// Feeds bytes read from the server; `Err` when they ask for a password
    /// in cleartext and the server is not verified.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), ()> {
        while self.active && !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            let len = |h: &[u8; 9]| u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            if self.have == 5 {
                let len = len(&self.head);
                if len < 4 {
                    // Not the protocol: tokio-postgres reports it.
                    self.active = false;
                } else if self.head[0] != b'R' || len < 8 {
                    self.skip = len - 4;
                    self.have = 0;
                }
            } else if self.have == 9 {
                let code =
                    u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]);
                match code {
                    0 => self.active = false,
                    3 if !self.verified => return Err(()),
                    _ => {}
                }
                self.skip = len(&self.head) - 8;
                self.have = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    #[test]
    fn cleartext_requests_are_refused_unless_verified() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&[b'N', 0, 0, 0, 6, b'x', 0]); // a notice
        stream.extend(auth(10, b"SCRAM-SHA-256\0\0")); // SASL offer
        stream.extend(auth(3, b""));
        // Split anywhere: the verdict is the same.
        for cut in 0..stream.len() {
            let mut g = Guard::new(false);
            let first = g.scan(&stream[..cut]);
            let verdict = first.and_then(|()| g.scan(&stream[cut..]));
            assert!(verdict.is_err(), "cut at {cut}");
            let mut g = Guard::new(true);
            assert!(g.scan(&stream[..cut]).is_ok() && g.scan(&stream[cut..]).is_ok());
        }
    }

    #[test]
    fn guard_retires_after_authentication_ok() {
        let mut g = Guard::new(false);
        let mut stream = auth(0, b"");
        stream.extend(auth(3, b"")); // after login: not an auth request any more
        assert!(g.scan(&stream).is_ok());
        assert!(!g.active);
    }
}
