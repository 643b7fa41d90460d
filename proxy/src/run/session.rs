//! One streaming session, in the order it happens: connect the followers
//! (their origins say where to resume), check the publication, open the
//! replication connection, bring every follower to a stream position
//! (`start`), start pgoutput, spawn one sink per follower, read until the
//! session ends (`reader`), then drain the sinks and the feedback.

use std::sync::Arc;
use std::time::Instant;

use pgsieve_protocol::Lsn;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_postgres::Client;

use super::policy::{self, Directive};
use super::reader::{Reader, SinkTasks};
use super::roster::{Roster, Standing};
use super::{FollowerSession, RunError, SessionEnd, sql_err, start};
use crate::config::{Config, FollowerConfig};
use crate::conjur::PublicationFacts;
use crate::conn::connect_sql;
use crate::fanout::{DetachReason, EventBatch, Fanout, lane_capacity};
use crate::feedback::Feedback;
use crate::metrics::{FollowerHealth, Telemetry, count_error};
use crate::progress::Progress;
use crate::sink::origin::setup_apply_session;
use crate::sink::resync::Resync;
use crate::sink::{ApplyError, GroupLimits, Sink, SinkSpec};
use crate::source::{ReplicationConnection, SourceConfig};

/// Runs one session until shutdown, a rewind or an error.
pub(super) async fn run_session(
    config: &Config,
    shutdown: watch::Receiver<bool>,
    streamed: &mut bool,
    telemetry: &Telemetry,
    standings: &mut [Standing],
) -> Result<SessionEnd, RunError> {
    let session_started = Instant::now();
    let hub = config.is_hub();
    let (specs, set_bits) = config.replica_sets();
    let mut followers = connect_followers(config, &set_bits, standings, hub).await?;
    let leader = connect_sql(&config.leader.pg, "the leader").await?;
    check_publication(&leader, &config.leader.publication).await?;
    let mut repl = ReplicationConnection::connect(&SourceConfig::for_leader(config)).await?;
    hold_detached(config, &mut repl, &mut followers, standings).await?;
    let start = start::prepare(config, &leader, &mut repl, &mut followers, specs).await?;

    let slot = config.leader.slot.as_str();
    tracing::info!(%slot, start = %start.start_lsn, followers = followers.len(), "Starting replication.");
    let (stream, status) = repl
        .start_pgoutput(slot, start.start_lsn, &config.leader.publication)
        .await?;
    *streamed = true;

    let spawned = spawn_sinks(config, followers, &leader, standings, hub).await?;
    let feedback = Feedback::new(spawned.progresses.clone());
    let _streaming = telemetry.streaming(feedback.clone(), spawned.health);
    let (stop_feedback, stop_rx) = watch::channel(false);
    let feedback_task = tokio::spawn(feedback.clone().run(
        status.clone(),
        config.apply.status_interval,
        stop_rx,
    ));
    // Detached followers that may come back are probed; the first one that
    // answers rewinds the stream to its origin.
    let (roster, rejoin) = Roster::new(config, telemetry, standings, spawned.detached);
    let fanout = Fanout::new(spawned.lanes, config.apply.detach_after);
    let mut tasks = spawned.tasks;
    let mut reader = Reader::new(config, start, stream, fanout, feedback.clone(), roster);
    let outcome = reader.run(shutdown, &mut tasks, rejoin).await;
    let (fanout, roster) = reader.finish();
    // A detached follower's sink may be stuck (a lock, a hung connection):
    // it must not hold the rewind or the shutdown of the others. Aborting
    // rolls back its open follower transaction; its progress is what it
    // committed.
    for (index, handle) in spawned.abort_handles.iter().enumerate() {
        if let (Some(handle), Some(_)) = (handle, roster.reason(index)) {
            handle.abort();
        }
    }
    roster.finish(session_started.elapsed());
    // Stop the sinks: they commit what is complete and abandon the rest.
    drop(fanout);
    let (mut first_error, end) = match outcome {
        Ok(end) => (None, end),
        Err(e) => (Some(e), SessionEnd::Shutdown),
    };
    let received = feedback.received_lsn();
    drain_sinks(config, tasks, received, standings, &mut first_error).await;
    let _ = stop_feedback.send(true);
    match feedback_task.await {
        Ok(Err(e)) if first_error.is_none() => first_error = Some(e.into()),
        _ => {}
    }
    let _ = status.finish().await;
    for (standing, progress) in standings.iter_mut().zip(&spawned.progresses) {
        standing.last_progress = Some(progress.committed_end());
    }
    match first_error {
        None => Ok(end),
        Some(e) => Err(e),
    }
}

/// Connects every follower not failed for good and binds its replication
/// origin (its durable progress says where it resumes). In hub mode one
/// that cannot be reached starts detached; the others go on.
async fn connect_followers(
    config: &Config,
    set_bits: &[Option<usize>],
    standings: &[Standing],
    hub: bool,
) -> Result<Vec<FollowerSession>, RunError> {
    let origin = config.origin_name();
    let mut followers = Vec::with_capacity(config.followers.len());
    let mut unreachable: Option<RunError> = None;
    for ((f, &set_bit), standing) in config.followers.iter().zip(set_bits).zip(standings) {
        let (client, origin_lsn, detached) = if let Some(failed) = &standing.failed {
            (None, Lsn::ZERO, Some(DetachReason::Failed(failed.clone())))
        } else {
            match connect_follower(f, &origin).await {
                Ok((client, lsn)) => (Some(client), lsn, None),
                Err(e) => match policy::follower_unavailable(hub, &e) {
                    Directive::DetachUnreachable => {
                        let reason = DetachReason::Unreachable(crate::report::error_chain(&e));
                        unreachable.get_or_insert(e);
                        (None, Lsn::ZERO, Some(reason))
                    }
                    _ => return Err(e),
                },
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
    Ok(followers)
}

/// Connects a follower and binds its replication origin.
async fn connect_follower(
    f: &FollowerConfig,
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

/// A detached follower holds the slot where it was last seen durable, or
/// (not seen by this process) where the slot was confirmed: never beyond
/// its own progress.
async fn hold_detached(
    config: &Config,
    repl: &mut ReplicationConnection,
    followers: &mut [FollowerSession],
    standings: &[Standing],
) -> Result<(), RunError> {
    let held = repl
        .slot_info(&config.leader.slot)
        .await?
        .map_or(Lsn::ZERO, |s| s.confirmed_flush_lsn);
    for (f, standing) in followers.iter_mut().zip(standings) {
        if f.client.is_none() {
            f.origin_lsn = standing.last_progress.unwrap_or(held).max(held);
        }
    }
    Ok(())
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

/// The sinks of one session and what the reader, feedback and metrics
/// share with them (one entry per configured follower).
struct Spawned {
    lanes: Vec<Option<mpsc::Sender<EventBatch>>>,
    progresses: Vec<Arc<Progress>>,
    health: Vec<FollowerHealth>,
    detached: Vec<Option<DetachReason>>,
    tasks: SinkTasks,
    abort_handles: Vec<Option<AbortHandle>>,
}

/// Starts one sink task per attached follower behind its bounded lane. In
/// hub mode a follower lost between connecting and preparing starts
/// detached, as unreachable.
async fn spawn_sinks(
    config: &Config,
    followers: Vec<FollowerSession>,
    leader: &Arc<Client>,
    standings: &[Standing],
    hub: bool,
) -> Result<Spawned, RunError> {
    let limits = GroupLimits {
        max_rows: config.apply.group_max_rows,
        max_wait: config.apply.group_max_wait,
    };
    let mut spawned = Spawned {
        lanes: Vec::with_capacity(followers.len()),
        progresses: Vec::with_capacity(followers.len()),
        health: Vec::with_capacity(followers.len()),
        detached: Vec::with_capacity(followers.len()),
        tasks: JoinSet::new(),
        abort_handles: Vec::with_capacity(followers.len()),
    };
    for (index, f) in followers.into_iter().enumerate() {
        let progress = Progress::starting_at(f.origin_lsn);
        spawned.progresses.push(progress.clone());
        let mut health = FollowerHealth {
            name: f.name.clone(),
            progress: progress.clone(),
            client: f.client.clone(),
            detached: f.detached.as_ref().map(ToString::to_string),
        };
        let mut detached = f.detached;
        let mut lane = None;
        let mut abort = None;
        if let Some(client) = f.client {
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
            match Sink::new(spec, client, leader.clone(), progress)
                .await
                .map_err(RunError::from)
            {
                Ok(sink) => {
                    let (tx, rx) = mpsc::channel(lane_capacity(config.apply.buffer_events));
                    lane = Some(tx);
                    abort = Some(
                        spawned
                            .tasks
                            .spawn(async move { (index, run_sink(sink, rx).await) }),
                    );
                }
                Err(e) => match policy::follower_unavailable(hub, &e) {
                    Directive::DetachUnreachable => {
                        let reason = DetachReason::Unreachable(crate::report::error_chain(&e));
                        health.client = None;
                        health.detached = Some(reason.to_string());
                        detached = Some(reason);
                    }
                    _ => return Err(e),
                },
            }
        }
        spawned.health.push(health);
        spawned.detached.push(detached);
        spawned.lanes.push(lane);
        spawned.abort_handles.push(abort);
    }
    Ok(spawned)
}

/// Waits for every sink to stop and learns from their errors; a sink's
/// error explains a reader's "a follower sink stopped", so it takes its
/// place.
async fn drain_sinks(
    config: &Config,
    mut tasks: SinkTasks,
    received: Lsn,
    standings: &mut [Standing],
    first_error: &mut Option<RunError>,
) {
    let hub = config.is_hub();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((index, Err(e))) => {
                let directive = policy::sink_error(hub, &e, received);
                standings[index].learn(e.follower(), directive);
                if first_error
                    .as_ref()
                    .is_none_or(|r| matches!(r, RunError::Setup(_)))
                {
                    *first_error = Some(e.into());
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
}

/// One follower's sink task: applies the batches of its lane, committing
/// a group when nothing more is ready (or, in a backlog, when its time
/// bound comes), until the lane closes.
async fn run_sink(mut sink: Sink, mut rx: mpsc::Receiver<EventBatch>) -> Result<(), ApplyError> {
    let result = apply_lane(&mut sink, &mut rx).await;
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

async fn apply_lane(
    sink: &mut Sink,
    rx: &mut mpsc::Receiver<EventBatch>,
) -> Result<(), ApplyError> {
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
