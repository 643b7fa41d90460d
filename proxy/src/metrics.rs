//! What `pgsieve run` is doing, for Prometheus and for probes.
//!
//! Every counter, gauge and histogram is named here (`pgsieve_…`), so the
//! README's table and the code cannot drift apart. Hot paths never build
//! labels: the reader keeps one [`Counter`] per relation ([`StreamMetrics`]),
//! each sink one [`FollowerMetrics`] and one [`TableMetrics`] per relation,
//! all built once. Lag gauges are computed when scraped, from the same
//! shared progress the feedback task reports to the leader.
//!
//! [`Telemetry`] owns the global Prometheus recorder and, when `[metrics]
//! listen` is set, the HTTP endpoints ([`http`]): `/metrics`, `/healthz`
//! (the process is up), `/readyz` (streaming, every follower connected,
//! not stalled and within `max_lag_bytes`) and `/status` (per follower
//! state as JSON, read by `pgsieve status`). A watch task checks every
//! follower once a second for stalls (applied position standing still while
//! the leader's moves), whether or not anyone scrapes.

pub mod followers;
pub mod http;
pub mod resyncs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use ::metrics::{Counter, Gauge, Histogram, Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pgsieve_protocol::pgoutput::Relation;
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::config::Config;
use crate::feedback::Feedback;
use crate::progress::Progress;
use crate::txn::TxnEvent;

use self::followers::{Event, FollowerRecord};
use self::http::Response;

/// Counter `{table}`: row changes decoded from the leader's stream.
pub const ROWS_SEEN: &str = "pgsieve_rows_seen_total";
/// Counter `{follower, table}`: row changes sent to the follower.
pub const ROWS_FORWARDED: &str = "pgsieve_rows_forwarded_total";
/// Counter `{follower, table}`: row changes the filter kept from the follower.
pub const ROWS_DROPPED: &str = "pgsieve_rows_dropped_total";
/// Counter `{follower}`: leader transactions committed on the follower.
pub const LEADER_TRANSACTIONS: &str = "pgsieve_leader_transactions_total";
/// Counter `{follower}`: follower transactions committed (group commits,
/// progress-only commits included).
pub const FOLLOWER_COMMITS: &str = "pgsieve_follower_commits_total";
/// Histogram `{follower}`: leader transactions per follower commit.
pub const GROUP_COMMIT_SIZE: &str = "pgsieve_group_commit_transactions";
/// Histogram `{follower}`: seconds from a leader commit to the follower
/// commit holding it.
pub const APPLY_LATENCY: &str = "pgsieve_apply_latency_seconds";
/// Gauge `{follower}`: WAL received from the leader minus WAL committed on
/// the follower.
pub const LAG_BYTES: &str = "pgsieve_lag_bytes";
/// Gauge `{follower}`: seconds since the leader commit of the follower's last
/// applied transaction; 0 when the follower has everything received.
pub const LAG_SECONDS: &str = "pgsieve_lag_seconds";
/// Counter `{follower}`: variables re-synced into the replica set (backfill).
pub const BACKFILLS: &str = "pgsieve_backfills_total";
/// Counter `{follower}`: `secrets` rows copied from the leader by backfills.
pub const BACKFILL_ROWS: &str = "pgsieve_backfill_rows_total";
/// Counter `{follower}`: variables purged after leaving the replica set.
pub const PURGES: &str = "pgsieve_purges_total";
/// Counter `{follower}`: `secrets` rows deleted on the follower by purges.
pub const PURGE_ROWS: &str = "pgsieve_purge_rows_total";
/// Counter: pipeline restarts after a transient failure.
pub const RECONNECTS: &str = "pgsieve_reconnects_total";
/// Counter `{kind}` (and `{follower}` for apply errors): errors that stopped
/// the pipeline or a follower.
pub const ERRORS: &str = "pgsieve_errors_total";
/// Gauge: 1 while the replication stream is up, else 0.
pub const STREAMING: &str = "pgsieve_streaming";
/// Gauge `{follower}`: 1 while the follower is fed by the stream, 0 while
/// detached (hub mode: it fell behind or failed; see `fanout`).
pub const FOLLOWER_ATTACHED: &str = "pgsieve_follower_attached";
/// Counter `{follower, reason}`: followers detached from the stream
/// (`slow`, `lost`, `failed`, `unreachable`).
pub const DETACHES: &str = "pgsieve_detaches_total";
/// Counter: stream restarts at a rejoining follower's origin (hub mode).
pub const REWINDS: &str = "pgsieve_rewinds_total";
/// Session-start reconciles, by follower.
pub const RECONCILES: &str = "pgsieve_reconciles_total";
/// Resources whose secrets a reconcile purged (outside the set) or backfilled
/// (in the set, missing), by follower and action.
pub const RECONCILE_RESOURCES: &str = "pgsieve_reconcile_resources_total";
/// Gauge `{follower}`: age (seconds) of the newest leader commit the
/// follower has durably applied; heartbeats keep it meaningful on an idle
/// leader. The lag to alert on.
pub const FOLLOWER_LAG_SECONDS: &str = "pgsieve_follower_lag_seconds";
/// Gauge `{follower}`: 1 while the follower's applied position has stood
/// still for `stall_after_ms` although the leader's has moved.
pub const FOLLOWER_STALLED: &str = "pgsieve_follower_stalled";
/// Counter `{follower}`: `secrets` rows withheld from the follower by a
/// fail-closed decision (the filter could not decide, so it did not send).
pub const ROWS_FAILED_CLOSED: &str = "pgsieve_rows_failed_closed_total";
/// Counter: streamed transactions applied speculatively (started).
pub const SPECULATIONS: &str = "pgsieve_speculations_total";
/// Counter: speculations given up (rolled back; replayed at the commit).
pub const SPECULATIONS_GIVEN_UP: &str = "pgsieve_speculations_given_up_total";
/// Counter: heartbeat messages committed on the leader.
pub const HEARTBEATS: &str = "pgsieve_heartbeats_total";
/// Counter: heartbeats that failed (leader unreachable, read-only, …).
pub const HEARTBEAT_FAILURES: &str = "pgsieve_heartbeat_failures_total";
/// Gauge: WAL the leader keeps for pgsieve's slot (current WAL LSN − the
/// slot's restart LSN), read with each heartbeat.
pub const SLOT_WAL_RETAINED: &str = "pgsieve_slot_wal_retained_bytes";

/// Every `reason` of [`DETACHES`] (`fanout::DetachReason::kind`).
const DETACH_REASONS: [&str; 4] = ["slow", "lost", "failed", "unreachable"];

/// Bucket bounds of [`APPLY_LATENCY`] (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];
/// Bucket bounds of [`GROUP_COMMIT_SIZE`] (leader transactions).
const GROUP_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// How often histograms are compacted when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How often followers are checked for stalls.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Why metrics could not be set up (a configuration error: fail at start).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `[metrics] listen` cannot be bound.
    #[error("metrics: cannot listen on {listen}: {source}")]
    Listen {
        /// The configured address.
        listen: String,
        /// The bind error.
        source: std::io::Error,
    },
    /// Another metrics recorder is already installed in this process.
    #[error("metrics: cannot install the Prometheus recorder: {0}")]
    Recorder(String),
}

/// The process-wide Prometheus recorder, installed on first use: the
/// `metrics` facade has one global recorder, and several `run`s in one
/// process (the demo) must share it.
fn recorder() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut slot = HANDLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let err = |e: metrics_exporter_prometheus::BuildError| MetricsError::Recorder(e.to_string());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(APPLY_LATENCY.into()), LATENCY_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_SIZE.into()), GROUP_BUCKETS)
        .map_err(err)?
        .install_recorder()
        .map_err(err)?;
    describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

/// What each metric is, for its `# HELP` line: what an operator reads first on
/// `/metrics`. A table, so a new metric is one more row.
const HELP: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        ROWS_SEEN,
        Kind::Counter,
        Some(Unit::Count),
        "Row changes decoded from the leader's stream.",
    ),
    (
        ROWS_FORWARDED,
        Kind::Counter,
        Some(Unit::Count),
        "Row changes sent to the follower.",
    ),
    (
        ROWS_DROPPED,
        Kind::Counter,
        Some(Unit::Count),
        "Row changes filtered out for the follower (secrets outside its replica set).",
    ),
    (
        LEADER_TRANSACTIONS,
        Kind::Counter,
        Some(Unit::Count),
        "Leader transactions committed on the follower.",
    ),
    (
        FOLLOWER_COMMITS,
        Kind::Counter,
        Some(Unit::Count),
        "Follower transactions committed (group commits and progress-only commits).",
    ),
    (
        GROUP_COMMIT_SIZE,
        Kind::Histogram,
        Some(Unit::Count),
        "Leader transactions per follower commit.",
    ),
    (
        APPLY_LATENCY,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Leader commit to follower commit, per leader transaction.",
    ),
    (
        LAG_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "WAL received from the leader minus WAL committed on the follower.",
    ),
    (
        LAG_SECONDS,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Now minus the leader commit time of the follower's last applied transaction; 0 when caught up with what was received.",
    ),
    (
        BACKFILLS,
        Kind::Counter,
        Some(Unit::Count),
        "Variables re-synced into the follower's replica set.",
    ),
    (
        BACKFILL_ROWS,
        Kind::Counter,
        Some(Unit::Count),
        "Secrets rows copied from the leader by backfills.",
    ),
    (
        PURGES,
        Kind::Counter,
        Some(Unit::Count),
        "Variables purged from the follower after leaving its replica set.",
    ),
    (
        PURGE_ROWS,
        Kind::Counter,
        Some(Unit::Count),
        "Secrets rows deleted on the follower by purges.",
    ),
    (
        RECONNECTS,
        Kind::Counter,
        Some(Unit::Count),
        "Pipeline restarts after a transient failure.",
    ),
    (
        ERRORS,
        Kind::Counter,
        Some(Unit::Count),
        "Errors that stopped the pipeline or a follower, by kind.",
    ),
    (
        STREAMING,
        Kind::Gauge,
        None,
        "1 while the replication stream is up.",
    ),
    (
        FOLLOWER_ATTACHED,
        Kind::Gauge,
        None,
        "1 while the follower is fed by the stream, 0 while detached.",
    ),
    (
        DETACHES,
        Kind::Counter,
        Some(Unit::Count),
        "Followers detached from the stream, by reason (slow, lost, failed, unreachable).",
    ),
    (
        REWINDS,
        Kind::Counter,
        Some(Unit::Count),
        "Stream restarts at a rejoining follower's origin.",
    ),
    (
        SPECULATIONS,
        Kind::Counter,
        Some(Unit::Count),
        "Streamed transactions applied while the leader streamed them.",
    ),
    (
        SPECULATIONS_GIVEN_UP,
        Kind::Counter,
        Some(Unit::Count),
        "Speculations rolled back on the followers and replayed at their commit.",
    ),
    (
        RECONCILES,
        Kind::Counter,
        Some(Unit::Count),
        "Session-start reconciles of a follower's secrets against the leader's model.",
    ),
    (
        RECONCILE_RESOURCES,
        Kind::Counter,
        Some(Unit::Count),
        "Resources purged or backfilled by session-start reconciles.",
    ),
    (
        FOLLOWER_LAG_SECONDS,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Age of the newest leader commit (heartbeats included) durably applied on the follower.",
    ),
    (
        FOLLOWER_STALLED,
        Kind::Gauge,
        None,
        "1 while the follower's applied position stands still although the leader's moves (longer than stall_after_ms).",
    ),
    (
        ROWS_FAILED_CLOSED,
        Kind::Counter,
        Some(Unit::Count),
        "Secrets rows withheld from the follower because the filter could not decide (fail closed).",
    ),
    (
        HEARTBEATS,
        Kind::Counter,
        Some(Unit::Count),
        "Heartbeat messages committed on the leader.",
    ),
    (
        HEARTBEAT_FAILURES,
        Kind::Counter,
        Some(Unit::Count),
        "Heartbeat messages that could not be written on the leader.",
    ),
    (
        SLOT_WAL_RETAINED,
        Kind::Gauge,
        Some(Unit::Bytes),
        "WAL the leader keeps for pgsieve's slot (current WAL LSN minus restart LSN).",
    ),
];

/// Which `describe_*` a metric of [`HELP`] takes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// `# HELP` lines of every metric, this module's and the diff engine's.
fn describe() {
    for &(name, kind, unit, text) in HELP {
        ::metrics::with_recorder(|recorder| {
            let (name, text) = (name.into(), text.into());
            match kind {
                Kind::Counter => recorder.describe_counter(name, unit, text),
                Kind::Gauge => recorder.describe_gauge(name, unit, text),
                Kind::Histogram => recorder.describe_histogram(name, unit, text),
            }
        });
    }
    resyncs::describe();
}

/// The fail-closed counter of `follower` (registered at 0 by every sink, so
/// `increase()` sees the first one): the filter stage increments it for
/// every `secrets` row it withholds because it could not decide.
pub fn failed_closed_counter(follower: &str) -> Counter {
    counter!(ROWS_FAILED_CLOSED, "follower" => follower.to_owned())
}

/// `schema.table` of a relation: the `table` label.
fn table_label(relation: &Relation) -> String {
    let schema = if relation.namespace.is_empty() {
        "pg_catalog"
    } else {
        relation.namespace.as_str()
    };
    format!("{schema}.{}", relation.name)
}

/// Counts one `secrets` row withheld from every follower with a replica set
/// because no decision could be made (rare; the filter stage is shared by all
/// followers, so this series has no `follower` label).
pub fn count_failed_closed() {
    counter!(ROWS_FAILED_CLOSED).increment(1);
}

/// Counts one session-start reconcile of `follower` and what it changed.
pub fn count_reconcile(follower: &str, purged: u64, backfilled: u64) {
    counter!(RECONCILES, "follower" => follower.to_owned()).increment(1);
    counter!(RECONCILE_RESOURCES, "follower" => follower.to_owned(), "action" => "purge")
        .increment(purged);
    counter!(RECONCILE_RESOURCES, "follower" => follower.to_owned(), "action" => "backfill")
        .increment(backfilled);
}

/// Counts one error by kind (rare, so labels are built per call).
pub fn count_error(kind: &'static str, follower: Option<&str>) {
    match follower {
        Some(follower) => counter!(ERRORS, "kind" => kind, "follower" => follower.to_owned()),
        None => counter!(ERRORS, "kind" => kind),
    }
    .increment(1);
}

/// Rows seen on the stream per table, counted by the reader task (one hash
/// lookup per row; the handle is built when the relation is announced).
#[derive(Debug, Default)]
pub struct StreamMetrics {
    seen: HashMap<u32, (Counter, u64)>,
}

impl StreamMetrics {
    /// Counts `event` if it is a row change (locally: emitted at each
    /// commit, no atomic per row); learns relations.
    pub fn observe(&mut self, event: &TxnEvent) {
        match event {
            TxnEvent::Relation(relation) => {
                let counter = counter!(ROWS_SEEN, "table" => table_label(relation));
                self.seen
                    .entry(relation.oid)
                    .and_modify(|seen| seen.0 = counter.clone())
                    .or_insert((counter, 0));
            }
            TxnEvent::Change(change) => {
                if let Some((_, pending)) = self.seen.get_mut(&change.relation.oid) {
                    *pending += 1;
                }
            }
            TxnEvent::Commit(_) => {
                for (counter, pending) in self.seen.values_mut() {
                    if *pending > 0 {
                        counter.increment(std::mem::take(pending));
                    }
                }
            }
            TxnEvent::Begin(begin) if begin.speculative => counter!(SPECULATIONS).increment(1),
            // Its rows come again with the replay at its commit.
            TxnEvent::Abandon { .. } => {
                counter!(SPECULATIONS_GIVEN_UP).increment(1);
                for (_, pending) in self.seen.values_mut() {
                    *pending = 0;
                }
            }
            _ => {}
        }
    }
}

/// One follower's metric handles, built once per sink so applying a row or
/// committing never formats a label.
#[derive(Debug, Clone)]
pub struct FollowerMetrics {
    follower: String,
    leader_transactions: Counter,
    follower_commits: Counter,
    group_size: Histogram,
    apply_latency: Histogram,
    backfills: Counter,
    backfill_rows: Counter,
    purges: Counter,
    purge_rows: Counter,
    failed_closed: Counter,
    record: Arc<FollowerRecord>,
}

/// Per-table handles of one follower, kept in the sink's per-relation state.
#[derive(Debug, Clone)]
///
/// Rows are counted locally and emitted when the follower transaction
/// holding them commits: no atomic per row, and rows of a rolled-back group
/// (streamed again later) are not counted twice.
pub struct TableMetrics {
    forwarded: Counter,
    dropped: Counter,
    pending_forwarded: u64,
    pending_dropped: u64,
}

impl TableMetrics {
    /// A row sent to the follower.
    #[inline]
    pub fn forwarded(&mut self) {
        self.pending_forwarded += 1;
    }

    /// A row the filter kept from the follower.
    #[inline]
    pub fn dropped(&mut self) {
        self.pending_dropped += 1;
    }

    /// The follower committed: emits what was counted.
    pub fn emit(&mut self) {
        if self.pending_forwarded > 0 {
            self.forwarded
                .increment(std::mem::take(&mut self.pending_forwarded));
        }
        if self.pending_dropped > 0 {
            self.dropped
                .increment(std::mem::take(&mut self.pending_dropped));
        }
    }

    /// The follower transaction was rolled back: its rows come again.
    pub fn discard(&mut self) {
        self.pending_forwarded = 0;
        self.pending_dropped = 0;
    }
}

impl FollowerMetrics {
    /// Handles labelled with `follower`.
    pub fn new(follower: &str) -> Self {
        let f = || follower.to_owned();
        Self {
            follower: follower.to_owned(),
            leader_transactions: counter!(LEADER_TRANSACTIONS, "follower" => f()),
            follower_commits: counter!(FOLLOWER_COMMITS, "follower" => f()),
            group_size: histogram!(GROUP_COMMIT_SIZE, "follower" => f()),
            apply_latency: histogram!(APPLY_LATENCY, "follower" => f()),
            backfills: counter!(BACKFILLS, "follower" => f()),
            backfill_rows: counter!(BACKFILL_ROWS, "follower" => f()),
            purges: counter!(PURGES, "follower" => f()),
            purge_rows: counter!(PURGE_ROWS, "follower" => f()),
            failed_closed: failed_closed_counter(follower),
            record: followers::record(follower),
        }
        .registered()
    }

    /// Series an alert takes `increase()` of start at 0, not at their first
    /// event (Prometheus cannot see the step from "absent" to 1).
    fn registered(self) -> Self {
        self.failed_closed.increment(0);
        counter!(ERRORS, "kind" => "apply", "follower" => self.follower.clone()).increment(0);
        self
    }

    /// Rows withheld from this follower by fail-closed decisions.
    pub fn failed_closed(&self) -> &Counter {
        &self.failed_closed
    }

    /// Remembers an apply error for `/status` and `pgsieve status`.
    pub fn apply_failed(&self, error: String) {
        self.record.apply_failed(error);
    }

    /// Handles for one relation, built when the sink learns it.
    pub fn table(&self, relation: &Relation) -> TableMetrics {
        let table = table_label(relation);
        TableMetrics {
            forwarded: counter!(ROWS_FORWARDED, "follower" => self.follower.clone(), "table" => table.clone()),
            dropped: counter!(ROWS_DROPPED, "follower" => self.follower.clone(), "table" => table),
            pending_forwarded: 0,
            pending_dropped: 0,
        }
    }

    /// A follower transaction committed holding the leader transactions
    /// committed at `commit_times` (empty for a progress-only commit).
    pub fn committed(&self, commit_times: &[PgTimestamp]) {
        let now = PgTimestamp::now();
        self.follower_commits.increment(1);
        self.leader_transactions
            .increment(commit_times.len() as u64);
        self.group_size.record(commit_times.len() as f64);
        for t in commit_times {
            // Leader and pgsieve clocks may disagree a little: never negative.
            self.apply_latency
                .record(now.0.saturating_sub(t.0).max(0) as f64 / 1e6);
        }
    }

    /// `variables` entered the set; `rows` of theirs were copied.
    pub fn backfilled(&self, variables: u64, rows: u64) {
        self.backfills.increment(variables);
        self.backfill_rows.increment(rows);
        self.record.resynced(format!(
            "backfill: {variables} variables entered the replica set, {rows} secrets rows copied"
        ));
    }

    /// `variables` left the set.
    pub fn purged(&self, variables: u64) {
        self.purges.increment(variables);
        self.record
            .resynced(format!("purge: {variables} variables left the replica set"));
    }

    /// The purge-rows counter, moved into the purge statement's future so
    /// it counts what the follower actually deleted.
    pub fn purge_rows(&self) -> Counter {
        self.purge_rows.clone()
    }
}

/// What `/readyz` and the lag gauges look at for one follower.
#[derive(Debug)]
pub struct FollowerHealth {
    /// Follower name (label).
    pub name: String,
    /// Its durable progress (shared with the sink and the feedback task).
    pub progress: Arc<Progress>,
    /// Its apply session: a closed one means the follower is gone. Held
    /// only while streaming (a kept client would keep the session, and so
    /// the replication origin, busy across a reconnect); `None` when the
    /// follower starts the session detached.
    pub client: Option<Arc<Client>>,
    /// Why it is detached, if it is.
    pub detached: Option<String>,
}

struct Watched {
    name: String,
    progress: Arc<Progress>,
    client: Option<Arc<Client>>,
    detached: Option<String>,
    lag_bytes: Gauge,
    lag_seconds: Gauge,
    attached: Gauge,
    follower_lag: Gauge,
    stalled: Gauge,
    record: Arc<FollowerRecord>,
}

enum Phase {
    Starting,
    Streaming,
    Down(String),
}

struct State {
    phase: Phase,
    feedback: Option<Arc<Feedback>>,
    followers: Vec<Watched>,
    since: Instant,
}

struct Shared {
    handle: Option<PrometheusHandle>,
    max_lag_bytes: u64,
    stall_after: Duration,
    state: Mutex<State>,
    streaming: Gauge,
    /// Leader WAL position last seen by a heartbeat (0: none).
    leader_lsn: AtomicU64,
    heartbeat: Mutex<HeartbeatState>,
}

#[derive(Default)]
struct HeartbeatState {
    interval: Option<Duration>,
    last_written: Option<Event>,
    last_error: Option<Event>,
}

/// Metrics and probes of one `run`: owns the HTTP endpoints (stopped on
/// drop) and the pipeline state `/readyz` reports.
pub struct Telemetry {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    reconnects: Counter,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Telemetry {
    /// Installs the recorder and serves `[metrics] listen` when configured;
    /// without it, metrics calls stay no-ops and only state is tracked. A
    /// bind failure is returned: a probe that silently does not exist is
    /// worse than a refused start.
    pub async fn start(config: &Config) -> Result<Telemetry, MetricsError> {
        let (handle, listener) = match &config.metrics_listen {
            Some(listen) => {
                let handle = recorder()?;
                let listener = tokio::net::TcpListener::bind(listen.as_str())
                    .await
                    .map_err(|source| MetricsError::Listen {
                        listen: listen.clone(),
                        source,
                    })?;
                (Some(handle), Some(listener))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            handle: handle.clone(),
            max_lag_bytes: config.max_lag_bytes,
            stall_after: config.stall_after,
            leader_lsn: AtomicU64::new(0),
            heartbeat: Mutex::new(HeartbeatState {
                interval: config.heartbeat_interval,
                ..HeartbeatState::default()
            }),
            state: Mutex::new(State {
                phase: Phase::Starting,
                feedback: None,
                followers: Vec::new(),
                since: Instant::now(),
            }),
            streaming: gauge!(STREAMING),
        });
        shared.streaming.set(0.0);
        counter!(REWINDS).increment(0);
        counter!(SPECULATIONS).increment(0);
        counter!(SPECULATIONS_GIVEN_UP).increment(0);
        let mut tasks = Vec::new();
        let watched = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                watched.observe();
            }
        }));
        let mut local_addr = None;
        if let (Some(handle), Some(listener)) = (handle, listener) {
            local_addr = listener.local_addr().ok();
            tracing::info!(listen = ?local_addr, "Serving /metrics, /healthz, /readyz and /status.");
            let router = shared.clone();
            tasks.push(tokio::spawn(http::serve(
                listener,
                Arc::new(move |path: &str| router.route(path)),
                config.metrics_token.as_deref().map(Arc::from),
            )));
            tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    every.tick().await;
                    handle.run_upkeep();
                }
            }));
        }
        Ok(Telemetry {
            shared,
            tasks,
            local_addr,
            reconnects: counter!(RECONNECTS),
        })
    }

    /// The bound address of the endpoints (port 0 resolved), if serving.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The stream is up: `/readyz` now judges these followers; the state
    /// falls back to "not streaming" when the guard is dropped.
    pub fn streaming(
        &self,
        feedback: Arc<Feedback>,
        followers: Vec<FollowerHealth>,
    ) -> StreamingGuard<'_> {
        let followers = followers
            .into_iter()
            .map(|health| {
                let attached = gauge!(FOLLOWER_ATTACHED, "follower" => health.name.clone());
                // At 0 from the start, so an alert's increase() sees the first.
                for reason in DETACH_REASONS {
                    counter!(DETACHES, "follower" => health.name.clone(), "reason" => reason)
                        .increment(0);
                }
                attached.set(if health.detached.is_some() { 0.0 } else { 1.0 });
                Watched {
                    lag_bytes: gauge!(LAG_BYTES, "follower" => health.name.clone()),
                    lag_seconds: gauge!(LAG_SECONDS, "follower" => health.name.clone()),
                    follower_lag: gauge!(FOLLOWER_LAG_SECONDS, "follower" => health.name.clone()),
                    stalled: gauge!(FOLLOWER_STALLED, "follower" => health.name.clone()),
                    record: followers::record(&health.name),
                    name: health.name,
                    progress: health.progress,
                    client: health.client,
                    detached: health.detached,
                    attached,
                }
            })
            .collect();
        let mut state = self.shared.lock();
        state.phase = Phase::Streaming;
        state.feedback = Some(feedback);
        state.followers = followers;
        state.since = Instant::now();
        self.shared.streaming.set(1.0);
        StreamingGuard { telemetry: self }
    }

    /// The pipeline is down for `reason` (one line for `/readyz`).
    pub fn down(&self, reason: &str) {
        let reason = reason.replace(['\n', '\r'], " ");
        let mut state = self.shared.lock();
        state.phase = Phase::Down(reason);
        for f in &mut state.followers {
            f.client = None;
        }
        drop(state);
        self.shared.streaming.set(0.0);
    }

    /// Counts a pipeline restart.
    pub fn reconnecting(&self) {
        self.reconnects.increment(1);
    }

    /// Where the heartbeat task reports (it outlives no `Telemetry`: the
    /// reporter only holds the shared state).
    pub fn heartbeat_reporter(&self) -> HeartbeatReporter {
        HeartbeatReporter {
            shared: self.shared.clone(),
            written: counter!(HEARTBEATS),
            failed: counter!(HEARTBEAT_FAILURES),
            retained: gauge!(SLOT_WAL_RETAINED),
        }
    }

    /// Counts a rewind of the stream for a rejoining follower.
    pub fn rewinding(&self) {
        counter!(REWINDS).increment(1);
    }

    /// `follower` left the stream for `reason` (rare: labels built here).
    pub fn detached(&self, follower: &str, reason: &crate::fanout::DetachReason) {
        counter!(DETACHES, "follower" => follower.to_owned(), "reason" => reason.kind())
            .increment(1);
        let mut state = self.shared.lock();
        if let Some(f) = state.followers.iter_mut().find(|f| f.name == follower) {
            f.client = None;
            f.detached = Some(reason.to_string().replace(['\n', '\r'], " "));
            f.attached.set(0.0);
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Marks the end of streaming when the session that started it ends, on
/// every path out of it.
#[derive(Debug)]
pub struct StreamingGuard<'a> {
    telemetry: &'a Telemetry,
}

impl Drop for StreamingGuard<'_> {
    fn drop(&mut self) {
        self.telemetry.down("the replication stream stopped");
    }
}

/// The heartbeat task's side of [`Telemetry`]: where the leader stands and
/// whether heartbeats get through.
#[derive(Clone)]
pub struct HeartbeatReporter {
    shared: Arc<Shared>,
    written: Counter,
    failed: Counter,
    retained: Gauge,
}

impl std::fmt::Debug for HeartbeatReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatReporter").finish_non_exhaustive()
    }
}

impl HeartbeatReporter {
    /// A heartbeat committed at leader position `lsn`; the slot keeps
    /// `retained` bytes of WAL (`None`: the slot does not exist yet).
    pub fn written(&self, lsn: Lsn, retained: Option<u64>) {
        self.written.increment(1);
        self.shared.leader_lsn.fetch_max(lsn.0, Ordering::AcqRel);
        if let Some(bytes) = retained {
            self.retained.set(bytes as f64);
        }
        let mut hb = lock(&self.shared.heartbeat);
        hb.last_written = Some(Event {
            at: followers::rfc3339(std::time::SystemTime::now()),
            what: format!("at leader WAL position {lsn}"),
        });
    }

    /// A heartbeat failed for `reason`; returns whether the previous one
    /// succeeded (so the caller logs a failure once, not every interval).
    pub fn failed(&self, reason: &str) -> bool {
        self.failed.increment(1);
        let mut hb = lock(&self.shared.heartbeat);
        let first = hb.last_error.is_none()
            || hb.last_written.as_ref().map(|w| &w.at) > hb.last_error.as_ref().map(|e| &e.at);
        hb.last_error = Some(Event {
            at: followers::rfc3339(std::time::SystemTime::now()),
            what: reason.replace(['\n', '\r'], " "),
        });
        first
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/status`: the running process's view of each follower, as JSON. Read by
/// `pgsieve status` (field names are part of its stable JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeStatus {
    /// `starting` (connecting or initial copy), `streaming` or `down`.
    pub state: String,
    /// Why not streaming (`down`), else `None`.
    pub reason: Option<String>,
    /// Heartbeat interval in seconds; `None`: heartbeats are off.
    pub heartbeat_interval_seconds: Option<f64>,
    /// The last heartbeat committed on the leader.
    pub last_heartbeat: Option<Event>,
    /// The last heartbeat failure.
    pub last_heartbeat_error: Option<Event>,
    /// One entry per follower of the current (or last) session.
    pub followers: Vec<RuntimeFollower>,
}

/// One follower in [`RuntimeStatus`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeFollower {
    /// `[[follower]] name`.
    pub name: String,
    /// Fed by the stream (false: detached, hub mode).
    pub attached: bool,
    /// Why it is detached.
    pub detached_reason: Option<String>,
    /// Age of the newest leader commit durably applied (seconds).
    pub lag_seconds: f64,
    /// WAL received from the leader and not yet committed on the follower.
    pub lag_bytes: u64,
    /// End LSN of the last leader transaction committed on the follower.
    pub applied_lsn: String,
    /// Applied position standing still while the leader's moves.
    pub stalled: bool,
    /// For how long it has been behind without moving (seconds), if it is.
    pub waiting_seconds: Option<f64>,
    /// The last re-sync of variables (backfill or purge) since start.
    pub last_resync: Option<Event>,
    /// The last apply error since start.
    pub last_apply_error: Option<Event>,
}

/// One follower's figures at one instant (see [`Shared::observe`]).
struct Observed {
    lag_bytes: u64,
    lag_seconds: f64,
    applied: Lsn,
    stalled: bool,
    waiting: Option<Duration>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, path: &str) -> Response {
        match path {
            "/metrics" => match &self.handle {
                Some(handle) => {
                    self.observe();
                    Response {
                        status: 200,
                        content_type: "text/plain; version=0.0.4; charset=utf-8",
                        body: handle.render(),
                    }
                }
                None => Response::text(404, "metrics are off\n"),
            },
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => match self.readiness() {
                Ok(()) => Response::text(200, "ready\n"),
                Err(reason) => Response::text(503, format!("{reason}\n")),
            },
            "/status" => Response {
                status: 200,
                content_type: "application/json",
                body: serde_json::to_string_pretty(&self.runtime_status())
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
            },
            _ => Response::text(
                404,
                "not found: try /metrics, /healthz, /readyz or /status\n",
            ),
        }
    }

    /// Checks every follower for a stall and sets the lag gauges (each
    /// second from the watch task, and at every scrape and probe).
    fn observe(&self) -> Vec<Observed> {
        let state = self.lock();
        let received = state
            .feedback
            .as_ref()
            .map_or(0, |feedback| feedback.received_lsn().0);
        let leader = Lsn(received.max(self.leader_lsn.load(Ordering::Acquire)));
        let judged = !matches!(state.phase, Phase::Starting);
        let now = Instant::now();
        let mut out = Vec::with_capacity(state.followers.len());
        for f in &state.followers {
            let applied = f.progress.committed_end();
            let session = f.progress.statements();
            let mut track = f.record.track();
            // Moving: a higher applied position, or more statements taken by
            // the follower in the same session (a long leader transaction
            // that has not committed yet). A new session's replay alone is
            // not progress: a reconnect loop still stalls.
            let worked = track.session.0 == session.0 && session.1 > track.session.1;
            track.session = session;
            if applied > track.applied || worked {
                track.applied = track.applied.max(applied);
                track.waiting_since = None;
            }
            if leader <= track.applied {
                track.waiting_since = None;
            } else if track.waiting_since.is_none() {
                track.waiting_since = Some(now);
            }
            if let Some(t) = f.progress.newest_leader_commit() {
                track.newest_leader_commit = track.newest_leader_commit.max(Some(t));
            }
            let waiting = track.waiting_since.map(|since| now - since);
            let stalled =
                judged && f.detached.is_none() && waiting.is_some_and(|w| w >= self.stall_after);
            if stalled != track.stalled {
                track.stalled = stalled;
                if stalled {
                    tracing::warn!(
                        follower = %f.name,
                        applied_lsn = %track.applied,
                        leader_lsn = %leader,
                        waiting_s = waiting.map_or(0, |w| w.as_secs()),
                        "Follower stalled: its applied position has not moved while the leader's has."
                    );
                } else {
                    tracing::info!(follower = %f.name, applied_lsn = %track.applied, "Follower no longer stalled.");
                }
            }
            let lag_seconds = match track.newest_leader_commit {
                Some(t) => PgTimestamp::now().0.saturating_sub(t.0).max(0) as f64 / 1e6,
                None => track.watching_since.elapsed().as_secs_f64(),
            };
            let (lag_bytes, old_seconds) = lag(&state, f);
            f.lag_bytes.set(lag_bytes as f64);
            f.lag_seconds.set(old_seconds);
            f.follower_lag.set(lag_seconds);
            f.stalled.set(if stalled { 1.0 } else { 0.0 });
            out.push(Observed {
                lag_bytes,
                lag_seconds,
                applied: track.applied,
                stalled,
                waiting,
            });
        }
        out
    }

    fn readiness(&self) -> Result<(), String> {
        let observed = self.observe();
        let state = self.lock();
        match &state.phase {
            Phase::Starting => {
                return Err("not streaming yet: connecting, or the initial copy is running".into());
            }
            Phase::Down(reason) => return Err(format!("not streaming: {reason}")),
            Phase::Streaming => {}
        }
        for (f, o) in state.followers.iter().zip(&observed) {
            if let Some(reason) = &f.detached {
                return Err(format!("follower {} is detached: {reason}", f.name));
            }
            if f.client.as_ref().is_none_or(|c| c.is_closed()) {
                return Err(format!(
                    "follower {}: connection to the follower lost",
                    f.name
                ));
            }
            if o.stalled {
                return Err(format!(
                    "follower {} is stalled: applied position {} has not moved for {} s while the leader's moved (stall_after_ms = {})",
                    f.name,
                    o.applied,
                    o.waiting.map_or(0, |w| w.as_secs()),
                    self.stall_after.as_millis()
                ));
            }
            if o.lag_bytes > self.max_lag_bytes {
                return Err(format!(
                    "follower {} lags {} bytes behind the leader (max_lag_bytes = {})",
                    f.name, o.lag_bytes, self.max_lag_bytes
                ));
            }
        }
        Ok(())
    }

    fn runtime_status(&self) -> RuntimeStatus {
        let observed = self.observe();
        let state = self.lock();
        let (name, reason) = match &state.phase {
            Phase::Starting => ("starting", None),
            Phase::Streaming => ("streaming", None),
            Phase::Down(reason) => ("down", Some(reason.clone())),
        };
        let hb = lock(&self.heartbeat);
        RuntimeStatus {
            state: name.into(),
            reason,
            heartbeat_interval_seconds: hb.interval.map(|i| i.as_secs_f64()),
            last_heartbeat: hb.last_written.clone(),
            last_heartbeat_error: hb.last_error.clone(),
            followers: state
                .followers
                .iter()
                .zip(observed)
                .map(|(f, o)| RuntimeFollower {
                    name: f.name.clone(),
                    attached: f.detached.is_none(),
                    detached_reason: f.detached.clone(),
                    lag_seconds: (o.lag_seconds * 1000.0).round() / 1000.0,
                    lag_bytes: o.lag_bytes,
                    applied_lsn: o.applied.to_string(),
                    stalled: o.stalled,
                    waiting_seconds: o.waiting.map(|w| w.as_secs_f64()),
                    last_resync: f.record.last_resync(),
                    last_apply_error: f.record.last_apply_error(),
                })
                .collect(),
        }
    }
}

/// `(bytes, seconds)` of lag of one follower.
fn lag(state: &State, f: &Watched) -> (u64, f64) {
    let received = state
        .feedback
        .as_ref()
        .map_or(0, |feedback| feedback.received_lsn().0);
    let bytes = received.saturating_sub(f.progress.committed_end().0);
    if bytes == 0 {
        return (0, 0.0);
    }
    let seconds = match f.progress.last_commit_time() {
        Some(t) => PgTimestamp::now().0.saturating_sub(t.0).max(0) as f64 / 1e6,
        // Nothing applied since streaming began: at least that long.
        None => state.since.elapsed().as_secs_f64(),
    };
    (bytes, seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn config(stall_after_ms: u64) -> Config {
        let raw = RawConfig::parse(&format!(
            "[leader]\nurl = \"postgresql://replicator@127.0.0.1:1/conjur\"\n\
             [[follower]]\nname = \"stall-unit\"\nurl = \"postgresql://postgres@127.0.0.1:1/conjur\"\n\
             [metrics]\nstall_after_ms = {stall_after_ms}\n"
        ))
        .unwrap();
        Config::resolve_with_env(&raw, |_| None).unwrap()
    }

    fn health(name: &str, applied: u64, detached: Option<&str>) -> FollowerHealth {
        FollowerHealth {
            name: name.into(),
            progress: Progress::starting_at(Lsn(applied)),
            client: None,
            detached: detached.map(str::to_owned),
        }
    }

    fn stalled(telemetry: &Telemetry) -> Vec<bool> {
        telemetry
            .shared
            .observe()
            .iter()
            .map(|o| o.stalled)
            .collect()
    }

    fn guard_progress(telemetry: &Telemetry) -> Arc<Progress> {
        telemetry.shared.lock().followers[0].progress.clone()
    }

    #[tokio::test]
    async fn a_follower_is_stalled_only_when_behind_and_not_moving_for_long_enough() {
        let telemetry = Telemetry::start(&config(1000)).await.unwrap();
        let beat = telemetry.heartbeat_reporter();
        // Caught up: never stalled, however long.
        let feedback = Feedback::new(Vec::new());
        let guard = telemetry.streaming(feedback.clone(), vec![health("stall-unit", 100, None)]);
        beat.written(Lsn(100), Some(0));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stalled(&telemetry), [false]);
        // The leader moves (a heartbeat) and the follower's position does
        // not, but it takes statements (a long transaction applying): busy,
        // not stalled.
        beat.written(Lsn(200), Some(0));
        assert_eq!(stalled(&telemetry), [false]);
        let progress = guard_progress(&telemetry);
        for _ in 0..8 {
            progress.worked();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(stalled(&telemetry), [false]);
        }
        // Nothing moves: stalled once the threshold has passed, not before.
        assert_eq!(stalled(&telemetry), [false]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stalled(&telemetry), [true]);
        // (/readyz's stall reason is checked end to end in tests/ops_kit.rs:
        // here the follower has no session, which /readyz reports first.)
        assert!(telemetry.shared.readiness().is_err());
        // A new session whose follower applied more: no longer stalled,
        // though still behind (the clock restarts).
        drop(guard);
        let guard = telemetry.streaming(feedback.clone(), vec![health("stall-unit", 150, None)]);
        assert_eq!(stalled(&telemetry), [false]);
        // A detached follower is reported as detached, not as stalled.
        drop(guard);
        let _guard = telemetry.streaming(feedback, vec![health("stall-unit", 150, Some("slow"))]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(stalled(&telemetry), [false]);
        let status = telemetry.shared.runtime_status();
        assert_eq!(status.state, "streaming");
        assert_eq!(status.followers[0].detached_reason.as_deref(), Some("slow"));
        assert_eq!(status.followers[0].applied_lsn, "0/96");
        assert!(status.last_heartbeat.is_some());
    }

    #[tokio::test]
    async fn nothing_is_stalled_during_the_initial_copy() {
        let telemetry = Telemetry::start(&config(1)).await.unwrap();
        telemetry.heartbeat_reporter().written(Lsn(500), None);
        // Before the first streaming() the process is starting: no followers
        // are judged, and /status lists none.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(stalled(&telemetry).is_empty());
        assert_eq!(telemetry.shared.runtime_status().state, "starting");
    }
}
