//! One connection layer for every PostgreSQL connection pgsieve opens: the
//! leader's replication connection (`source`), and every tokio-postgres SQL
//! session (leader snapshot reads and backfills, follower apply, `check`,
//! `status`, `setup`, `tap`, the hub's rejoin probes).
//!
//! - [`params`]: libpq connection strings (URL and `key=value`), `PG*`
//!   environment defaults, multi-host lists, `target_session_attrs`.
//! - [`tls`]: rustls configured per `sslmode` (`disable` … `verify-full`),
//!   `sslrootcert`, client certificates (`sslcert`/`sslkey`), `sslcrl`; the
//!   `SSLRequest` exchange; `tls-server-end-point` for SCRAM-SHA-256-PLUS.
//! - [`sql`]: tokio-postgres over a socket this module opened and secured
//!   (`connect_raw` with direct TLS negotiation, so tokio-postgres sees the
//!   finished TLS stream and its channel binding), behind a guard that
//!   refuses a cleartext-password request unless the server was verified.
//! - [`files`]: password and key files must not be readable by others.
//!
//! A [`ConnConfig`] carries exactly one password, the one configured for that
//! server; nothing here falls back to another server's credentials.

mod transient;
pub use transient::{is_transient_sql_error, is_transient_sqlstate};
pub mod files;
pub mod params;
pub mod sql;
pub mod tls;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use params::{ChannelBinding, Host, Params, RootCert, SslMode, TargetSessionAttrs};
pub use sql::{ConnectError, connect_client, connect_sql};
pub use tls::{TlsInfo, TlsSetup};

/// Connect timeout when the connection string sets none (libpq waits forever;
/// a replication proxy should not).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Anything a connection can run over: TCP, TLS over TCP, Unix socket.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed transport, so one code path serves every kind of socket.
pub type BoxedIo = Box<dyn Io>;

/// A server to connect to: its parameters, its own password, TLS built.
#[derive(Clone)]
pub struct ConnConfig {
    /// What the connection string said.
    pub params: Params,
    /// The password for this server only (`None`: none configured).
    pub password: Option<Vec<u8>>,
    /// TLS configuration, built from `params.ssl`.
    pub tls: TlsSetup,
}

impl std::fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnConfig")
            .field("params", &self.params)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnConfig {
    /// Parses a connection string (process environment as defaults) and
    /// builds its TLS configuration; a password in the string is used.
    pub fn parse(conninfo: &str) -> Result<ConnConfig, String> {
        Self::from_params(Params::parse(conninfo)?)
    }

    /// Builds the TLS configuration of `params`.
    pub fn from_params(params: Params) -> Result<ConnConfig, String> {
        let tls = TlsSetup::build(&params.ssl)?;
        Ok(ConnConfig {
            password: params.password.clone().map(String::into_bytes),
            params,
            tls,
        })
    }

    /// The role name (`user`), or the OS user as libpq defaults it.
    pub fn user(&self) -> String {
        self.params
            .user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_owned())
    }

    /// The database (default: the user name).
    pub fn dbname(&self) -> String {
        self.params.dbname.clone().unwrap_or_else(|| self.user())
    }

    /// Per-host bound on connect + TLS + authentication.
    pub fn connect_timeout(&self) -> Duration {
        self.params
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// `host:port[,…]/dbname` (no user, no password), for messages.
    pub fn describe(&self) -> String {
        self.params.describe()
    }
}

/// `host:port[,…]/dbname` of a server (no user, no password), for error
/// messages that must say which server failed.
pub fn describe_target(pg: &ConnConfig) -> String {
    pg.describe()
}

/// Why a connection could not be opened (before the server's own errors).
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The parameters cannot be used.
    #[error("{0}")]
    Config(String),
    /// TCP (or Unix socket) connect failed.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// `host:port` tried.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Connect + TLS + authentication took too long.
    #[error("timed out after {after:?} connecting to {addr}")]
    Timeout {
        /// `host:port` tried.
        addr: String,
        /// The bound.
        after: Duration,
    },
    /// Reading or writing during the TLS negotiation failed.
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up or the certificate did not verify.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The server asked for something this connection must not give.
    #[error("{addr} refused: {reason}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// Why pgsieve refused.
        reason: String,
    },
    /// No host matched `target_session_attrs`.
    #[error("no server in {hosts} is {wanted}")]
    SessionAttrs {
        /// The hosts tried.
        hosts: String,
        /// What was asked for.
        wanted: String,
    },
}

impl ConnError {
    /// Whether trying again later may help (network trouble), as opposed to
    /// configuration, TLS verification or a refused credential exchange.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnError::Connect { .. }
                | ConnError::Timeout { .. }
                | ConnError::Io { .. }
                | ConnError::SessionAttrs { .. }
        )
    }
}

/// An open transport to one host, TLS negotiated per `sslmode`.
pub(crate) struct Opened {
    /// The transport.
    pub io: BoxedIo,
    /// TLS facts (`None`: plain).
    pub tls: Option<TlsInfo>,
    /// `host:port` (or socket path).
    pub addr: String,
    /// A duplicate of the TCP socket's descriptor, for socket options set
    /// after the transport is boxed (`None` on a Unix socket).
    pub tcp_socket: Option<std::os::fd::OwnedFd>,
}

/// Opens a socket to `host` and negotiates TLS (`plain_only`: the first try
/// of `sslmode=allow`). Unix sockets never use TLS, as in libpq.
pub(crate) async fn open(
    cfg: &ConnConfig,
    host: &Host,
    plain_only: bool,
) -> Result<Opened, ConnError> {
    let addr = host.describe();
    let connect_error = |source| ConnError::Connect {
        addr: addr.clone(),
        source,
    };
    match host {
        Host::Tcp {
            name,
            addr: hostaddr,
            port,
        } => {
            let tcp = match hostaddr {
                Some(ip) => TcpStream::connect((*ip, *port)).await,
                None => TcpStream::connect((name.as_str(), *port)).await,
            }
            .map_err(connect_error)?;
            tcp.set_nodelay(true).map_err(connect_error)?;
            tune_socket(&tcp, &cfg.params).map_err(connect_error)?;
            let tcp_socket = std::os::fd::AsFd::as_fd(&tcp)
                .try_clone_to_owned()
                .map_err(connect_error)?;
            let negotiated = tls::negotiate(tcp, &cfg.tls, name, &addr, plain_only).await?;
            Ok(Opened {
                io: negotiated.io,
                tls: negotiated.tls,
                addr,
                tcp_socket: Some(tcp_socket),
            })
        }
        Host::Unix { .. } => {
            let unix = tokio::net::UnixStream::connect(&addr)
                .await
                .map_err(connect_error)?;
            Ok(Opened {
                io: Box::new(unix),
                tls: None,
                addr,
                tcp_socket: None,
            })
        }
    }
}

/// TCP keepalives and user timeout as the connection string asks.
fn tune_socket(tcp: &TcpStream, params: &Params) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    let k = &params.keepalives;
    if k.enabled {
        let mut keepalive = socket2::TcpKeepalive::new();
        if let Some(idle) = k.idle {
            keepalive = keepalive.with_time(idle);
        }
        if let Some(interval) = k.interval {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(count) = k.count {
            keepalive = keepalive.with_retries(count);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(timeout) = params.tcp_user_timeout {
        socket.set_tcp_user_timeout(Some(timeout))?;
    }
    Ok(())
}

/// The ways to try one host, in order: `allow` tries plain, then TLS.
fn attempts(cfg: &ConnConfig) -> &'static [bool] {
    if cfg.tls.mode == SslMode::Allow {
        &[true, false]
    } else {
        &[false]
    }
}

/// libpq's host loop, shared by both connection kinds: every host in order
/// (per `target_session_attrs` pass), each within `timeout`, `sslmode=allow`
/// trying plain then TLS; `state` reads `(transaction_read_only,
/// in recovery)` of a session when the attributes matter (and hands the
/// session back). Returns the first session that fits, else the last error.
pub(crate) async fn first_fitting<C, E, Open, Opening, State, Reading>(
    cfg: &ConnConfig,
    timeout: Duration,
    mut connect: Open,
    mut state: State,
) -> Result<C, E>
where
    E: From<ConnError> + std::fmt::Display,
    Open: FnMut(Host, bool) -> Opening,
    Opening: Future<Output = Result<C, E>>,
    State: FnMut(C) -> Reading,
    Reading: Future<Output = (C, Result<(bool, bool), E>)>,
{
    let wanted = cfg.params.target_session_attrs;
    let mut last: Option<E> = None;
    for &pass in passes(wanted) {
        for host in &cfg.params.hosts {
            for &plain_only in attempts(cfg) {
                let attempt = connect(host.clone(), plain_only);
                let conn = match tokio::time::timeout(timeout, attempt).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        // libpq goes on with the next host (each one held to
                        // the same sslmode); the last error is reported.
                        tracing::debug!(host = %host.describe(), error = %e, "Connection attempt failed.");
                        last = Some(e);
                        continue;
                    }
                    Err(_) => {
                        last = Some(E::from(ConnError::Timeout {
                            addr: host.describe(),
                            after: timeout,
                        }));
                        continue;
                    }
                };
                if pass == TargetSessionAttrs::Any {
                    return Ok(conn);
                }
                let (conn, answer) = state(conn).await;
                match answer {
                    Ok((read_only, in_recovery)) if session_fits(pass, read_only, in_recovery) => {
                        return Ok(conn);
                    }
                    Ok(_) => {
                        last = Some(E::from(ConnError::SessionAttrs {
                            hosts: cfg.describe(),
                            wanted: attrs_name(wanted).into(),
                        }));
                    }
                    Err(e) => last = Some(e),
                }
                break;
            }
        }
    }
    Err(last.unwrap_or_else(|| E::from(ConnError::Config("no host to connect to".into()))))
}

/// The query both connection kinds ask when `target_session_attrs` matters.
pub(crate) const SESSION_STATE_SQL: &str =
    "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()";

/// Whether a session's answers to
/// `transaction_read_only` and `pg_is_in_recovery()` fit `wanted`.
fn session_fits(wanted: TargetSessionAttrs, read_only: bool, in_recovery: bool) -> bool {
    match wanted {
        TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => true,
        TargetSessionAttrs::ReadWrite => !read_only,
        TargetSessionAttrs::ReadOnly => read_only,
        TargetSessionAttrs::Primary => !in_recovery,
        TargetSessionAttrs::Standby => in_recovery,
    }
}

/// Hosts in the order to try them: `prefer-standby` tries every host as
/// `standby` first, then as `any` (libpq's two passes).
fn passes(wanted: TargetSessionAttrs) -> &'static [TargetSessionAttrs] {
    match wanted {
        TargetSessionAttrs::PreferStandby => {
            &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
        }
        TargetSessionAttrs::Any => &[TargetSessionAttrs::Any],
        TargetSessionAttrs::ReadWrite => &[TargetSessionAttrs::ReadWrite],
        TargetSessionAttrs::ReadOnly => &[TargetSessionAttrs::ReadOnly],
        TargetSessionAttrs::Primary => &[TargetSessionAttrs::Primary],
        TargetSessionAttrs::Standby => &[TargetSessionAttrs::Standby],
    }
}

/// The spelling of `target_session_attrs` values, for messages.
fn attrs_name(attrs: TargetSessionAttrs) -> &'static str {
    match attrs {
        TargetSessionAttrs::Any => "any",
        TargetSessionAttrs::ReadWrite => "read-write",
        TargetSessionAttrs::ReadOnly => "read-only",
        TargetSessionAttrs::Primary => "primary",
        TargetSessionAttrs::Standby => "a standby",
        TargetSessionAttrs::PreferStandby => "prefer-standby",
    }
}
