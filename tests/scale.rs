//! Cost at scale, measured rather than asserted on time (ignored by default:
//! minutes each; run with `cargo nextest run -p pgsieve-tests --run-ignored
//! only -E 'test(scale)'`). Sizes come from `PGSIEVE_SCALE_VARIABLES`
//! (default 200 000 variables × 20 versions for the grant, 50 000 × 20 = 1 M
//! secrets for the restart).
//!
//! - One grant that flips every variable of a policy into a set converges
//!   with pgsieve's peak RSS under 64 MiB: backfills are chunked.
//! - A restart with 1 M secrets on the leader reaches streaming (model built
//!   from the leader, follower reconciled) in seconds; the figure is printed.

use std::time::{Duration, Instant};

use pgsieve::harness::Topology;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{Change, add_secret_versions, apply_changes, create_replica_set};
use tokio_postgres::Client;

use crate::support::ok;
use crate::support::scene::wait_streaming;

fn variables(default: usize) -> usize {
    std::env::var("PGSIEVE_SCALE_VARIABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A leader with set `east` and one policy of `count` variables × 20
/// versions (none in east), and a follower with a pgsieve for east.
async fn scene(count: usize) -> (Topology, Client, Client, PolicySpec, ReplicaSet) {
    let topology = ok(Topology::start(1));
    let (mut leader, mut followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    let apps = count.div_ceil(1000);
    let spec = PolicySpec::new("acme", apps, count.div_ceil(apps), 0).with_seed(3);
    ok(spec.populate(&mut leader).await);
    let vars = spec.variables();
    for chunk in vars.chunks(10_000) {
        ok(add_secret_versions(&leader, chunk, 20, 32, 1).await);
    }
    leader.batch_execute("ANALYZE").await.expect("analyze");
    (topology, leader, followers.remove(0), spec, east)
}

async fn secrets_count(c: &Client) -> i64 {
    c.query_one("SELECT count(*) FROM public.secrets", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes: run on demand"]
async fn scale_a_grant_flipping_every_variable_converges_in_bounded_memory() {
    let count = variables(200_000);
    let (topology, leader, follower, spec, east) = scene(count).await;
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_scale",
        vec![FollowerEntry::filtered(
            "f",
            &topology.followers[0],
            &east.data_group(),
        )],
    );
    let pgsieve = ok(PgsieveProcess::start(&config));
    wait_streaming(&pgsieve, 1);
    let started = Instant::now();
    ok(apply_changes(
        &leader,
        None,
        &[Change::GrantRole {
            role: spec.base_policy(),
            member: east.data_group(),
        }],
    )
    .await);
    let want = secrets_count(&leader).await;
    let mut peak = 0u64;
    loop {
        peak = peak.max(pgsieve.peak_rss_kib().unwrap_or(0));
        if secrets_count(&follower).await == want {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "not converged:\n{}",
            pgsieve.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    peak = peak.max(pgsieve.peak_rss_kib().unwrap_or(0));
    eprintln!(
        "SCALE grant: {count} variables x 20 versions ({want} rows) backfilled in {:?}; pgsieve peak RSS {} MiB",
        started.elapsed(),
        peak / 1024
    );
    assert!(peak < 64 * 1024, "peak RSS {} KiB", peak);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes: run on demand"]
async fn scale_restart_to_streaming_with_a_million_secrets() {
    let count = variables(50_000);
    let (topology, leader, follower, spec, east) = scene(count).await;
    // Half the apps in east.
    let changes: Vec<Change> = (0..spec.apps / 2)
        .map(|app| Change::GrantRole {
            role: spec.layer(app),
            member: east.data_group(),
        })
        .collect();
    ok(apply_changes(&leader, None, &changes).await);
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_scale",
        vec![FollowerEntry::filtered(
            "f",
            &topology.followers[0],
            &east.data_group(),
        )],
    );
    let mut pgsieve = ok(PgsieveProcess::start(&config));
    wait_streaming(&pgsieve, 1);
    let held = secrets_count(&follower).await;
    assert!(pgsieve.terminate(Duration::from_secs(30)).is_some());
    let started = Instant::now();
    ok(pgsieve.start_again());
    wait_streaming(&pgsieve, 2);
    eprintln!(
        "SCALE restart: {} secrets on the leader, {held} on the follower: streaming {:?} after the start",
        secrets_count(&leader).await,
        started.elapsed()
    );
}
