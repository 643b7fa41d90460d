/*!
`pgsieve bench`: end-to-end backlog catch-up of pgsieve against PostgreSQL
native logical replication, pglogical 2 (when installed) and a raw reader
(the ceiling), on fresh throwaway clusters, with CPU and memory figures, and a
grant/revoke latency probe (README.md, "Bench").

- [`workloads`]: what is written (W1–W4), sizes, expected follower contents.
- [`engines`]: setting up, pausing and resuming each engine.
- [`measure`]: CPU seconds, peak RSS, the sentinel wait.
- [`fanout`]: one leader feeding 1–8 followers: hub vs sidecars vs native.
- [`report`]: Markdown, JSON and SVG.

Entry point: [`run`]. Behind the `harness` feature.
*/

pub mod engines;
pub mod fanout;
pub mod measure;
pub mod report;
pub mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::harness::HarnessError;
use crate::harness::cluster::{Cluster, ClusterSpec};
use crate::harness::conjur::{prepare_conjur, prepare_leader};
use crate::harness::error::PgContext;
use crate::harness::topology::DEFAULT_PUBLICATION;
use crate::harness::workload::Change;
use crate::source::SourceError;

pub use engines::EngineKind;
pub use report::Report;
pub use workloads::{Filter, Schema, Sizes, Workload};

use engines::{Engine, PGLOGICAL_CONF, PGLOGICAL_SKIPS};
use report::{CaseResult, EngineResult, LatencyResult, Machine};

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Clusters, SQL, timeouts.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The raw reader's replication connection.
    #[error("{what}: {source}")]
    Source {
        /// What was being done.
        what: String,
        /// The cause.
        source: SourceError,
    },
    /// Writing the report.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else, with its explanation.
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    fn source(what: &str, source: SourceError) -> BenchError {
        BenchError::Source {
            what: what.to_owned(),
            source,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Sizes (the full ones, or `--quick`'s).
    pub sizes: Sizes,
    /// Whether these are the quick sizes (recorded in the report).
    pub quick: bool,
    /// Where the report goes (`benches/results/<date>/` by default).
    pub out: Option<PathBuf>,
    /// Workloads to run (empty: all).
    pub workloads: Vec<Workload>,
    /// Show a progress spinner on a terminal.
    pub progress: bool,
    /// Follower counts of the fan-out runs (empty: none).
    pub fanout: Vec<usize>,
    /// Whether pglogical runs when installed.
    pub pglogical: bool,
    /// Schemas to run (empty: every schema a workload has).
    pub schemas: Vec<Schema>,
    /// Replica-set shares to run (empty: both).
    pub filters: Vec<Filter>,
}

impl BenchOptions {
    /// Full or quick sizes, every workload, progress on.
    pub fn new(quick: bool) -> BenchOptions {
        BenchOptions {
            sizes: if quick { Sizes::quick() } else { Sizes::full() },
            quick,
            out: None,
            workloads: Vec::new(),
            progress: true,
            fanout: if quick { vec![1, 2] } else { vec![1, 2, 4, 8] },
            pglogical: true,
            schemas: Vec::new(),
            filters: Vec::new(),
        }
    }
}

/// Bound on one catch-up (pglogical's W2 with filtered rows is quadratic).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Runs the bench, writes the report into the output directory and returns it.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    let bindir = crate::harness::cluster::bindir()?;
    let pglogical = options.pglogical && engines::pglogical_available(bindir);
    let mut notes = Vec::new();
    let (sizes, overrides) = options
        .sizes
        .with_env_overrides()
        .map_err(BenchError::Failed)?;
    if !overrides.is_empty() {
        notes.push(format!(
            "sizes set by the environment: {}.",
            overrides.join(", ")
        ));
    }
    let mut engines = vec![EngineKind::Pgsieve, EngineKind::Native];
    if pglogical {
        engines.push(EngineKind::Pglogical);
        notes.push(
            "pglogical's leader tables `permissions`, `role_memberships` and `resources` are \
             `user_catalog_table` in W1 and W2 (required for `is_resource_visible` to see grants \
             made after the slot); the leader is shared by every engine of a case, so all read \
             that WAL. Not in W4: PostgreSQL refuses the policy load's `INSERT … ON CONFLICT` on \
             a catalog table (so would the seed's leader); every grant W4's filter reads precedes \
             the slot, so no decision changes. `policy_log` (no primary key) is not in \
             pglogical's replication set."
                .to_owned(),
        );
    } else if !options.pglogical {
        notes.push("pglogical left out (--without-pglogical).".into());
    } else {
        notes.push(format!(
            "pglogical skipped: postgresql-15-pglogical is not installed ({} has no pglogical.so).",
            bindir
                .parent()
                .map_or(String::new(), |d| d.join("lib").display().to_string())
        ));
    }
    engines.push(EngineKind::Raw);
    notes.push(
        "plain = `secrets(resource_id text, version int, value bytea, PRIMARY KEY \
         (resource_id, version))` on leader and followers, no other index, 8-byte values; \
         conjur = Conjur's own `secrets` (three indexes, one over SQL functions), 61-byte values."
            .to_owned(),
    );
    notes.push(
        "native's row filter is `resource_id LIKE 'acme:variable:shared/%'` for `half` and none \
         for `all` (PG15 publications cannot call is_resource_visible); pgsieve and pglogical \
         evaluate the replica set in both modes."
            .to_owned(),
    );
    notes.push(
        "ceiling = pgsieve's replication connection and pgoutput decoder in the bench \
         process, draining the slot as fast as the socket delivers it (128 KiB reads, status \
         updates only when a keepalive asks) and discarding every message (proto 2, streaming \
         on): the rate at which the leader can decode and send this WAL. Its walsender \
         utilization shows whether that held."
            .to_owned(),
    );
    let progress = progress_bar(options.progress);
    let selected = |w: Workload| options.workloads.is_empty() || options.workloads.contains(&w);
    let wanted = |schema: &Schema, filter: &Filter| {
        (options.schemas.is_empty() || options.schemas.contains(schema))
            && (options.filters.is_empty() || options.filters.contains(filter))
    };
    let mut cases = Vec::new();
    let mut latency = None;
    for workload in Workload::ALL.into_iter().filter(|w| selected(*w)) {
        if workload == Workload::W3 {
            progress.set_message("W3: grant/revoke latency".to_string());
            let l = run_latency(&sizes, &progress).await?;
            progress.println(format!(
                "W3: grant p50 {:.1} ms p99 {:.1} ms; revoke p50 {:.1} ms p99 {:.1} ms",
                l.grant_p50_ms, l.grant_p99_ms, l.revoke_p50_ms, l.revoke_p99_ms
            ));
            latency = Some(l);
            continue;
        }
        for (&schema, filter) in Schema::for_workload(workload)
            .iter()
            .flat_map(|s| [(s, Filter::All), (s, Filter::Half)])
            .filter(|(s, f)| wanted(s, f))
        {
            let case = run_case(workload, schema, filter, &sizes, &engines, &progress).await?;
            for e in &case.engines {
                progress.println(format!(
                    "{:?} {} {}: {:<10} {}",
                    workload,
                    schema.name(),
                    filter.name(),
                    e.engine.name(),
                    match (&e.skipped, &e.measured) {
                        (Some(why), _) => format!("skipped ({why})"),
                        (None, Some(m)) => format!(
                            "{:.2} s, {:.0} {}, walsender busy {}",
                            m.catch_up_seconds,
                            e.rate.unwrap_or(0.0),
                            workload.unit(),
                            m.walsender_utilization()
                                .map_or("?".into(), |u| format!("{:.0} %", u * 100.0))
                        ),
                        _ => "-".into(),
                    }
                ));
            }
            cases.push(case);
        }
    }
    let fanout = fanout::run(&sizes, &options.fanout, &progress).await?;
    progress.finish_and_clear();
    let report = Report {
        date: today(),
        quick: options.quick,
        sizes,
        machine: machine(),
        cases,
        latency,
        fanout,
        notes,
    };
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("benches/results").join(&report.date));
    report.write(&out)?;
    Ok(report)
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Starts clusters off the async threads (initdb and pg_ctl block).
async fn start_clusters(specs: Vec<ClusterSpec>) -> Result<Vec<Cluster>, BenchError> {
    tokio::task::spawn_blocking(move || Cluster::start_all(specs))
        .await
        .map_err(|e| BenchError::Failed(format!("cluster start task: {e}")))?
        .map_err(BenchError::from)
}

/// One workload × filter case: fresh clusters, every engine set up and paused,
/// the workload written once, then each engine's catch-up timed and checked.
async fn run_case(
    workload: Workload,
    schema: Schema,
    filter: Filter,
    sizes: &Sizes,
    kinds: &[EngineKind],
    progress: &ProgressBar,
) -> Result<CaseResult, BenchError> {
    let label = format!("{workload:?} {} {}", schema.name(), filter.name());
    let say = |step: &str| progress.set_message(format!("{label}: {step}"));
    say("starting clusters");
    let with_pglogical = kinds.contains(&EngineKind::Pglogical);
    let specs = case_cluster_specs(kinds, with_pglogical);
    let mut clusters = start_clusters(specs).await?.into_iter();
    let leader = clusters
        .next()
        .ok_or_else(|| BenchError::Failed("no leader cluster".into()))?;
    say("loading the schema and population");
    let mut leader_client = prepare_conjur(&leader).await?;
    if schema == Schema::Plain {
        workloads::use_plain_secrets(&leader_client, true).await?;
    }
    prepare_leader(&leader_client, DEFAULT_PUBLICATION).await?;
    workloads::populate(&mut leader_client, workload, filter, sizes).await?;
    if with_pglogical {
        engines::setup_pglogical_provider(&leader, &leader_client, workload != Workload::W4)
            .await?;
    }
    let mut engines = Vec::new();
    for kind in kinds {
        say(&format!("{}: initial copy", kind.name()));
        let follower = if kind.has_follower() {
            clusters.next()
        } else {
            None
        };
        let mut engine =
            Engine::setup(*kind, &leader, &leader_client, follower, schema, filter).await?;
        engine
            .pause(&leader_client)
            .await
            .map_err(|e| with_leader_log(e, &leader))?;
        engines.push(engine);
    }
    say("writing the workload");
    let secrets_before = count_secrets(&leader_client).await?;
    let written = Instant::now();
    let leader_rows = workloads::write(&mut leader_client, workload, schema, sizes).await?;
    let version = workloads::bump_sentinel(&leader_client).await?;
    let write_seconds = written.elapsed().as_secs_f64();
    let expected = workloads::Expected::read(&leader_client).await?;
    let raw_expected = count_secrets(&leader_client).await? - secrets_before;
    let mut results = Vec::new();
    for engine in &mut engines {
        let kind = engine.kind();
        say(&format!("{}: catching up", kind.name()));
        let measured = match engine
            .catch_up(&leader, &leader_client, version, CATCH_UP_TIMEOUT)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                // A peer whose walsender crashes the leader (pglogical 2.4.2 does,
                // now and then) is a result of the bench, not a failure of it.
                let Some(crash) = leader_crash(&leader).filter(|_| kind != EngineKind::Pgsieve)
                else {
                    return Err(with_leader_log(e, &leader));
                };
                progress.println(format!("{label}: {}: {crash}", kind.name()));
                leader_client = reconnect(&leader).await?;
                let _ = engine.pause(&leader_client).await;
                results.push(skipped(kind, format!("{CRASHED}: {crash}")));
                continue;
            }
        };
        let (expected_rows, delivered) =
            delivery(engine, &expected, &measured, raw_expected).await?;
        results.push(EngineResult {
            engine: kind,
            skipped: None,
            rate: Some(leader_rows as f64 / measured.catch_up_seconds.max(1e-6)),
            measured: Some(measured),
            expected_rows,
            delivered,
        });
    }
    if !with_pglogical {
        results.push(skipped(
            EngineKind::Pglogical,
            "postgresql-15-pglogical not installed".into(),
        ));
        results.sort_by_key(|e| e.engine);
    }
    drop(engines);
    drop(leader);
    Ok(CaseResult {
        workload,
        schema,
        filter,
        leader_rows,
        write_seconds,
        engines: results,
    })
}

/// The clusters of one case: the leader, then one follower per engine that has
/// one, pglogical's settings where pglogical runs.
fn case_cluster_specs(kinds: &[EngineKind], with_pglogical: bool) -> Vec<ClusterSpec> {
    let mut leader_spec = ClusterSpec::leader("leader");
    if with_pglogical {
        for line in PGLOGICAL_CONF {
            leader_spec = leader_spec.with_conf(line);
        }
    }
    let mut specs = vec![leader_spec];
    for kind in kinds.iter().filter(|k| k.has_follower()) {
        let mut spec = ClusterSpec::follower(kind.name());
        if *kind == EngineKind::Pglogical {
            for line in PGLOGICAL_CONF {
                spec = spec.with_conf(line);
            }
        }
        specs.push(spec);
    }
    specs
}

/// The result row of an engine that was not measured, saying why.
fn skipped(engine: EngineKind, reason: String) -> EngineResult {
    EngineResult {
        engine,
        skipped: Some(reason),
        measured: None,
        rate: None,
        expected_rows: 0,
        delivered: None,
    }
}

/// What an engine should have delivered and what it did: a follower's tables
/// against `expected`, or the raw reader's insert count against `raw_expected`.
async fn delivery(
    engine: &Engine,
    expected: &workloads::Expected,
    measured: &engines::Measured,
    raw_expected: i64,
) -> Result<(i64, Option<workloads::Delivered>), BenchError> {
    let kind = engine.kind();
    Ok(match engine.side() {
        Some(side) => {
            let skip: &[&str] = if kind == EngineKind::Pglogical {
                PGLOGICAL_SKIPS
            } else {
                &[]
            };
            (
                expected.secret_rows(),
                Some(workloads::check_follower(&side.client, expected, skip).await?),
            )
        }
        None => {
            let got = measured.raw_secret_inserts.unwrap_or(0);
            let mut d = workloads::Delivered {
                secret_rows: got,
                ..Default::default()
            };
            if got != raw_expected {
                d.problems.push(format!(
                    "{got} secrets inserts received, want {raw_expected}"
                ));
            }
            (raw_expected, Some(d))
        }
    })
}

/// How a report marks an engine whose catch-up crashed the leader.
pub const CRASHED: &str = "not measured, the leader crashed";

/// The leader's log line about a server process killed by a signal, if any:
/// the postmaster then restarts and every session is closed.
fn leader_crash(leader: &Cluster) -> Option<String> {
    let log = leader.log_tail(400);
    let line = log
        .lines()
        .find(|l| l.contains("was terminated by signal"))?;
    let at = line.find("server process").unwrap_or(0);
    Some(line[at..].to_owned())
}

/// A new session on a leader that is coming back from a crash (recovery takes
/// a few seconds).
async fn reconnect(leader: &Cluster) -> Result<tokio_postgres::Client, BenchError> {
    let started = Instant::now();
    loop {
        match leader.connect(crate::harness::cluster::CONJUR_DB).await {
            Ok(c) => return Ok(c),
            Err(e) if started.elapsed() > Duration::from_secs(120) => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Adds the leader's log tail to an error: a session that closes under the bench
/// is explained there (crash, restart), and the clusters are gone afterwards.
fn with_leader_log(e: BenchError, leader: &Cluster) -> BenchError {
    BenchError::Failed(format!(
        "{e}\n--- leader log tail ---\n{}",
        leader.log_tail(30)
    ))
}

async fn count_secrets(c: &tokio_postgres::Client) -> Result<i64, BenchError> {
    Ok(c.query_one("SELECT count(*) FROM secrets", &[])
        .await
        .ctx(|| "counting secrets".into())?
        .get(0))
}

/// W3: a leader with `w3_secrets` secrets, half the variables in the set;
/// pgsieve running; each round grants one variable outside the set and waits
/// for all its versions on the follower, then revokes it and waits for none.
async fn run_latency(sizes: &Sizes, progress: &ProgressBar) -> Result<LatencyResult, BenchError> {
    progress.set_message("W3: starting clusters");
    let mut clusters = start_clusters(vec![
        ClusterSpec::leader("leader"),
        ClusterSpec::follower("pgsieve"),
    ])
    .await?
    .into_iter();
    let (Some(leader), Some(follower)) = (clusters.next(), clusters.next()) else {
        return Err(BenchError::Failed("W3: clusters missing".into()));
    };
    progress.set_message("W3: loading the schema and secrets");
    let mut leader_client = prepare_conjur(&leader).await?;
    prepare_leader(&leader_client, DEFAULT_PUBLICATION).await?;
    workloads::populate(&mut leader_client, Workload::W3, Filter::Half, sizes).await?;
    progress.set_message("W3: pgsieve initial copy");
    let copy_started = Instant::now();
    let engine = Engine::setup(
        EngineKind::Pgsieve,
        &leader,
        &leader_client,
        Some(follower),
        Schema::Conjur,
        Filter::Half,
    )
    .await?;
    let initial_copy_seconds = copy_started.elapsed().as_secs_f64();
    let side = engine
        .side()
        .ok_or_else(|| BenchError::Failed("W3: pgsieve without follower".into()))?;
    let (_, private) = workloads::specs(Workload::W3, sizes);
    let variables = private.variables();
    let group = workloads::replica_set().data_group();
    let leader_secrets = count_secrets(&leader_client).await?;
    let versions = private.versions as i64;
    let (mut grants, mut revokes) = (Vec::new(), Vec::new());
    for round in 0..sizes.w3_rounds {
        progress.set_message(format!("W3: round {}/{}", round + 1, sizes.w3_rounds));
        let variable = &variables[(round * 7919) % variables.len()];
        let permit = Change::permit_execute(group.clone(), variable.clone());
        crate::harness::workload::apply_changes(&leader_client, None, &[permit]).await?;
        grants.push(
            until_rows(&side.client, variable, |n| n == versions)
                .await
                .map_err(|e| engine.with_log(e))?,
        );
        let deny = Change::deny_execute(group.clone(), variable.clone());
        crate::harness::workload::apply_changes(&leader_client, None, &[deny]).await?;
        revokes.push(
            until_rows(&side.client, variable, |n| n == 0)
                .await
                .map_err(|e| engine.with_log(e))?,
        );
    }
    grants.sort();
    revokes.sort();
    drop(engine);
    Ok(LatencyResult {
        leader_secrets,
        versions_per_variable: versions,
        rounds: sizes.w3_rounds,
        grant_p50_ms: measure::percentile_ms(&grants, 0.5),
        grant_p99_ms: measure::percentile_ms(&grants, 0.99),
        revoke_p50_ms: measure::percentile_ms(&revokes, 0.5),
        revoke_p99_ms: measure::percentile_ms(&revokes, 0.99),
        initial_copy_seconds,
        peers: "PG15 publications and pglogical replication sets have no per-variable grant: \
                their row filters are fixed expressions (native) or re-evaluated only for new \
                changes (pglogical), so a grant brings no existing secret; the seed re-copied \
                whole tables instead."
            .into(),
    })
}

/// Polls the follower every millisecond until `want(rows of variable)`;
/// returns the wait (fails after 60 s).
async fn until_rows(
    follower: &tokio_postgres::Client,
    variable: &str,
    want: impl Fn(i64) -> bool,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    loop {
        let n: i64 = follower
            .query_one(
                "SELECT count(*) FROM secrets WHERE resource_id = $1",
                &[&variable],
            )
            .await
            .ctx(|| format!("counting secrets of {variable}"))?
            .get(0);
        if want(n) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Harness(HarnessError::Timeout {
                what: format!("secrets of {variable} on the follower ({n} rows)"),
                waited: Duration::from_secs(60),
            }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Today's UTC date as YYYY-MM-DD (the tap's timestamp formatting, cut).
fn today() -> String {
    let mut stamp = crate::report::format_timestamp(pgsieve_protocol::PgTimestamp::now());
    stamp.truncate(10);
    stamp
}

/// What the run was measured on.
fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default();
    let postgres = crate::harness::cluster::bindir()
        .ok()
        .and_then(|d| {
            std::process::Command::new(d.join("postgres"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_gib,
        kernel,
        postgres,
        pgsieve_binary: crate::harness::process::pgsieve_binary()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}
