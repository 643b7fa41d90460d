/*!
`pgsieve demo`: partial replication on one machine with nothing but the installed
PostgreSQL. Starts a leader and two followers (throwaway clusters from the harness),
loads a sample Conjur policy with two replica sets, runs one pgsieve sidecar per
follower inside this process, shows which variables' secrets each follower holds
(checked against the from-scratch oracle), then grants and revokes live and prints how
long each took to reach the follower. Everything is removed at the end.

Secret values are never read into this module's output: follower holdings are listed
by variable id and version count, and the oracle check compares value digests without
printing them. Everything reusable (clusters, workloads, waiting, the oracle) lives in
[`crate::harness`]; this file only tells the story.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::config::{Config, RawConfig};
use crate::conjur::CONJUR_TABLES;
use crate::harness::compare::follower_diff;
use crate::harness::conjur::ReplicaSet;
use crate::harness::generate::{PolicySpec, Population};
use crate::harness::process::{FollowerEntry, PgsieveConfig};
use crate::harness::workload::{Change, apply_changes, create_replica_set};
use crate::harness::{
    HarnessError, OracleRule, Topology, variables_in_set, wait_caught_up, wait_initial_copy,
};

/// How long any single wait (catch-up, a grant or revoke arriving) may take before the
/// demo gives up: far above what a healthy local setup needs.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// How often the follower is polled while a grant or revoke is in flight; sets the
/// resolution of the printed latency.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// The sample policy: apps × variables × versions, in account `acme`.
const APPS: usize = 4;
const VARIABLES_PER_APP: usize = 5;
const VERSIONS: usize = 2;

/// Options of `pgsieve demo`.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Keep clusters and pgsieve running after the scenario until Ctrl-C, so the
    /// databases can be inspected with psql.
    pub keep_running: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A harness step (clusters, schema, workload, waiting) failed.
    #[error("{step}: {source}")]
    Harness {
        /// What the demo was doing.
        step: &'static str,
        /// The harness's error.
        source: HarnessError,
    },
    /// The generated pgsieve configuration did not resolve.
    #[error("pgsieve configuration for follower {follower}: {message}")]
    Config {
        /// The follower.
        follower: String,
        /// The parser's or resolver's message.
        message: String,
    },
    /// A pgsieve sidecar stopped while the demo needed it.
    #[error("pgsieve for follower {follower} stopped: {message}")]
    Pipeline {
        /// The follower.
        follower: String,
        /// Its error.
        message: String,
    },
    /// A follower does not hold what the oracle says it must.
    #[error("follower {follower} disagrees with the leader and the oracle: {detail}")]
    Mismatch {
        /// The follower.
        follower: String,
        /// Which tables or variables differ (never values).
        detail: String,
    },
    /// A grant or revoke did not reach the follower in time.
    #[error("{what} did not reach follower {follower} within {WAIT_LIMIT:?}")]
    NotReplicated {
        /// The follower.
        follower: String,
        /// The change.
        what: String,
    },
    /// A direct query of the demo failed.
    #[error("{what}: {source}")]
    Query {
        /// What was queried.
        what: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// Writing the demo's report failed.
    #[error("writing the demo's output: {0}")]
    Output(#[from] std::io::Error),
    /// A background task could not be joined.
    #[error("{0}")]
    Task(String),
}

/// Attaches the demo step to a harness result.
trait Step<T> {
    fn step(self, step: &'static str) -> Result<T, DemoError>;
}

impl<T> Step<T> for Result<T, HarnessError> {
    fn step(self, step: &'static str) -> Result<T, DemoError> {
        self.map_err(|source| DemoError::Harness { step, source })
    }
}

fn query_err(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Query { what, source }
}

/// `pgsieve demo` as the binary runs it: pgsieve's own logging at `warn` (unless
/// `PGSIEVE_LOG` says otherwise) so the report stays readable, report on stdout.
pub async fn run(options: &DemoOptions) -> Result<(), DemoError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSIEVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A subscriber may already be installed (when embedded); the demo then uses it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut stdout = std::io::stdout();
    run_with_output(options, &mut stdout).await
}

/// The whole demo, writing its report to `out`. Clusters and sidecars are stopped and
/// removed on every path, failures included.
pub async fn run_with_output(
    options: &DemoOptions,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let started = Instant::now();
    writeln!(out, "== clusters ==")?;
    let topology = tokio::task::spawn_blocking(|| Topology::start(2))
        .await
        .map_err(|e| DemoError::Task(format!("starting the clusters: {e}")))?
        .step("starting a leader and two followers with the installed PostgreSQL")?;
    writeln!(
        out,
        "  leader   127.0.0.1:{}  (wal_level = logical)",
        topology.leader.port()
    )?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut sidecars = Sidecars::new(shutdown, shutdown_rx);
    let result = scenario(&topology, options, out, &mut sidecars).await;
    sidecars.stop().await;
    let _ = tokio::task::spawn_blocking(move || drop(topology)).await;
    writeln!(out, "\n== cleanup ==")?;
    writeln!(
        out,
        "  pgsieve stopped; leader and followers stopped and their directories removed"
    )?;
    if result.is_ok() {
        writeln!(
            out,
            "\ndemo finished in {:.1} s",
            started.elapsed().as_secs_f64()
        )?;
    }
    result
}

/// One follower of the demo: its replica set, cluster index and SQL session.
struct DemoFollower {
    set: ReplicaSet,
    client: Client,
    origin: String,
}

/// The story, chapter by chapter; each chapter is a helper so it reads as a table of
/// contents.
async fn scenario(
    topology: &Topology,
    options: &DemoOptions,
    out: &mut (dyn Write + Send),
    sidecars: &mut Sidecars,
) -> Result<(), DemoError> {
    let sets = [ReplicaSet::new("east"), ReplicaSet::new("west")];
    for (set, cluster) in sets.iter().zip(&topology.followers) {
        writeln!(
            out,
            "  follower {}  127.0.0.1:{}  (cluster {})",
            set.name,
            cluster.port(),
            cluster.name()
        )?;
    }
    let (mut leader, follower_clients) = topology
        .prepare_conjur()
        .await
        .step("loading the Conjur schema and the publication")?;
    writeln!(
        out,
        "  Conjur schema loaded everywhere; publication \"pgsieve\" on the leader"
    )?;

    let (spec, pop) = load_policy(out, &mut leader, &sets).await?;
    let followers = start_sidecars(topology, out, sidecars, &sets, follower_clients).await?;

    writeln!(out, "\n== what each follower holds ==")?;
    let leader_holds = holdings_of(&leader, "the leader").await?;
    writeln!(
        out,
        "  leader: secrets of {} variables ({} rows)",
        leader_holds.len(),
        leader_holds.values().sum::<i64>()
    )?;
    for f in &followers {
        report_follower(out, &leader, f, &leader_holds, &pop).await?;
    }

    let variable = spec.variable(3, 0);
    live_grant(out, &leader, sidecars, &followers, &variable).await?;
    live_revoke(out, &leader, sidecars, &followers[0], &variable).await?;
    final_check(out, &leader, sidecars, &followers).await?;
    if options.keep_running {
        keep_running(topology, out, sidecars, &followers).await?;
    }
    Ok(())
}

/// The policy and the replica sets, loaded before pgsieve starts so they arrive
/// through the initial copy.
async fn load_policy(
    out: &mut (dyn Write + Send),
    leader: &mut Client,
    sets: &[ReplicaSet; 2],
) -> Result<(PolicySpec, Population), DemoError> {
    writeln!(out, "\n== policy ==")?;
    let spec = PolicySpec::new("acme", APPS, VARIABLES_PER_APP, VERSIONS).with_seed(1);
    let pop = spec
        .populate(&mut *leader)
        .await
        .step("loading the sample policy")?;
    writeln!(
        out,
        "  account acme: {APPS} apps ({}/app-NNNN) x {VARIABLES_PER_APP} variables, {VERSIONS} secret versions each = {} variables, {} secret rows",
        spec.base,
        pop.variables.len(),
        pop.secret_rows
    )?;
    // east holds apps 0 and 2, west apps 1 and 2 (overlap), app 3 is in no set.
    let holdings: [&[usize]; 2] = [&[0, 2], &[1, 2]];
    for (set, apps) in sets.iter().zip(holdings) {
        create_replica_set(&mut *leader, set)
            .await
            .step("creating a replica set")?;
        let changes: Vec<Change> = apps
            .iter()
            .map(|&app| Change::GrantRole {
                role: spec.layer(app),
                member: set.data_group(),
            })
            .collect();
        apply_changes(&*leader, None, &changes)
            .await
            .step("granting layers to a replica set")?;
        let names: Vec<String> = apps.iter().map(|&a| spec.app_name(a)).collect();
        writeln!(
            out,
            "  replica set {:<4}  data group {}\n                    member of the layers of {}",
            set.name,
            set.data_group(),
            names.join(", ")
        )?;
    }
    writeln!(out, "  {}: in no replica set", spec.app_name(3))?;
    Ok((spec, pop))
}

/// One pgsieve sidecar per follower, in this process, then the wait for both initial
/// copies: the live chapters need followers that are streaming.
async fn start_sidecars(
    topology: &Topology,
    out: &mut (dyn Write + Send),
    sidecars: &mut Sidecars,
    sets: &[ReplicaSet; 2],
    follower_clients: Vec<Client>,
) -> Result<Vec<DemoFollower>, DemoError> {
    writeln!(out, "\n== pgsieve ==")?;
    let mut followers = Vec::new();
    for ((i, set), client) in sets.iter().enumerate().zip(follower_clients) {
        let config = sidecar_config(topology, i, set)?;
        writeln!(
            out,
            "  {}: slot {} -> follower {} (replica set {}, privilege execute)",
            set.name, config.leader.slot, set.name, set.name
        )?;
        let origin = config.origin_name();
        sidecars.spawn(set.name.clone(), config);
        followers.push(DemoFollower {
            set: set.clone(),
            client,
            origin,
        });
    }
    let copy_started = Instant::now();
    for f in &followers {
        sidecars
            .guard(async {
                wait_initial_copy(&f.client, &f.origin, WAIT_LIMIT)
                    .await
                    .step("waiting for the initial copy")
            })
            .await?;
    }
    writeln!(
        out,
        "  initial copy done, both followers streaming ({} ms)",
        copy_started.elapsed().as_millis()
    )?;
    Ok(followers)
}

/// Grants east execute on `variable` live and times its arrival; west, not in the
/// set, must not receive it.
async fn live_grant(
    out: &mut (dyn Write + Send),
    leader: &Client,
    sidecars: &mut Sidecars,
    followers: &[DemoFollower],
    variable: &str,
) -> Result<(), DemoError> {
    let east = &followers[0];
    let west = &followers[1];
    writeln!(out, "\n== live grant ==")?;
    writeln!(out, "  granting east execute on {variable}")?;
    let grant = Change::permit_execute(east.set.data_group(), variable.to_owned());
    let sent = Instant::now();
    apply_changes(leader, None, std::slice::from_ref(&grant))
        .await
        .step("granting on the leader")?;
    let commit_ms = ms(sent.elapsed());
    let rows = sidecars
        .guard(until_held(east, variable, true, "the grant"))
        .await?;
    writeln!(
        out,
        "  east holds it {:.1} ms after the grant was sent (leader commit took {commit_ms:.1} ms; {rows} secret rows copied)",
        ms(sent.elapsed())
    )?;
    sidecars
        .guard(async {
            wait_caught_up(leader, &west.client, &west.origin, WAIT_LIMIT)
                .await
                .step("waiting for west")
        })
        .await?;
    let west_rows = secret_rows(&west.client, variable).await?;
    writeln!(
        out,
        "  west holds {west_rows} secret rows of it (not in west's set)"
    )?;
    Ok(())
}

/// Revokes east's execute on `variable` live and times the secrets' removal.
async fn live_revoke(
    out: &mut (dyn Write + Send),
    leader: &Client,
    sidecars: &mut Sidecars,
    east: &DemoFollower,
    variable: &str,
) -> Result<(), DemoError> {
    writeln!(out, "\n== live revoke ==")?;
    writeln!(out, "  revoking east's execute on {variable}")?;
    let revoke = Change::deny_execute(east.set.data_group(), variable.to_owned());
    let sent = Instant::now();
    apply_changes(leader, None, std::slice::from_ref(&revoke))
        .await
        .step("revoking on the leader")?;
    let commit_ms = ms(sent.elapsed());
    sidecars
        .guard(until_held(east, variable, false, "the revoke"))
        .await?;
    writeln!(
        out,
        "  east no longer holds it {:.1} ms after the revoke was sent (leader commit took {commit_ms:.1} ms)",
        ms(sent.elapsed())
    )?;
    Ok(())
}

/// After the live changes, every follower must again equal the leader and the oracle.
async fn final_check(
    out: &mut (dyn Write + Send),
    leader: &Client,
    sidecars: &mut Sidecars,
    followers: &[DemoFollower],
) -> Result<(), DemoError> {
    writeln!(out, "\n== final check ==")?;
    for f in followers {
        sidecars
            .guard(async {
                wait_caught_up(leader, &f.client, &f.origin, WAIT_LIMIT)
                    .await
                    .step("waiting for the followers after the revoke")
            })
            .await?;
        check_follower(leader, f).await?;
        writeln!(
            out,
            "  follower {}: every table equals the leader's; secrets equal the oracle's projection",
            f.set.name
        )?;
    }
    Ok(())
}

/// `--keep-running`: prints how to reach each database and waits for Ctrl-C, so the
/// clusters can be inspected before cleanup.
async fn keep_running(
    topology: &Topology,
    out: &mut (dyn Write + Send),
    sidecars: &mut Sidecars,
    followers: &[DemoFollower],
) -> Result<(), DemoError> {
    writeln!(out, "\n== running ==")?;
    writeln!(
        out,
        "  psql postgresql://postgres@127.0.0.1:{}/conjur   (leader)",
        topology.leader.port()
    )?;
    for (f, cluster) in followers.iter().zip(&topology.followers) {
        writeln!(
            out,
            "  psql postgresql://postgres@127.0.0.1:{}/conjur   (follower {})",
            cluster.port(),
            f.set.name
        )?;
    }
    writeln!(out, "  press Ctrl-C to stop and clean up")?;
    out.flush()?;
    sidecars
        .guard(async {
            tokio::signal::ctrl_c()
                .await
                .map_err(|e| DemoError::Task(format!("waiting for Ctrl-C: {e}")))
        })
        .await?;
    Ok(())
}

/// The `run` config of the sidecar for follower `index` and `set`, through the same
/// TOML parsing and resolution as `pgsieve run -c` (environment ignored, so a
/// `PGSIEVE_*` variable of the caller cannot point the demo elsewhere).
fn sidecar_config(
    topology: &Topology,
    index: usize,
    set: &ReplicaSet,
) -> Result<Config, DemoError> {
    let config_err = |message: String| DemoError::Config {
        follower: set.name.clone(),
        message,
    };
    let cluster = topology
        .followers
        .get(index)
        .ok_or_else(|| config_err(format!("no follower cluster #{index}")))?;
    let entry = FollowerEntry::filtered(&set.name, cluster, &set.data_group());
    let toml = PgsieveConfig::new(
        &topology.leader,
        &format!("pgsieve_{}", set.name),
        vec![entry],
    )
    .to_toml();
    let raw = RawConfig::parse(&toml).map_err(config_err)?;
    Config::resolve_with_env(&raw, |_| None).map_err(|e| config_err(e.to_string()))
}

/// Secret rows per variable id (values are not read).
async fn holdings_of(client: &Client, who: &str) -> Result<BTreeMap<String, i64>, DemoError> {
    let rows = client
        .query(
            "SELECT resource_id, count(*) FROM secrets GROUP BY resource_id ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_err(format!("reading the secrets held by {who}")))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Prints which variables a follower holds, app by app, and the oracle's verdict.
async fn report_follower(
    out: &mut (dyn Write + Send),
    leader: &Client,
    f: &DemoFollower,
    leader_holds: &BTreeMap<String, i64>,
    pop: &Population,
) -> Result<(), DemoError> {
    let held = holdings_of(&f.client, &format!("follower {}", f.set.name)).await?;
    writeln!(
        out,
        "  follower {}: secrets of {} of {} variables ({} rows)",
        f.set.name,
        held.len(),
        leader_holds.len(),
        held.values().sum::<i64>()
    )?;
    let mut by_app: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in held.keys() {
        let identifier = id.splitn(3, ':').nth(2).unwrap_or(id);
        let (app, var) = identifier.rsplit_once('/').unwrap_or(("", identifier));
        by_app.entry(app).or_default().push(var);
    }
    for (app, vars) in &by_app {
        writeln!(out, "    {app}: {}", vars.join(" "))?;
    }
    check_follower(leader, f).await?;
    let expected = variables_in_set(leader, &f.set.data_group(), OracleRule::Execute)
        .await
        .step("querying the oracle")?;
    let expected_held = pop
        .variables
        .iter()
        .filter(|v| expected.contains(*v) && leader_holds.contains_key(*v))
        .count();
    writeln!(
        out,
        "    oracle: {expected_held} variables in set {} -> match; every other table equals the leader's",
        f.set.name
    )?;
    Ok(())
}

/// Fails unless the follower equals the leader on every published table, `secrets`
/// being the leader's rows of variables the oracle puts in the follower's set. Values
/// are compared by digest and never printed.
async fn check_follower(leader: &Client, f: &DemoFollower) -> Result<(), DemoError> {
    let mismatch = |detail: String| DemoError::Mismatch {
        follower: f.set.name.clone(),
        detail,
    };
    let other_tables: Vec<&str> = CONJUR_TABLES
        .iter()
        .copied()
        .filter(|t| *t != "secrets")
        .collect();
    let diff = follower_diff(
        leader,
        &f.client,
        &other_tables,
        &f.set.data_group(),
        OracleRule::Execute,
        &[],
    )
    .await
    .step("comparing the follower's tables with the leader's")?;
    if !diff.is_empty() {
        return Err(mismatch(diff.join("; ")));
    }
    let in_set = variables_in_set(leader, &f.set.data_group(), OracleRule::Execute)
        .await
        .step("querying the oracle")?;
    let digests = "SELECT resource_id, version, md5(value) FROM secrets";
    let want: BTreeSet<(String, i32, String)> = leader
        .query(digests, &[])
        .await
        .map_err(query_err("reading the leader's secret digests"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .filter(|(id, _, _): &(String, i32, String)| in_set.contains(id))
        .collect();
    let got: BTreeSet<(String, i32, String)> = f
        .client
        .query(digests, &[])
        .await
        .map_err(query_err("reading the follower's secret digests"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    if want != got {
        let show = |rows: Vec<&(String, i32, String)>| {
            rows.iter()
                .take(5)
                .map(|(id, version, _)| format!("{id} v{version}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(mismatch(format!(
            "secrets: missing [{}], unexpected or different [{}]",
            show(want.difference(&got).collect()),
            show(got.difference(&want).collect())
        )));
    }
    Ok(())
}

async fn secret_rows(client: &Client, variable: &str) -> Result<i64, DemoError> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id = $1",
            &[&variable],
        )
        .await
        .map_err(query_err(format!("counting the secrets of {variable}")))?
        .get(0))
}

/// Polls the follower every [`POLL_EVERY`] until it holds (`present`) or no longer
/// holds the variable's secrets; returns the row count then.
async fn until_held(
    f: &DemoFollower,
    variable: &str,
    present: bool,
    what: &str,
) -> Result<i64, DemoError> {
    let statement = f
        .client
        .prepare("SELECT count(*) FROM secrets WHERE resource_id = $1")
        .await
        .map_err(query_err("preparing the follower poll"))?;
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let rows: i64 = f
            .client
            .query_one(&statement, &[&variable])
            .await
            .map_err(query_err(format!("polling follower {}", f.set.name)))?
            .get(0);
        if (rows > 0) == present {
            return Ok(rows);
        }
        if Instant::now() > deadline {
            return Err(DemoError::NotReplicated {
                follower: f.set.name.clone(),
                what: format!("{what} of {variable}"),
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The in-process `pgsieve run` tasks, one per follower, and the channel through
/// which a stopped one reports.
struct Sidecars {
    shutdown: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    failed_tx: mpsc::Sender<(String, String)>,
    failed: mpsc::Receiver<(String, String)>,
}

impl Sidecars {
    fn new(shutdown: watch::Sender<bool>, shutdown_rx: watch::Receiver<bool>) -> Self {
        let (failed_tx, failed) = mpsc::channel(8);
        Self {
            shutdown,
            shutdown_rx,
            tasks: Vec::new(),
            failed_tx,
            failed,
        }
    }

    /// Starts `pgsieve run` for `config` as a task; an early end is reported.
    fn spawn(&mut self, follower: String, config: Config) {
        let shutdown = self.shutdown_rx.clone();
        let failed = self.failed_tx.clone();
        self.tasks.push(tokio::spawn(async move {
            let result = crate::run::run(config, shutdown.clone()).await;
            if !*shutdown.borrow() {
                let message = match result {
                    Ok(()) => "it ended without being asked to".to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = failed.try_send((follower, message));
            }
        }));
    }

    /// Runs `fut`, failing early if a sidecar stops meanwhile.
    async fn guard<T>(
        &mut self,
        fut: impl Future<Output = Result<T, DemoError>>,
    ) -> Result<T, DemoError> {
        tokio::select! {
            result = fut => result,
            Some((follower, message)) = self.failed.recv() => {
                Err(DemoError::Pipeline { follower, message })
            }
        }
    }

    /// Asks every sidecar to stop and waits (briefly) for them.
    async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
