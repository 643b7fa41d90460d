/*!
Fan-out: one leader feeding N followers (1, 2, 4, 8) three ways, on the W1
backlog with half the variables outside the replica set:

- **hub**: one `pgsieve run` with N followers: one slot, one walsender, one
  decode, N sinks;
- **sidecars**: one `pgsieve run` per follower, each with its own slot;
- **native**: one PostgreSQL subscription per follower, each with its own slot.

What matters to an operator is the leader's cost as followers are added: every
slot costs the leader a walsender that decodes the whole WAL again, so leader
CPU grows with N for sidecars and native, and should stay flat for the hub.
Measured per run: leader CPU seconds (every leader process but the bench's own
session), catch-up time until the sentinel is on every follower, pgsieve CPU.
*/

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;
use tokio_postgres::Client;

use super::engines::Feeders;
use super::measure::{self, ChildCpu};
use super::workloads::{self, Expected, Filter, Sizes, Workload, replica_set, sentinel};
use super::{BenchError, start_clusters};
use crate::harness::cluster::{CONJUR_DB, Cluster, ClusterSpec};
use crate::harness::conjur::{prepare_conjur, prepare_leader};
use crate::harness::error::PgContext;
use crate::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use crate::harness::topology::DEFAULT_PUBLICATION;

/// How the followers are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FanoutMode {
    /// One pgsieve, one slot, N followers.
    Hub,
    /// One pgsieve and one slot per follower.
    Sidecars,
    /// One native subscription (and slot) per follower.
    Native,
}

impl FanoutMode {
    /// Every mode, in report order.
    pub const ALL: [FanoutMode; 3] = [FanoutMode::Hub, FanoutMode::Sidecars, FanoutMode::Native];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FanoutMode::Hub => "pgsieve hub",
            FanoutMode::Sidecars => "pgsieve sidecars",
            FanoutMode::Native => "native",
        }
    }
}

/// One mode × follower count.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    /// How the followers were fed.
    pub mode: FanoutMode,
    /// How many followers.
    pub followers: usize,
    /// Leader transactions in the backlog.
    pub transactions: u64,
    /// From resume until the sentinel was on every follower.
    pub catch_up_seconds: f64,
    /// CPU of the leader's processes during the catch-up (walsenders mostly).
    pub leader_cpu_seconds: f64,
    /// CPU of the pgsieve process(es).
    pub pgsieve_cpu_seconds: Option<f64>,
    /// What any follower got wrong (empty when every one is right).
    pub problems: Vec<String>,
}

/// Slot and subscription names start with this, so one pattern finds them all.
const PREFIX: &str = "fan_";
/// Bound on an initial copy or a catch-up.
const TIMEOUT: Duration = Duration::from_secs(1800);

/// Runs every mode for every follower count in `counts`.
pub async fn run(
    sizes: &Sizes,
    counts: &[usize],
    progress: &ProgressBar,
) -> Result<Vec<FanoutResult>, BenchError> {
    let mut results = Vec::new();
    for &n in counts {
        for mode in FanoutMode::ALL {
            progress.set_message(format!("fan-out: {} x{n}", mode.name()));
            let result = run_one(mode, n, sizes, progress).await?;
            progress.println(format!(
                "fan-out {:<16} x{n}: {:.2} s catch-up, leader CPU {:.2} s{}",
                mode.name(),
                result.catch_up_seconds,
                result.leader_cpu_seconds,
                result
                    .pgsieve_cpu_seconds
                    .map_or(String::new(), |c| format!(", pgsieve CPU {c:.2} s"))
            ));
            results.push(result);
        }
    }
    Ok(results)
}

/// A follower cluster, a session for checks and one that waits for the sentinel.
struct Follower {
    cluster: Cluster,
    client: Client,
    waiter: Client,
}

async fn run_one(
    mode: FanoutMode,
    n: usize,
    sizes: &Sizes,
    progress: &ProgressBar,
) -> Result<FanoutResult, BenchError> {
    let mut specs = vec![ClusterSpec::leader("leader")];
    specs.extend((0..n).map(|i| ClusterSpec::follower(format!("f{i}"))));
    let mut clusters = start_clusters(specs).await?.into_iter();
    let leader = clusters
        .next()
        .ok_or_else(|| BenchError::Failed("no leader cluster".into()))?;
    let mut leader_client = prepare_conjur(&leader).await?;
    prepare_leader(&leader_client, DEFAULT_PUBLICATION).await?;
    workloads::populate(&mut leader_client, Workload::W1, Filter::Half, sizes).await?;
    let mut followers = Vec::with_capacity(n);
    for cluster in clusters {
        let client = prepare_conjur(&cluster).await?;
        let waiter = cluster.connect(CONJUR_DB).await?;
        followers.push(Follower {
            cluster,
            client,
            waiter,
        });
    }
    progress.set_message(format!("fan-out: {} x{n}: initial copy", mode.name()));
    let mut feeders = start_feeders(mode, &leader, &leader_client, &followers).await?;
    let clients: Vec<&Client> = followers.iter().map(|f| &f.client).collect();
    let slots = format!("{PREFIX}%");
    wait_everywhere(&followers, 1).await?;
    feeders.pause(&clients, &leader_client, &slots).await?;

    progress.set_message(format!("fan-out: {} x{n}: writing", mode.name()));
    let backlog = Sizes {
        w1_transactions: sizes.fanout_transactions,
        ..*sizes
    };
    let transactions = workloads::write(
        &mut leader_client,
        Workload::W1,
        workloads::Schema::Conjur,
        &backlog,
    )
    .await?;
    let version = workloads::bump_sentinel(&leader_client).await?;
    let expected = Expected::read(&leader_client).await?;

    progress.set_message(format!("fan-out: {} x{n}: catching up", mode.name()));
    let postmaster = measure::postmaster_pid(&leader.data_dir())
        .ok_or_else(|| BenchError::Failed("no leader postmaster pid".into()))?;
    let own = vec![measure::backend_pid(&leader_client).await?];
    let before = ChildCpu::snapshot(postmaster);
    let started = Instant::now();
    feeders.resume(&clients).await?;
    wait_everywhere(&followers, version).await?;
    let catch_up = started.elapsed();
    let leader_cpu = before.spent_until(&ChildCpu::snapshot(postmaster), &own);
    let pgsieve_cpu = feeders.pgsieve_cpu_seconds();
    let mut problems = Vec::new();
    for (i, f) in followers.iter().enumerate() {
        let delivered = workloads::check_follower(&f.client, &expected, &[]).await?;
        problems.extend(delivered.problems.into_iter().map(|p| format!("f{i}: {p}")));
    }
    Ok(FanoutResult {
        mode,
        followers: n,
        transactions,
        catch_up_seconds: catch_up.as_secs_f64(),
        leader_cpu_seconds: leader_cpu,
        pgsieve_cpu_seconds: pgsieve_cpu,
        problems,
    })
}

async fn start_feeders(
    mode: FanoutMode,
    leader: &Cluster,
    leader_client: &Client,
    followers: &[Follower],
) -> Result<Feeders, BenchError> {
    let entry = |i: usize, f: &Follower| {
        FollowerEntry::filtered(&format!("f{i}"), &f.cluster, &replica_set().data_group())
    };
    Ok(match mode {
        FanoutMode::Hub => {
            let entries = followers.iter().enumerate().map(|(i, f)| entry(i, f));
            let config = PgsieveConfig::new(leader, &format!("{PREFIX}hub"), entries.collect());
            Feeders::Pgsieve(vec![PgsieveProcess::start(&config)?])
        }
        FanoutMode::Sidecars => {
            let mut processes = Vec::with_capacity(followers.len());
            for (i, f) in followers.iter().enumerate() {
                let slot = format!("{PREFIX}sidecar_{i}");
                let config = PgsieveConfig::new(leader, &slot, vec![entry(i, f)]);
                processes.push(PgsieveProcess::start(&config)?);
            }
            Feeders::Pgsieve(processes)
        }
        FanoutMode::Native => {
            let publication =
                super::engines::native_publication_sql(&format!("{PREFIX}native"), Filter::Half);
            leader_client
                .batch_execute(&publication)
                .await
                .ctx(|| "creating the fan-out publication".into())?;
            for (i, f) in followers.iter().enumerate() {
                f.client
                    .batch_execute(&format!(
                        "CREATE SUBSCRIPTION {PREFIX}native CONNECTION \
                         'host=127.0.0.1 port={} user=postgres dbname={CONJUR_DB}' \
                         PUBLICATION {PREFIX}native WITH (slot_name = '{PREFIX}native_{i}')",
                        leader.port()
                    ))
                    .await
                    .ctx(|| format!("creating subscription on f{i}"))?;
            }
            Feeders::Native(format!("{PREFIX}native"))
        }
    })
}

/// Waits until the sentinel has `version` on every follower.
async fn wait_everywhere(followers: &[Follower], version: i32) -> Result<(), BenchError> {
    let sentinel = sentinel();
    for f in followers {
        measure::wait_sentinel(&f.waiter, &sentinel, version, TIMEOUT).await?;
    }
    Ok(())
}
