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
//! (the process is up) and `/readyz` (streaming, every follower connected
//! and within `max_lag_bytes`).

pub mod http;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pgsieve_protocol::PgTimestamp;
use pgsieve_protocol::pgoutput::Relation;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::config::Config;
use crate::feedback::Feedback;
use crate::sink::Progress;
use crate::txn::TxnEvent;

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

/// `# HELP` lines: what an operator reads first on `/metrics`.
fn describe() {
    describe_counter!(
        ROWS_SEEN,
        Unit::Count,
        "Row changes decoded from the leader's stream."
    );
    describe_counter!(
        ROWS_FORWARDED,
        Unit::Count,
        "Row changes sent to the follower."
    );
    describe_counter!(
        ROWS_DROPPED,
        Unit::Count,
        "Row changes filtered out for the follower (secrets outside its replica set)."
    );
    describe_counter!(
        LEADER_TRANSACTIONS,
        Unit::Count,
        "Leader transactions committed on the follower."
    );
    describe_counter!(
        FOLLOWER_COMMITS,
        Unit::Count,
        "Follower transactions committed (group commits and progress-only commits)."
    );
    describe_histogram!(
        GROUP_COMMIT_SIZE,
        Unit::Count,
        "Leader transactions per follower commit."
    );
    describe_histogram!(
        APPLY_LATENCY,
        Unit::Seconds,
        "Leader commit to follower commit, per leader transaction."
    );
    describe_gauge!(
        LAG_BYTES,
        Unit::Bytes,
        "WAL received from the leader minus WAL committed on the follower."
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Now minus the leader commit time of the follower's last applied transaction; 0 when caught up with what was received."
    );
    describe_counter!(
        BACKFILLS,
        Unit::Count,
        "Variables re-synced into the follower's replica set."
    );
    describe_counter!(
        BACKFILL_ROWS,
        Unit::Count,
        "Secrets rows copied from the leader by backfills."
    );
    describe_counter!(
        PURGES,
        Unit::Count,
        "Variables purged from the follower after leaving its replica set."
    );
    describe_counter!(
        PURGE_ROWS,
        Unit::Count,
        "Secrets rows deleted on the follower by purges."
    );
    describe_counter!(
        RECONNECTS,
        Unit::Count,
        "Pipeline restarts after a transient failure."
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "Errors that stopped the pipeline or a follower, by kind."
    );
    describe_gauge!(STREAMING, "1 while the replication stream is up.");
    describe_gauge!(
        FOLLOWER_ATTACHED,
        "1 while the follower is fed by the stream, 0 while detached."
    );
    describe_counter!(
        DETACHES,
        Unit::Count,
        "Followers detached from the stream, by reason (slow, lost, failed, unreachable)."
    );
    describe_counter!(
        REWINDS,
        Unit::Count,
        "Stream restarts at a rejoining follower's origin."
    );
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
    seen: HashMap<u32, Counter>,
}

impl StreamMetrics {
    /// Counts `event` if it is a row change; learns relations.
    pub fn observe(&mut self, event: &TxnEvent) {
        match event {
            TxnEvent::Relation(relation) => {
                self.seen.insert(
                    relation.oid,
                    counter!(ROWS_SEEN, "table" => table_label(relation)),
                );
            }
            TxnEvent::Change(change) => {
                if let Some(seen) = self.seen.get(&change.relation.oid) {
                    seen.increment(1);
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
}

/// Per-table handles of one follower, kept in the sink's per-relation state.
#[derive(Debug, Clone)]
pub struct TableMetrics {
    /// Rows sent to the follower.
    pub forwarded: Counter,
    /// Rows the filter kept from the follower.
    pub dropped: Counter,
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
        }
    }

    /// Handles for one relation, built when the sink learns it.
    pub fn table(&self, relation: &Relation) -> TableMetrics {
        let table = table_label(relation);
        TableMetrics {
            forwarded: counter!(ROWS_FORWARDED, "follower" => self.follower.clone(), "table" => table.clone()),
            dropped: counter!(ROWS_DROPPED, "follower" => self.follower.clone(), "table" => table),
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
    }

    /// `variables` left the set.
    pub fn purged(&self, variables: u64) {
        self.purges.increment(variables);
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
    state: Mutex<State>,
    streaming: Gauge,
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
            state: Mutex::new(State {
                phase: Phase::Starting,
                feedback: None,
                followers: Vec::new(),
                since: Instant::now(),
            }),
            streaming: gauge!(STREAMING),
        });
        shared.streaming.set(0.0);
        let mut tasks = Vec::new();
        let mut local_addr = None;
        if let (Some(handle), Some(listener)) = (handle, listener) {
            local_addr = listener.local_addr().ok();
            tracing::info!(listen = ?local_addr, "Serving /metrics, /healthz and /readyz.");
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
                attached.set(if health.detached.is_some() { 0.0 } else { 1.0 });
                Watched {
                    lag_bytes: gauge!(LAG_BYTES, "follower" => health.name.clone()),
                    lag_seconds: gauge!(LAG_SECONDS, "follower" => health.name.clone()),
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

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, path: &str) -> Response {
        match path {
            "/metrics" => match &self.handle {
                Some(handle) => {
                    self.refresh_lag();
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
            _ => Response::text(404, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }

    /// Sets the lag gauges from the current progress (at scrape time, so
    /// the hot path never touches them).
    fn refresh_lag(&self) {
        let state = self.lock();
        for f in &state.followers {
            let (bytes, seconds) = lag(&state, f);
            f.lag_bytes.set(bytes as f64);
            f.lag_seconds.set(seconds);
        }
    }

    fn readiness(&self) -> Result<(), String> {
        let state = self.lock();
        match &state.phase {
            Phase::Starting => {
                return Err("not streaming yet: connecting, or the initial copy is running".into());
            }
            Phase::Down(reason) => return Err(format!("not streaming: {reason}")),
            Phase::Streaming => {}
        }
        for f in &state.followers {
            if let Some(reason) = &f.detached {
                return Err(format!("follower {} is detached: {reason}", f.name));
            }
            if f.client.as_ref().is_none_or(|c| c.is_closed()) {
                return Err(format!(
                    "follower {}: connection to the follower lost",
                    f.name
                ));
            }
            let (bytes, _) = lag(&state, f);
            if bytes > self.max_lag_bytes {
                return Err(format!(
                    "follower {} lags {bytes} bytes behind the leader (max_lag_bytes = {})",
                    f.name, self.max_lag_bytes
                ));
            }
        }
        Ok(())
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
