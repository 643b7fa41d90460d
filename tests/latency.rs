//! Grant and revoke latency (leader commit → secret visible / gone on the
//! follower) on a leader with 100 k secrets. Figures are printed, never
//! asserted (speed lives in benches); what is asserted is that every grant
//! lands and every revoke purges.

use std::time::{Duration, Instant};

use pgsieve::harness::Topology;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{Change, apply_changes, create_replica_set};
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::ok;

async fn secret_rows(follower: &Client, variable: &str) -> i64 {
    follower
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id = $1",
            &[&variable],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls every millisecond until `want(rows)` holds; returns the wait.
async fn until(
    follower: &Client,
    variable: &str,
    want: impl Fn(i64) -> bool,
    log: &PgsieveProcess,
) -> Duration {
    let start = Instant::now();
    loop {
        if want(secret_rows(follower, variable).await) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no effect after 20 s; log:\n{}",
            log.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_and_revoke_latency_with_100k_secrets() {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    // 100 k secrets: 5 000 variables with Conjur's 20 versions each (a policy load
    // of 100 k variables would only slow the setup, not the measured path).
    let spec = PolicySpec::new("acme", 10, 500, 20).with_seed(3);
    let pop = ok(spec.populate(&mut leader).await);
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_latency",
        vec![FollowerEntry::filtered(
            "east",
            &topology.followers[0],
            &east.data_group(),
        )],
    );
    let pgsieve = ok(PgsieveProcess::start(&config));
    wait_caught_up(
        &leader,
        &followers[0],
        "pgsieve_pgsieve_latency",
        &pgsieve,
        Duration::from_secs(120),
    )
    .await;
    let held: i64 = followers[0]
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "nothing is granted yet");

    let rounds = 40;
    let (mut grants, mut revokes) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let variable = &pop.variables[i * 997 % pop.variables.len()];
        let permit = Change::Permit {
            role: east.data_group(),
            privilege: "execute".into(),
            resource: variable.clone(),
        };
        ok(apply_changes(&leader, None, &[permit]).await);
        grants.push(until(&followers[0], variable, |n| n > 0, &pgsieve).await);
        let deny = Change::Deny {
            role: east.data_group(),
            privilege: "execute".into(),
            resource: variable.clone(),
        };
        ok(apply_changes(&leader, None, &[deny]).await);
        revokes.push(until(&followers[0], variable, |n| n == 0, &pgsieve).await);
    }
    grants.sort();
    revokes.sort();
    println!(
        "grant latency p50 {:?} p99 {:?}; revoke latency p50 {:?} p99 {:?} ({rounds} rounds, {} secrets on the leader)",
        percentile(&grants, 0.5),
        percentile(&grants, 0.99),
        percentile(&revokes, 0.5),
        percentile(&revokes, 0.99),
        pop.secret_rows
    );
}
