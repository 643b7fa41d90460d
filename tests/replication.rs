//! `pgsieve run` end to end: a leader, followers fed by the real binary, and
//! oracles (the leader's own rows; native logical replication).

use std::time::Duration;

use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::compare::dump_table;
use pgsieve::harness::conjur::id;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{
    PolicyLoad, add_secret, create_account, load_policy, rotate_secret, set_expiration,
};
use pgsieve::harness::{self, Topology};
use pgsieve::setup::CONJUR_TABLES;
use tokio_postgres::Client;

use crate::support::ok;

/// Waits until the follower's origin has recorded the leader's current WAL
/// insert position ([`pgsieve::harness::wait_caught_up`]), or panics with the
/// pgsieve log after `timeout`.
pub async fn wait_caught_up(
    leader: &Client,
    follower: &Client,
    origin: &str,
    pgsieve: &PgsieveProcess,
    timeout: Duration,
) {
    if let Err(e) = harness::wait_caught_up(leader, follower, origin, timeout).await {
        panic!("{e}; pgsieve log:\n{}", pgsieve.log());
    }
}

/// Asserts every published table is equal on leader and follower.
pub async fn assert_tables_equal(leader: &Client, follower: &Client, tables: &[&str]) {
    for table in tables {
        let (l, f) = (
            ok(dump_table(leader, table).await),
            ok(dump_table(follower, table).await),
        );
        assert!(
            l == f,
            "table {table} differs: leader {} rows, follower {} rows\nfirst leader-only: {:?}\nfirst follower-only: {:?}",
            l.len(),
            f.len(),
            l.iter().find(|r| !f.contains(r)),
            f.iter().find(|r| !l.contains(r))
        );
    }
}

async fn small_policy(leader: &mut Client, account: &str, apps: usize, vars: usize) -> Vec<String> {
    ok(create_account(leader, account).await);
    let admin = id(account, "user", "admin");
    let root = id(account, "policy", "root");
    let mut load = PolicyLoad::new(root.clone(), admin.clone());
    let mut variables = Vec::new();
    for a in 0..apps {
        let policy = id(account, "policy", &format!("app{a}"));
        load.role_resource(&policy, &admin, Some(&root));
        let layer = id(account, "layer", &format!("app{a}/hosts"));
        load.role_resource(&layer, &policy, Some(&policy));
        for v in 0..vars {
            let var = id(account, "variable", &format!("app{a}/secret{v}"));
            load.resource(&var, &policy, Some(&policy));
            load.permit(&layer, "execute", &var, Some(&policy));
            load.annotate(&var, "conjur/kind", "password", Some(&policy));
            variables.push(var);
        }
    }
    ok(load_policy(leader, &load).await);
    variables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_follower_equals_leader_after_mixed_workload() {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let follower = &followers[0];
    // Data before pgsieve starts: goes through the initial copy.
    let variables = small_policy(&mut leader, "acme", 3, 4).await;
    for v in &variables[..6] {
        ok(add_secret(&mut leader, v, b"before-start").await);
    }
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_mixed",
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    );
    let pgsieve = ok(PgsieveProcess::start(&config));
    // Streamed changes: secrets API writes, rotations, expirations, a big value.
    for (i, v) in variables.iter().enumerate() {
        ok(add_secret(&mut leader, v, format!("value-{i}").as_bytes()).await);
    }
    ok(rotate_secret(&leader, &variables[0], &vec![7u8; 20_000], None).await);
    ok(set_expiration(&leader, &variables[0], Some(std::time::SystemTime::now())).await);
    leader
        .batch_execute("DELETE FROM resources WHERE resource_id = 'acme:policy:app2'")
        .await
        .unwrap();
    wait_caught_up(
        &leader,
        follower,
        "pgsieve_pgsieve_mixed",
        &pgsieve,
        Duration::from_secs(60),
    )
    .await;
    assert_tables_equal(&leader, follower, CONJUR_TABLES).await;
    let _ = CONJUR_DB;
}
