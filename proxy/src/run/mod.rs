//! `pgsieve run`: wires source → assemble → filter → sinks → feedback, and
//! restarts the whole pipeline from the followers' origins after transient
//! failures.
//!
//! `run` (this file) is the retry loop around sessions; `session` opens one
//! phase by phase (`start` brings every follower to a stream position);
//! `reader` is its loop; `policy` decides what every error means; `roster`
//! keeps the hub's detached followers and brings them back.
//!
//! One reader task owns the replication stream, the assembler and the filter
//! (so the model is fed once, in commit order); each follower has its own
//! sink task behind a bounded channel (backpressure reaches the socket); the
//! feedback task reports the minimum durable progress. With one follower this
//! is sidecar mode; with several it is hub mode (one slot, one decode).

use std::time::{Duration, Instant};

use pgsieve_protocol::Lsn;
use tokio::sync::watch;

use crate::bootstrap::{BootstrapError, SnapshotError};
use crate::config::Config;
use crate::copy::CopyError;
use crate::filter::FilterStageError;
use crate::metrics::{MetricsError, Telemetry, count_error};
use crate::reconcile::ReconcileError;
use crate::sink::ApplyError;
use crate::source::SourceError;
use crate::txn::AssembleError;

use self::policy::Directive;
use self::roster::Standing;

pub mod policy;
mod preflight;
mod reader;
pub mod roster;
mod session;
pub mod start;

/// Why `pgsieve run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The replication connection failed.
    #[error("leader: {0}")]
    Source(#[from] SourceError),
    /// A SQL session could not be opened (socket, TLS, authentication).
    #[error(transparent)]
    Connect(#[from] crate::conn::ConnectError),
    /// An ordinary SQL connection failed.
    #[error("{what}: {source}")]
    Sql {
        /// Which connection or step.
        what: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// The stream could not be assembled.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// Filtering failed.
    #[error(transparent)]
    Filter(#[from] FilterStageError),
    /// A follower could not apply a change.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The initial copy failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The model could not be built.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The session-start leader snapshot could not be opened.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A follower could not be reconciled with the leader's model.
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    /// The publication cannot carry what the decisions need.
    #[error("leader: {0}")]
    Publication(String),
    /// A follower fell off the stream and `[apply] on_gap = "stop"`.
    #[error(
        "follower {follower}: {gap}; not streaming across the gap. Run `pgsieve resync -c <config> --follower {follower}`, or set [apply] on_gap = \"resync\""
    )]
    Gap {
        /// The follower.
        follower: String,
        /// Why.
        gap: start::Gap,
    },
    /// The online diff resync of a follower failed.
    #[error("resynchronizing follower {follower}: {source}")]
    Resync {
        /// The follower.
        follower: String,
        /// The engine's error.
        source: Box<crate::diff::DiffError>,
    },
    /// A frame from the leader is malformed.
    #[error("malformed replication message after {after}: {source}")]
    Frame {
        /// Last WAL position received before it.
        after: Lsn,
        /// The decode error.
        source: pgsieve_protocol::DecodeError,
    },
    /// Configuration problem found at run time.
    #[error("{0}")]
    Setup(String),
    /// `[metrics]` could not be served.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

impl RunError {
    /// Short kind for the `pgsieve_errors_total{kind}` label.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Source(_) => "source",
            RunError::Connect(_) | RunError::Sql { .. } => "sql",
            RunError::Assemble(_) => "assemble",
            RunError::Filter(_) => "filter",
            RunError::Apply(_) => "apply",
            RunError::Copy(_) => "copy",
            RunError::Bootstrap(_) | RunError::Snapshot(_) => "bootstrap",
            RunError::Reconcile(_) => "reconcile",
            RunError::Publication(_) => "setup",
            RunError::Gap { .. } => "gap",
            RunError::Resync { .. } => "resync",
            RunError::Frame { .. } => "frame",
            RunError::Setup(_) => "setup",
            RunError::Metrics(_) => "metrics",
        }
    }

    fn count(&self) {
        let follower = match self {
            RunError::Apply(e) => Some(e.follower()),
            _ => None,
        };
        count_error(self.kind(), follower);
    }
}

/// Every connection goes through the shared connection layer (TLS,
/// credentials per server): see `crate::conn`.
pub use crate::conn::{connect_sql, describe_target};
pub use preflight::preflight;

fn sql_err(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Sql { what, source }
}

/// How long transient failures are retried before streaming has ever begun.
pub const STARTUP_RETRY: Duration = Duration::from_secs(15);

/// Runs until `shutdown` turns true or a non-transient error occurs.
///
/// Before the first `START_REPLICATION` succeeds, transient failures are
/// retried only for [`STARTUP_RETRY`], then end the process (exit code 1, one
/// error line): at start an unreachable database is more often a
/// configuration mistake than an outage, and a supervisor restarting the
/// sidecar makes it visible; the short grace covers a follower session of a
/// killed predecessor that still holds the replication origin. Once
/// streaming has begun, transient failures (a leader or follower restart, a
/// lost connection) are retried with backoff for as long as it takes,
/// resuming from the followers' origins. In hub mode a follower that fails
/// or falls behind is detached instead, and rejoins by a rewind of the
/// stream ([`crate::fanout`]).
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    if config.followers.is_empty() {
        return Err(RunError::Setup("no [[follower]] configured".into()));
    }
    let telemetry = Telemetry::start(&config).await?;
    let _heartbeat = crate::heartbeat::spawn(&config, &telemetry);
    let mut standings = vec![Standing::default(); config.followers.len()];
    let mut backoff = Duration::from_millis(200);
    let mut streamed = false;
    let started = Instant::now();
    loop {
        let session_started = Instant::now();
        let result = session::run_session(
            &config,
            shutdown.clone(),
            &mut streamed,
            &telemetry,
            &mut standings,
        )
        .await;
        if session_started.elapsed() > Duration::from_secs(60) {
            // A session that lived a while: the next failure is a new outage.
            backoff = Duration::from_millis(200);
        }
        if let Err(e) = &result {
            e.count();
            telemetry.down(&crate::report::error_chain(e));
        }
        match result {
            Ok(SessionEnd::Shutdown) => return Ok(()),
            Ok(SessionEnd::Rewind { follower }) => {
                tracing::info!(%follower, "Rewinding the stream to the rejoining follower's origin.");
                telemetry.rewinding();
            }
            Err(e)
                if policy::session_error(&e) == Directive::Retry
                    && !*shutdown.borrow()
                    && (streamed || started.elapsed() + backoff <= STARTUP_RETRY) =>
            {
                tracing::warn!(error = %crate::report::error_chain(&e), retry_in_ms = backoff.as_millis() as u64, "Pipeline failed; reconnecting.");
                telemetry.reconnecting();
                let mut stop = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a session that did not fail ended.
enum SessionEnd {
    /// `shutdown` was requested.
    Shutdown,
    /// A detached follower is back: restart the stream at its origin.
    Rewind {
        /// Its name.
        follower: String,
    },
}

/// One follower as a session opens: its connection, where it stands and
/// what `start` decided for it.
pub(crate) struct FollowerSession {
    name: String,
    /// `None` while the follower is detached.
    client: Option<std::sync::Arc<tokio_postgres::Client>>,
    origin_lsn: Lsn,
    set_bit: Option<usize>,
    resync: Option<crate::sink::resync::Resync>,
    detached: Option<crate::fanout::DetachReason>,
    /// Until the stream passes this position, inserts may meet rows the
    /// session start copied ahead of it (set by `start` when the reconcile
    /// backfilled anything).
    upsert_until: Lsn,
}
