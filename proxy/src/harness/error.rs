/*!
The harness's one error type: starting clusters, running their tools and talking to
them. Every variant carries what an operator (or a failing test's output) needs to see
the cause without rerunning: the command, its stderr, or the tail of the server log.
*/

use std::io;

/// Why a harness operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file system or process-spawn operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A PostgreSQL tool (initdb, pg_ctl, psql, pg_config) exited unsuccessfully.
    #[error("{what} failed ({status}): {output}")]
    Command {
        /// The command line, shortened.
        what: String,
        /// The exit status.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// A cluster did not start; `log_tail` is the end of its server log.
    #[error("cluster {name} did not start: {cause}\n--- server log (tail) ---\n{log_tail}")]
    Start {
        /// The cluster's name in its spec.
        name: String,
        /// The immediate cause (usually pg_ctl's output).
        cause: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// A query or connection failed.
    #[error("{what}: {source}")]
    Postgres {
        /// What the harness was doing.
        what: String,
        /// The driver's error (its `Display` includes the server's message).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The harness was used in a way it does not support (bad spec, missing user, ...).
    #[error("{0}")]
    Usage(String),
    /// Something awaited (replication catching up, a row appearing) did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: std::time::Duration,
    },
}

impl HarnessError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        HarnessError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps a driver error with what was being done. The server's message, detail
    /// and hint are appended, because `tokio_postgres::Error`'s `Display` only says
    /// "db error".
    pub(crate) fn pg(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        let mut what = what.into();
        if let Some(db) = source.as_db_error() {
            what.push_str(&format!(" [{}: {}", db.code().code(), db.message()));
            if let Some(detail) = db.detail() {
                what.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                what.push_str(&format!("; hint: {hint}"));
            }
            if let Some(where_) = db.where_() {
                what.push_str(&format!("; where: {where_}"));
            }
            what.push(']');
        }
        HarnessError::Postgres { what, source }
    }
}

/// Attaches "what was being done" to a driver result.
pub(crate) trait PgContext<T> {
    /// Maps the error with [`HarnessError::pg`].
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, HarnessError>;
}

impl<T> PgContext<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, HarnessError> {
        self.map_err(|e| HarnessError::pg(what(), e))
    }
}
