//! What can go wrong on the leader replication connection, and whether
//! reconnecting could help ([`SourceError::is_transient`]).
//!
//! Every variant that involves the network names the `host:port` it was
//! talking to, so an operator reading one log line knows which leader failed.

use std::io;
use std::time::Duration;

/// An error of the leader replication connection.
///
/// The run loop asks [`SourceError::is_transient`] to choose between
/// "reconnect and resume from the durable position" and "stop".
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The connection string or the arguments of a command cannot be used.
    #[error("invalid replication source configuration: {0}")]
    Config(String),

    /// The TCP (or Unix socket) connection could not be opened.
    #[error("could not connect to leader {addr}: {source}")]
    Connect {
        /// `host:port` (or the socket path) that was tried.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    /// Connecting, negotiating TLS and authenticating took longer than allowed.
    #[error("timed out after {after:?} connecting to leader {addr}")]
    Timeout {
        /// `host:port` that was tried.
        addr: String,
        /// The configured connect timeout.
        after: Duration,
    },

    /// Reading or writing an established connection failed.
    #[error("I/O error on the replication connection to {addr}: {source}")]
    Io {
        /// `host:port` of the leader.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    /// The leader closed the connection without an error message.
    #[error("leader {addr} closed the replication connection")]
    Closed {
        /// `host:port` of the leader.
        addr: String,
    },

    /// TLS could not be set up: refused by the server, bad CA file, failed
    /// certificate or hostname verification.
    #[error("TLS with leader {addr} failed: {reason}")]
    Tls {
        /// `host:port` of the leader.
        addr: String,
        /// What failed.
        reason: String,
    },

    /// The leader rejected the credentials, or asked for a method pgsieve
    /// does not implement.
    #[error("authentication as {user:?} at leader {addr} failed: {message}")]
    Auth {
        /// `host:port` of the leader.
        addr: String,
        /// The role that tried to log in.
        user: String,
        /// SQLSTATE when the server sent an ErrorResponse (`28P01`, `28000`).
        code: Option<String>,
        /// The server's message, or why the client gave up.
        message: String,
    },

    /// The leader answered with an ErrorResponse.
    #[error("leader {severity} {code}: {message}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        /// `ERROR`, `FATAL` or `PANIC` (the non-localized severity).
        severity: String,
        /// SQLSTATE, e.g. `55000`.
        code: String,
        /// Primary message.
        message: String,
        /// Optional detail line.
        detail: Option<String>,
    },

    /// The leader sent bytes that do not follow the protocol.
    #[error("replication protocol violation: {0}")]
    Protocol(String),
}

impl SourceError {
    /// Whether reconnecting later may succeed without anybody changing
    /// anything: lost connections, timeouts, a leader shutting down or
    /// restarting, too many connections, a slot still held by the previous
    /// (dying) walsender. Authentication failures, missing databases,
    /// publications or `wal_level = logical`, TLS and protocol errors are not.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect { .. }
            | SourceError::Timeout { .. }
            | SourceError::Io { .. }
            | SourceError::Closed { .. } => true,
            SourceError::Server { code, .. } => crate::conn::is_transient_sqlstate(code),
            SourceError::Config(_)
            | SourceError::Tls { .. }
            | SourceError::Auth { .. }
            | SourceError::Protocol(_) => false,
        }
    }

    /// The SQLSTATE when the leader sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            SourceError::Server { code, .. } => Some(code),
            SourceError::Auth { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<crate::conn::ConnError> for SourceError {
    fn from(e: crate::conn::ConnError) -> Self {
        use crate::conn::ConnError;
        match e {
            ConnError::Config(message) => SourceError::Config(message),
            ConnError::Connect { addr, source } => SourceError::Connect { addr, source },
            ConnError::Timeout { addr, after } => SourceError::Timeout { addr, after },
            ConnError::Io { addr, source } => SourceError::Io { addr, source },
            ConnError::Tls { addr, reason } => SourceError::Tls { addr, reason },
            ConnError::Refused { addr, reason } => SourceError::Auth {
                addr,
                user: String::new(),
                code: None,
                message: reason,
            },
            e @ ConnError::SessionAttrs { .. } => SourceError::Connect {
                addr: String::new(),
                source: io::Error::other(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> SourceError {
        SourceError::Server {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
        }
    }

    #[test]
    fn transient_classification_follows_sqlstate() {
        assert!(server("57P01").is_transient());
        assert!(server("53300").is_transient());
        assert!(server("55006").is_transient());
        assert!(!server("55000").is_transient()); // wal_level
        assert!(!server("42704").is_transient()); // missing publication
        assert!(!server("3D000").is_transient()); // missing database
        let refused = SourceError::Connect {
            addr: "h:1".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(refused.is_transient());
        let auth = SourceError::Auth {
            addr: "h:1".into(),
            user: "u".into(),
            code: Some("28P01".into()),
            message: "bad".into(),
        };
        assert!(!auth.is_transient());
    }

    #[test]
    fn server_error_display_includes_detail() {
        let e = SourceError::Server {
            severity: "ERROR".into(),
            code: "42704".into(),
            message: "publication \"p\" does not exist".into(),
            detail: Some("d".into()),
        };
        assert_eq!(
            e.to_string(),
            "leader ERROR 42704: publication \"p\" does not exist (d)"
        );
    }
}
