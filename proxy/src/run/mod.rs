//! `pgsieve run`: wires source → assemble → filter → sinks → feedback, and
//! restarts the whole pipeline from the followers' origins after transient
//! failures.
//!
//! One reader task owns the replication stream, the assembler and the filter
//! (so the model is fed once, in commit order); each follower has its own
//! sink task behind a bounded channel (backpressure reaches the socket); the
//! feedback task reports the minimum durable progress. With one follower this
//! is sidecar mode; with several it is hub mode (one slot, one decode).

use std::sync::Arc;
use std::time::Duration;

use pgsieve_protocol::Lsn;
use pgsieve_protocol::frame::ReplicationMessage;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::bootstrap::{BootstrapError, SnapshotError};
use crate::conjur::PublicationFacts;
use crate::reconcile::ReconcileError;

pub mod start;
use crate::config::Config;
use crate::copy::CopyError;
use crate::fanout::{DetachReason, EventBatch, Fanout, SendError, Standing, lane_capacity};
use crate::feedback::Feedback;
use crate::filter::{FilterStage, FilterStageError};
use crate::metrics::{FollowerHealth, MetricsError, StreamMetrics, Telemetry, count_error};
use crate::roster::Roster;
use crate::sink::origin::setup_apply_session;
use crate::sink::resync::Resync;
use crate::sink::{ApplyError, GroupLimits, Progress, Sink, SinkSpec};
use crate::source::{ReplicationConnection, SourceConfig, SourceError};
use crate::txn::assemble::Assembled;
use crate::txn::{AssembleError, Assembler, TxnEvent};

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
    /// Whether restarting the pipeline from the followers' origins may help.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Source(e) => e.is_transient(),
            RunError::Connect(e) => e.is_transient(),
            RunError::Sql { source, .. } | RunError::Copy(CopyError::Sql { source, .. }) => {
                crate::source::is_transient_sql_error(source)
            }
            RunError::Apply(e) => e.is_transient(),
            RunError::Snapshot(SnapshotError::Source(e)) => e.is_transient(),
            RunError::Snapshot(SnapshotError::Sql(source))
            | RunError::Reconcile(ReconcileError { source, .. }) => {
                crate::source::is_transient_sql_error(source)
            }
            _ => false,
        }
    }

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
    let started = std::time::Instant::now();
    loop {
        let session_started = std::time::Instant::now();
        let result = run_session(
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
                if e.is_transient()
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

pub(crate) struct FollowerSession {
    name: String,
    /// `None` while the follower is detached.
    client: Option<Arc<Client>>,
    origin_lsn: Lsn,
    set_bit: Option<usize>,
    resync: Option<Resync>,
    detached: Option<DetachReason>,
    /// Until the stream passes this position, inserts may meet rows the
    /// session start copied ahead of it (set by `start` when the reconcile
    /// backfilled anything).
    upsert_until: Lsn,
}

/// Connects a follower and binds its replication origin.
async fn connect_follower(
    f: &crate::config::FollowerConfig,
    origin: &str,
) -> Result<(Arc<Client>, Lsn), RunError> {
    let client = connect_sql(&f.pg, &format!("follower {}", f.name)).await?;
    let origin_lsn = setup_apply_session(&client, origin)
        .await
        .map_err(sql_err(format!(
            "setting up apply session on follower {}",
            f.name
        )))?;
    Ok((client, origin_lsn))
}

async fn run_session(
    config: &Config,
    mut shutdown: watch::Receiver<bool>,
    streamed: &mut bool,
    telemetry: &Telemetry,
    standings: &mut [Standing],
) -> Result<SessionEnd, RunError> {
    let origin = config.origin_name();
    let (specs, set_bits) = config.replica_sets();
    let hub = config.followers.len() > 1;
    let session_started = std::time::Instant::now();

    // Followers first: their origins say where to resume. In hub mode one
    // that cannot be reached starts detached (it holds only its own
    // progress); the others go on.
    let mut followers = Vec::with_capacity(config.followers.len());
    let mut unreachable: Option<RunError> = None;
    for ((f, &set_bit), standing) in config.followers.iter().zip(&set_bits).zip(&*standings) {
        let (client, origin_lsn, detached) = if let Some(failed) = &standing.failed {
            (None, Lsn::ZERO, Some(DetachReason::Failed(failed.clone())))
        } else {
            match connect_follower(f, &origin).await {
                Ok((client, lsn)) => (Some(client), lsn, None),
                Err(e) if hub && e.is_transient() => {
                    let reason = DetachReason::Unreachable(crate::report::error_chain(&e));
                    unreachable.get_or_insert(e);
                    (None, Lsn::ZERO, Some(reason))
                }
                Err(e) => return Err(e),
            }
        };
        followers.push(FollowerSession {
            name: f.name.clone(),
            client,
            origin_lsn,
            set_bit,
            resync: f.replica_set.clone().map(Resync::new),
            detached,
            upsert_until: Lsn::ZERO,
        });
    }
    if followers.iter().all(|f| f.client.is_none()) {
        return Err(
            unreachable.unwrap_or_else(|| RunError::Setup("every follower failed for good".into()))
        );
    }
    let leader = connect_sql(&config.leader.pg, "the leader").await?;
    check_publication(&leader, &config.leader.publication).await?;
    let mut repl = ReplicationConnection::connect(&SourceConfig::for_leader(config)).await?;
    let slot = config.leader.slot.as_str();
    // A detached follower holds the slot where it was last seen durable, or
    // (not seen by this process) where the slot was confirmed: never beyond
    // its own progress.
    let held = repl
        .slot_info(slot)
        .await?
        .map_or(Lsn::ZERO, |s| s.confirmed_flush_lsn);
    for (f, standing) in followers.iter_mut().zip(&*standings) {
        if f.client.is_none() {
            f.origin_lsn = standing.last_progress.unwrap_or(held).max(held);
        }
    }
    let start::Start {
        model,
        start_lsn,
        model_at,
    } = start::prepare(config, &leader, &mut repl, &mut followers, specs.clone()).await?;

    let publication = format!("\"{}\"", config.leader.publication.replace('"', "\"\""));
    let options = [
        ("proto_version", "2"),
        ("publication_names", publication.as_str()),
        ("streaming", "on"),
        ("messages", "true"),
    ];
    tracing::info!(%slot, start = %start_lsn, followers = followers.len(), "Starting replication.");
    let (mut stream, status) = repl.start_replication(slot, start_lsn, &options).await?;
    *streamed = true;

    let limits = GroupLimits {
        max_rows: config.apply.group_max_rows,
        max_wait: config.apply.group_max_wait,
    };
    let mut lanes = Vec::with_capacity(followers.len());
    let mut progresses = Vec::with_capacity(followers.len());
    let mut health = Vec::with_capacity(followers.len());
    let mut sinks = JoinSet::new();
    let mut detached: Vec<Option<DetachReason>> = Vec::with_capacity(followers.len());
    let mut abort_handles = Vec::with_capacity(followers.len());
    for (index, f) in followers.into_iter().enumerate() {
        let progress = Progress::starting_at(f.origin_lsn);
        progresses.push(progress.clone());
        health.push(FollowerHealth {
            name: f.name.clone(),
            progress: progress.clone(),
            client: f.client.clone(),
            detached: f.detached.as_ref().map(ToString::to_string),
        });
        detached.push(f.detached);
        let Some(client) = f.client else {
            lanes.push(None);
            abort_handles.push(None);
            continue;
        };
        let spec = SinkSpec {
            follower: f.name,
            set_bit: f.set_bit,
            resync: f.resync,
            limits,
            skip_until: f.origin_lsn,
            // A reconcile that copied rows as of the session's snapshot:
            // until the stream passes it, inserts may meet them.
            upsert_until: standings[index].upsert_until.max(f.upsert_until),
        };
        let sink = match Sink::new(spec, client, leader.clone(), progress).await {
            Ok(sink) => sink,
            Err(e) if hub && e.is_transient() => {
                // Lost between connecting and preparing: as unreachable.
                let reason = DetachReason::Unreachable(crate::report::error_chain(&e));
                if let Some(h) = health.last_mut() {
                    h.client = None;
                    h.detached = Some(reason.to_string());
                }
                if let Some(d) = detached.last_mut() {
                    *d = Some(reason);
                }
                lanes.push(None);
                abort_handles.push(None);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (tx, rx) = mpsc::channel::<EventBatch>(lane_capacity(config.apply.buffer_events));
        lanes.push(Some(tx));
        abort_handles.push(Some(
            sinks.spawn(async move { (index, run_sink(sink, rx).await) }),
        ));
    }
    let mut fanout = Fanout::new(lanes, config.apply.detach_after);
    let feedback = Feedback::new(progresses.clone());
    let _streaming = telemetry.streaming(feedback.clone(), health);
    let (stop_feedback, stop_rx) = watch::channel(false);
    let feedback_task = tokio::spawn(feedback.clone().run(
        status.clone(),
        config.apply.status_interval,
        stop_rx,
    ));

    // Detached followers that may come back are probed; the first one that
    // answers rewinds the stream to its origin.
    let (mut roster, mut rejoin_rx) = Roster::new(config, telemetry, standings, detached);

    let mut assembler = Assembler::new(config.apply.spool_dir.clone());
    let mut filter = FilterStage::new(model, model_at);
    let mut seen = StreamMetrics::default();
    let mut last_received = start_lsn;
    // Frames taken straight from the read buffer (or the socket) before the
    // next look at shutdown, the sinks and rejoins.
    let mut ready_budget = 0u32;
    let reader: Result<SessionEnd, RunError> = async {
        loop {
            // While the leader's bytes are at hand, read on; only before
            // waiting hand the queued events to the sinks and look around.
            let ready = if ready_budget > 0 {
                futures_util::FutureExt::now_or_never(stream.next_copy_data())
            } else {
                None
            };
            let frame = if let Some(frame) = ready {
                ready_budget -= 1;
                frame?
            } else {
            ready_budget = READY_BUDGET;
            fanout.flush().await.map_err(send_error)?;
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!("Shutting down: finishing applied transactions.");
                        return Ok(SessionEnd::Shutdown);
                    }
                    continue;
                }
                Some(joined) = sinks.join_next(), if !sinks.is_empty() => {
                    let (index, result) = joined
                        .map_err(|join| RunError::Setup(format!("sink task failed: {join}")))?;
                    if let Err(e) = &result {
                        roster.note_apply_error(index, e, feedback.received_lsn());
                    }
                    match result {
                        Err(e) if !hub => return Err(e.into()),
                        Ok(()) if !hub => {
                            return Err(RunError::Setup("the follower sink stopped".into()));
                        }
                        Err(e) => {
                            count_error("apply", Some(e.follower()));
                            let chain = crate::report::error_chain(&e);
                            let reason = if e.is_transient() {
                                DetachReason::Lost(chain)
                            } else {
                                DetachReason::Failed(chain)
                            };
                            roster.detach(&mut fanout, index, reason, true);
                            if fanout.attached() == 0 {
                                return Err(e.into());
                            }
                        }
                        Ok(()) => {
                            let reason = roster.reason(index).cloned().unwrap_or_else(|| {
                                DetachReason::Lost("its sink stopped".into())
                            });
                            roster.detach(&mut fanout, index, reason, true);
                        }
                    }
                    if fanout.attached() == 0 {
                        return Err(RunError::Setup("every follower is detached".into()));
                    }
                    continue;
                }
                Some(index) = rejoin_rx.recv() => {
                    return Ok(SessionEnd::Rewind { follower: roster.name(index).to_owned() });
                }
                frame = stream.next_copy_data() => frame?,
            }
            };
            let Some(frame) = frame else {
                return Err(SourceError::Protocol(
                    "the leader ended the replication stream".into(),
                )
                .into());
            };
            match ReplicationMessage::parse(frame) {
                Ok(ReplicationMessage::XLogData(x)) => {
                    last_received = last_received.max(x.wal_start);
                    feedback.received(x.wal_end.min(x.wal_start.max(last_received)));
                    match assembler.handle(x.wal_start, x.data)? {
                        Assembled::Nothing => {}
                        Assembled::Event(event) => {
                            forward(&mut filter, &mut seen, &mut fanout, event).await?;
                        }
                        Assembled::Replay(mut replay) => {
                            while let Some(event) = replay.next_event(&assembler)? {
                                forward(&mut filter, &mut seen, &mut fanout, event).await?;
                            }
                        }
                    }
                }
                Ok(ReplicationMessage::PrimaryKeepalive(k)) => {
                    tracing::debug!(wal_end = %k.wal_end, reply_requested = k.reply_requested, idle = assembler.is_idle(), spooled = assembler.spooled_transactions(), "Keepalive.");
                    // Forward the idle position while it is not yet durable
                    // everywhere: a sink may have skipped an earlier one (it
                    // rate-limits its idle writes), and the walsender keeps
                    // pinging with the same position until we confirm it.
                    if assembler.is_idle() && k.wal_end > feedback.flush_lsn() {
                        feedback.received(k.wal_end);
                        forward(&mut filter, &mut seen, &mut fanout, TxnEvent::Idle { wal_end: k.wal_end })
                            .await?;
                    }
                    if k.reply_requested {
                        feedback.request_reply();
                    }
                }
                Err(source) => {
                    return Err(RunError::Frame {
                        after: last_received,
                        source,
                    });
                }
            }
            for (index, reason) in fanout.take_detached() {
                // Its sink drains what it has; the rejoin probe starts when
                // it has stopped (the join above).
                roster.detach(&mut fanout, index, reason, false);
            }
        }
    }
    .await;
    // A detached follower's sink may be stuck (a lock, a hung connection):
    // it must not hold the rewind or the shutdown of the others. Aborting
    // rolls back its open follower transaction; its progress is what it
    // committed.
    for (index, handle) in abort_handles.iter().enumerate() {
        if let (Some(handle), Some(_)) = (handle, roster.reason(index)) {
            handle.abort();
        }
    }
    roster.finish(session_started.elapsed());

    // Stop the sinks: they commit what is complete and abandon the rest.
    drop(fanout);
    let (mut first_error, end) = match reader {
        Ok(end) => (None, end),
        Err(e) => (Some(e), SessionEnd::Shutdown),
    };
    while let Some(joined) = sinks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((index, Err(e))) => {
                standings[index].note_apply_error(&e, feedback.received_lsn());
                // A sink error explains a reader's "channel closed".
                if first_error
                    .as_ref()
                    .is_none_or(|r| matches!(r, RunError::Setup(_)))
                {
                    first_error = Some(e.into());
                } else {
                    count_error("apply", Some(e.follower()));
                    tracing::error!(error = %crate::report::error_chain(&e), "Follower apply failed.");
                }
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => {
                first_error.get_or_insert(RunError::Setup(format!("sink task failed: {join}")));
            }
        }
    }
    let _ = stop_feedback.send(true);
    match feedback_task.await {
        Ok(Err(e)) if first_error.is_none() => first_error = Some(e.into()),
        _ => {}
    }
    let _ = status.finish().await;
    for (standing, progress) in standings.iter_mut().zip(&progresses) {
        standing.last_progress = Some(progress.committed_end());
    }
    match first_error {
        None => Ok(end),
        Some(e) => Err(e),
    }
}

/// Refuses a publication that cannot carry what the decisions need (before
/// any slot is created or advanced).
async fn check_publication(leader: &Client, publication: &str) -> Result<(), RunError> {
    let facts = PublicationFacts::read(leader, publication)
        .await
        .map_err(sql_err("reading the publication"))?;
    let problems = match facts {
        None => vec![format!(
            "publication {publication} does not exist: run pgsieve setup"
        )],
        Some(facts) => facts.decision_problems(publication),
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::Publication(problems.join("; ")))
    }
}

/// Frames the reader takes while they are ready before it looks at
/// shutdown, the sinks and rejoins again.
const READY_BUDGET: u32 = 256;

fn send_error(e: SendError) -> RunError {
    match e {
        SendError::SinkStopped(_) => RunError::Setup("a follower sink stopped".into()),
        SendError::NoFollower => RunError::Setup("every follower is detached".into()),
    }
}

async fn forward(
    filter: &mut FilterStage,
    seen: &mut StreamMetrics,
    fanout: &mut Fanout,
    mut event: TxnEvent,
) -> Result<(), RunError> {
    filter.process(&mut event)?;
    seen.observe(&event);
    fanout.send(event).await.map_err(send_error)
}

async fn run_sink(mut sink: Sink, mut rx: mpsc::Receiver<EventBatch>) -> Result<(), ApplyError> {
    let result = async {
        loop {
            let batch = if sink.has_open_group_at_boundary() {
                match rx.try_recv() {
                    Ok(batch) => batch,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // Behind the leader: more is coming, let the group grow.
                        let next = match sink.group_hold() {
                            Some(hold) => tokio::time::timeout(hold, rx.recv()).await.ok(),
                            None => None,
                        };
                        match next {
                            Some(Some(batch)) => batch,
                            Some(None) => break,
                            None => {
                                sink.commit_group().await?;
                                continue;
                            }
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv().await {
                    Some(batch) => batch,
                    None => break,
                }
            };
            for event in &batch {
                sink.handle(event).await?;
            }
        }
        if sink.has_open_group_at_boundary() {
            sink.commit_group().await?;
        }
        Ok(())
    }
    .await;
    // Whatever is still open is an incomplete leader transaction (or a
    // failed one): roll it back; it will be streamed again.
    sink.abandon().await;
    let stats = sink.stats();
    tracing::info!(
        follower = sink.follower(),
        rows_applied = stats.rows_applied,
        rows_dropped = stats.rows_dropped,
        transactions = stats.transactions,
        follower_commits = stats.follower_commits,
        "Sink stopped."
    );
    result
}
