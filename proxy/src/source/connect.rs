//! Opening the replication connection: socket and TLS from the shared
//! connection layer (`crate::conn`, the same as every SQL session), startup
//! message with `replication=database`, authentication, and waiting for
//! ReadyForQuery.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use super::auth::{self, Credentials};
use super::error::SourceError;
use super::framing::FrameReader;
use super::messages::{self, tag};
use crate::conn::{self, BoxedIo, ConnConfig, Host};

/// Everything needed to open a replication connection to the leader.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The leader: hosts, user, dbname, TLS, channel binding and its password.
    pub pg: ConnConfig,
    /// Shown in `pg_stat_replication.application_name` on the leader.
    pub application_name: String,
    /// Bound on TCP connect + TLS + authentication, per host tried.
    pub connect_timeout: Duration,
}

impl SourceConfig {
    /// The leader's replication connection as `run` opens it (application
    /// name `pgsieve-<slot>`, so `pg_stat_replication` says whose it is).
    pub fn for_leader(config: &crate::config::Config) -> SourceConfig {
        let mut source = SourceConfig::new(config.leader.pg.clone());
        source.application_name = format!("pgsieve-{}", config.leader.slot);
        source
    }

    /// Takes the application name and timeout from `pg` where it sets them,
    /// otherwise `"pgsieve"` and 10 s.
    pub fn new(pg: ConnConfig) -> SourceConfig {
        SourceConfig {
            application_name: pg
                .params
                .application_name
                .clone()
                .unwrap_or_else(|| "pgsieve".into()),
            connect_timeout: pg.connect_timeout(),
            pg,
        }
    }

    /// Parses a `postgresql://` URL or a `key=value` string (its password
    /// included), see [`SourceConfig::new`].
    pub fn parse(conninfo: &str) -> Result<SourceConfig, SourceError> {
        let pg = ConnConfig::parse(conninfo)
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
    /// For read pacing once streaming starts (`None`: Unix socket).
    pub(crate) tcp_socket: Option<std::os::fd::OwnedFd>,
}

impl ReplicationConnection {
    /// Opens the connection: tries each configured host in order (libpq's
    /// `target_session_attrs` passes) and returns the first that accepts,
    /// or the last error.
    pub async fn connect(cfg: &SourceConfig) -> Result<Self, SourceError> {
        conn::first_fitting(
            &cfg.pg,
            cfg.connect_timeout,
            |host, plain_only| async move { connect_one(cfg, &host, plain_only).await },
            |mut session: ReplicationConnection| async move {
                let answer = session.simple_query(conn::SESSION_STATE_SQL).await;
                let answer = answer.map(|rows| {
                    let yes = |i: usize| {
                        rows.first()
                            .and_then(|r| r.get(i))
                            .cloned()
                            .flatten()
                            .as_deref()
                            == Some("t")
                    };
                    (yes(0), yes(1))
                });
                (session, answer)
            },
        )
        .await
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

/// Connects to one target and runs startup to ReadyForQuery.
async fn connect_one(
    cfg: &SourceConfig,
    host: &Host,
    plain_only: bool,
) -> Result<ReplicationConnection, SourceError> {
    let conn::Opened {
        io,
        tls,
        addr,
        tcp_socket,
    } = conn::open(&cfg.pg, host, plain_only).await?;
    let is_tls = tls.is_some();
    let (read, write) = tokio::io::split(io);
    let addr: Arc<str> = Arc::from(addr.as_str());
    let mut conn = ReplicationConnection {
        reader: FrameReader::new(read, addr.clone()),
        writer: write,
        write_buf: BytesMut::with_capacity(1024),
        addr,
        parameters: Vec::new(),
        backend_pid: None,
        is_tls,
        tcp_socket,
    };

    let user = cfg.pg.user();
    let dbname = cfg.pg.dbname();
    let mut params = vec![
        ("user", user.as_str()),
        ("database", dbname.as_str()),
        ("replication", "database"),
        ("application_name", cfg.application_name.as_str()),
        ("client_encoding", "UTF8"),
    ];
    if let Some(options) = &cfg.pg.params.options {
        params.push(("options", options.as_str()));
    }
    frontend::startup_message(params, &mut conn.write_buf).map_err(auth::encode_error)?;
    conn.flush_write_buf().await?;

    let credentials = Credentials {
        user: &user,
        password: cfg.pg.password.as_deref(),
        tls: tls.as_ref(),
        channel_binding: cfg.pg.params.channel_binding,
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
