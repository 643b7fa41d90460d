//! Bad input is an error, not a panic (invariant 6): each misconfiguration
//! makes `pgsieve run` exit non-zero with one `pgsieve: error:` line naming
//! the cause, and nothing in its output says "panicked".

use std::time::Duration;

use pgsieve::harness::cluster::{Cluster, ClusterSpec, REPLICATOR_PASSWORD};
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::{Topology, conjur};

use crate::support::ok;

/// How long a misconfigured pgsieve may take to give up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// Starts pgsieve with `config`, waits for it to exit and checks the contract:
/// non-zero exit, exactly one `pgsieve: error:` line, no panic, and the error
/// line contains every one of `causes` (case-insensitive). Returns the error line.
fn fails_cleanly(config: &PgsieveConfig, causes: &[&str]) -> String {
    let mut pgsieve = ok(PgsieveProcess::start(config));
    let code = pgsieve.wait_exited(GIVE_UP);
    let log = pgsieve.log();
    let code =
        code.unwrap_or_else(|| panic!("pgsieve still running after {GIVE_UP:?}; log:\n{log}"));
    assert!(
        code.is_some_and(|c| c != 0),
        "pgsieve exited with {code:?}; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "pgsieve panicked:\n{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("pgsieve: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "want one error line; log:\n{log}");
    let line = errors[0];
    let lower = line.to_lowercase();
    for cause in causes {
        assert!(
            lower.contains(&cause.to_lowercase()),
            "the error line does not name {cause:?}: {line}\nlog:\n{log}"
        );
    }
    assert!(
        !line.contains(REPLICATOR_PASSWORD),
        "the error line shows a password: {line}"
    );
    line.to_owned()
}

/// A topology with the Conjur schema and a small policy on the leader.
async fn conjur_topology() -> (
    Topology,
    tokio_postgres::Client,
    Vec<tokio_postgres::Client>,
) {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    ok(PolicySpec::new("acme", 2, 2, 1).populate(&mut leader).await);
    (topology, leader, followers)
}

fn full_config(topology: &Topology, slot: &str) -> PgsieveConfig {
    PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_leader_password() {
    let (topology, _leader, _followers) = conjur_topology().await;
    let mut config = full_config(&topology, "pgsieve_badpw");
    config.leader_url = config
        .leader_url
        .replace(REPLICATOR_PASSWORD, "not-the-password");
    let line = fails_cleanly(&config, &["password authentication failed", "replicator"]);
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_without_logical_wal_level() {
    let clusters = ok(Cluster::start_all(vec![
        ClusterSpec::leader("leader").with_conf("wal_level = replica"),
        ClusterSpec::follower("f1"),
    ]));
    let mut clusters = clusters.into_iter();
    let topology = Topology {
        leader: clusters.next().expect("leader"),
        followers: clusters.collect(),
    };
    let (_leader, _followers) = ok(topology.prepare_conjur().await);
    let line = fails_cleanly(&full_config(&topology, "pgsieve_replica"), &["wal_level"]);
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_table_missing_a_column() {
    let (topology, _leader, followers) = conjur_topology().await;
    followers[0]
        .batch_execute("ALTER TABLE annotations DROP COLUMN policy_id")
        .await
        .unwrap();
    let line = fails_cleanly(
        &full_config(&topology, "pgsieve_nocol"),
        &["annotations", "policy_id"],
    );
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_column_of_another_type() {
    let (topology, _leader, followers) = conjur_topology().await;
    followers[0]
        .batch_execute("ALTER TABLE annotations ALTER COLUMN value TYPE integer USING 0")
        .await
        .unwrap();
    let line = fails_cleanly(
        &full_config(&topology, "pgsieve_type"),
        &["annotations", "value"],
    );
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_leader() {
    let follower = ok(Cluster::start(ClusterSpec::follower("f1")));
    ok(conjur::prepare_conjur(&follower).await);
    // A port nothing listens on: bound, read, closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let config = PgsieveConfig {
        leader_url: format!(
            "postgresql://replicator:{REPLICATOR_PASSWORD}@127.0.0.1:{port}/conjur"
        ),
        slot: "pgsieve_unreachable".into(),
        publication: "pgsieve".into(),
        followers: vec![FollowerEntry::full("f1", &follower)],
        extra: String::new(),
    };
    let line = fails_cleanly(&config, &["refused", &port.to_string()]);
    println!("{line}");
}
