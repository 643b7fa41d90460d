//! Opening the replication connection: socket, TLS, startup message with
//! `replication=database`, authentication, and waiting for ReadyForQuery.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;

use super::auth::{self, Credentials};
use super::error::SourceError;
use super::framing::FrameReader;
use super::messages::{self, tag};
use super::tls::{self, BoxedIo, TlsMode};

/// Connect timeout when the connection string sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to open a replication connection to the leader.
///
/// `pg` carries host(s), port(s), user, password and dbname as parsed by
/// tokio-postgres from a URL or keyword string (it cannot parse
/// `replication=…`; this module adds that itself). `tls`,
/// `application_name` and `connect_timeout` win over what `pg` says.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Parsed connection string: hosts, ports, user, password, dbname.
    pub pg: tokio_postgres::Config,
    /// TLS policy.
    pub tls: TlsMode,
    /// Shown in `pg_stat_replication.application_name` on the leader.
    pub application_name: String,
    /// Bound on TCP connect + TLS + authentication, per host tried.
    pub connect_timeout: Duration,
}

impl SourceConfig {
    /// Takes TLS mode, application name and timeout from `pg` where it sets
    /// them (`sslmode`, `application_name`, `connect_timeout`), otherwise
    /// `Prefer`, `"pgsieve"` and 10 s.
    pub fn new(pg: tokio_postgres::Config) -> SourceConfig {
        SourceConfig {
            tls: TlsMode::from_ssl_mode(pg.get_ssl_mode()),
            application_name: pg.get_application_name().unwrap_or("pgsieve").to_string(),
            connect_timeout: pg
                .get_connect_timeout()
                .copied()
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            pg,
        }
    }

    /// Parses a `postgresql://` URL or a `key=value` string, see [`SourceConfig::new`].
    pub fn parse(conninfo: &str) -> Result<SourceConfig, SourceError> {
        let pg = conninfo
            .parse::<tokio_postgres::Config>()
            .map_err(|e| SourceError::Config(format!("bad leader connection string: {e}")))?;
        Ok(SourceConfig::new(pg))
    }
}

/// An authenticated `replication=database` session to the leader, idle and
/// ready for replication commands or SQL.
///
/// Its `&mut self` methods are not cancellation-safe: dropping one of their
/// futures half-way leaves the session out of step, so drop the connection
/// too. [`ReplicationConnection::start_replication`] turns it into the
/// streaming halves.
pub struct ReplicationConnection {
    pub(crate) reader: FrameReader<ReadHalf<BoxedIo>>,
    pub(crate) writer: WriteHalf<BoxedIo>,
    pub(crate) write_buf: BytesMut,
    pub(crate) addr: Arc<str>,
    parameters: Vec<(String, String)>,
    backend_pid: Option<i32>,
    is_tls: bool,
}

impl ReplicationConnection {
    /// Opens the connection: tries each configured host in order and returns
    /// the first that accepts, or the last error.
    pub async fn connect(cfg: &SourceConfig) -> Result<Self, SourceError> {
        let targets = targets(&cfg.pg)?;
        let mut last_error = None;
        for target in &targets {
            let addr = target.addr();
            match tokio::time::timeout(cfg.connect_timeout, connect_one(cfg, target, &addr)).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "Leader host failed.");
                    last_error = Some(e);
                }
                Err(_) => {
                    last_error = Some(SourceError::Timeout {
                        addr,
                        after: cfg.connect_timeout,
                    })
                }
            }
        }
        Err(last_error.unwrap_or_else(|| SourceError::Config("no leader host configured".into())))
    }

    /// `host:port` (or socket path) of the leader this session talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A run-time parameter the server reported at startup (`server_version`, …).
    pub fn server_parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Process id of the walsender serving this session.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.is_tls
    }

    /// Records a ParameterStatus message.
    pub(crate) fn note_parameter(&mut self, body: &[u8]) -> Result<(), SourceError> {
        let (name, value) = messages::parse_parameter_status(body)?;
        self.parameters.push((name, value));
        Ok(())
    }

    /// Writes and flushes `self.write_buf`.
    pub(crate) async fn flush_write_buf(&mut self) -> Result<(), SourceError> {
        let addr = &self.addr;
        let io = |source| SourceError::Io {
            addr: addr.to_string(),
            source,
        };
        self.writer.write_all(&self.write_buf).await.map_err(io)?;
        self.writer.flush().await.map_err(io)?;
        self.write_buf.clear();
        Ok(())
    }
}

/// One place to try.
enum Target {
    Tcp { host: String, port: u16 },
    Unix { path: std::path::PathBuf },
}

impl Target {
    fn addr(&self) -> String {
        match self {
            Target::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Target::Tcp { host, port } => format!("{host}:{port}"),
            Target::Unix { path } => path.display().to_string(),
        }
    }
}

/// Hosts paired with ports the way libpq does it: one port for all, or one each.
fn targets(pg: &tokio_postgres::Config) -> Result<Vec<Target>, SourceError> {
    let hosts = pg.get_hosts();
    let ports = pg.get_ports();
    if hosts.is_empty() {
        return Err(SourceError::Config(
            "the leader connection string names no host".into(),
        ));
    }
    if ports.len() > 1 && ports.len() != hosts.len() {
        return Err(SourceError::Config(format!(
            "{} hosts but {} ports in the leader connection string",
            hosts.len(),
            ports.len()
        )));
    }
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    Ok(hosts
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(host) => Target::Tcp {
                host: host.clone(),
                port: port_of(i),
            },
            #[cfg(unix)]
            Host::Unix(dir) => Target::Unix {
                path: dir.join(format!(".s.PGSQL.{}", port_of(i))),
            },
        })
        .collect())
}

/// Connects to one target and runs startup to ReadyForQuery.
async fn connect_one(
    cfg: &SourceConfig,
    target: &Target,
    addr: &str,
) -> Result<ReplicationConnection, SourceError> {
    let connect_error = |source| SourceError::Connect {
        addr: addr.to_string(),
        source,
    };
    let negotiated = match target {
        Target::Tcp { host, port } => {
            let tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_error)?;
            tcp.set_nodelay(true).map_err(connect_error)?;
            tls::negotiate(tcp, &cfg.tls, host, addr).await?
        }
        #[cfg(unix)]
        Target::Unix { path } => {
            let unix = tokio::net::UnixStream::connect(path)
                .await
                .map_err(connect_error)?;
            tls::Negotiated {
                io: Box::new(unix),
                is_tls: false,
            }
        }
        #[cfg(not(unix))]
        Target::Unix { .. } => {
            return Err(SourceError::Config(
                "Unix sockets are not supported here".into(),
            ));
        }
    };
    let is_tls = negotiated.is_tls;
    let (read, write) = tokio::io::split(negotiated.io);
    let addr: Arc<str> = Arc::from(addr);
    let mut conn = ReplicationConnection {
        reader: FrameReader::new(read, addr.clone()),
        writer: write,
        write_buf: BytesMut::with_capacity(1024),
        addr,
        parameters: Vec::new(),
        backend_pid: None,
        is_tls,
    };

    let user = cfg
        .pg
        .get_user()
        .ok_or_else(|| SourceError::Config("the leader connection string names no user".into()))?;
    let dbname = cfg.pg.get_dbname().unwrap_or(user);
    let mut params = vec![
        ("user", user),
        ("database", dbname),
        ("replication", "database"),
        ("application_name", cfg.application_name.as_str()),
        ("client_encoding", "UTF8"),
    ];
    if let Some(options) = cfg.pg.get_options() {
        params.push(("options", options));
    }
    frontend::startup_message(params, &mut conn.write_buf).map_err(auth::encode_error)?;
    conn.flush_write_buf().await?;

    let credentials = Credentials {
        user,
        password: cfg.pg.get_password(),
        is_tls,
    };
    auth::authenticate(&mut conn.reader, &mut conn.writer, &credentials).await?;

    loop {
        let frame = conn.reader.next_frame().await?;
        match frame.tag {
            tag::READY_FOR_QUERY => break,
            tag::PARAMETER_STATUS => conn.note_parameter(&frame.body)?,
            tag::BACKEND_KEY_DATA => {
                let pid = frame.body.get(..4).ok_or_else(|| {
                    SourceError::Protocol("truncated backend key data message".into())
                })?;
                conn.backend_pid = Some(i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]));
            }
            tag::NOTICE_RESPONSE => log_notice(&frame.body),
            tag::ERROR_RESPONSE => return Err(messages::parse_error(&frame.body)),
            other => {
                return Err(SourceError::Protocol(format!(
                    "unexpected message {:?} while starting up",
                    char::from(other)
                )));
            }
        }
    }
    tracing::debug!(
        addr = %conn.addr,
        pid = ?conn.backend_pid,
        tls = is_tls,
        "Replication connection ready."
    );
    Ok(conn)
}

/// Notices are informational; keep them out of the operator's way.
pub(crate) fn log_notice(body: &[u8]) {
    match messages::parse_error_fields(body) {
        Ok(f) => tracing::debug!(code = %f.code, message = %f.message, "Leader notice."),
        Err(e) => tracing::debug!(error = %e, "Unparsable leader notice."),
    }
}
