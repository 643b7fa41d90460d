//! `pgsieve run` end to end: a leader, followers fed by the real binary, and
//! oracles (the leader's own rows; native logical replication).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::compare::dump_table;
use pgsieve::harness::conjur::id;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{
    PolicyLoad, add_secret, create_account, load_policy, rotate_secret, set_expiration,
};
use pgsieve::harness::{self, Topology};
use tokio_postgres::Client;

use crate::support::mix::{Mix, streaming_topology};
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

/// pgsieve writes streamed inserts as plain INSERTs (no conflict probe); a
/// row the follower already holds (planted here behind pgsieve's back) must
/// not stop it: the duplicate key makes it resume with upserts through that
/// transaction, and the follower ends equal to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_follower_already_holds_is_upserted_after_a_restart() {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let follower = &followers[0];
    let variables = small_policy(&mut leader, "acme", 1, 2).await;
    let slot = "pgsieve_dup";
    let origin = format!("pgsieve_{slot}");
    let config = PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    );
    let pgsieve = ok(PgsieveProcess::start(&config));
    ok(add_secret(&mut leader, &variables[0], b"first").await);
    wait_caught_up(
        &leader,
        follower,
        &origin,
        &pgsieve,
        Duration::from_secs(60),
    )
    .await;

    // The version the leader's next rotation of variables[0] will get,
    // planted on the follower with other contents.
    let next: i32 = leader
        .query_one(
            "SELECT max(version) + 1 FROM secrets WHERE resource_id = $1",
            &[&variables[0]],
        )
        .await
        .expect("next version")
        .get(0);
    follower
        .batch_execute("SET session_replication_role = replica")
        .await
        .expect("replica role");
    follower
        .execute(
            "INSERT INTO secrets (resource_id, version, value) VALUES ($1, $2, '\\x00'::bytea)",
            &[&variables[0], &next],
        )
        .await
        .expect("planting a row");
    ok(rotate_secret(&leader, &variables[0], b"the leader's", None).await);
    ok(add_secret(&mut leader, &variables[1], b"after it").await);
    wait_caught_up(
        &leader,
        follower,
        &origin,
        &pgsieve,
        Duration::from_secs(60),
    )
    .await;
    assert_tables_equal(&leader, follower, CONJUR_TABLES).await;
    assert!(
        pgsieve.log().contains("resuming with upserts"),
        "the planted row should have made pgsieve resume with upserts:\n{}",
        pgsieve.log()
    );
}

/// Name of the native subscription of the oracle test (also its slot on the leader).
const NATIVE_SUBSCRIPTION: &str = "native";

/// Waits until the native subscriber has every table in state `r` (ready: its
/// initial copy done and handed over to the apply worker) and shows the leader's
/// annotation `sentinel` (committed after everything else; the apply worker applies
/// in commit order), or panics with the subscription's state after `timeout`.
async fn wait_native_caught_up(
    follower: &Client,
    cluster: &harness::Cluster,
    sentinel: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let done: bool = follower
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_subscription_rel WHERE srsubstate <> 'r')
                    AND EXISTS (SELECT 1 FROM pg_subscription_rel)
                    AND EXISTS (SELECT 1 FROM public.annotations WHERE name = $1)",
                &[&sentinel],
            )
            .await
            .unwrap()
            .get(0);
        if done {
            return;
        }
        if Instant::now() > deadline {
            let states: Vec<String> = follower
                .query(
                    "SELECT format('%s: %s %s', srrelid::regclass, srsubstate, srsublsn)
                     FROM pg_subscription_rel ORDER BY 1",
                    &[],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            panic!(
                "the native subscriber did not show sentinel {sentinel} within {timeout:?}; \
                 table states: {states:?}\n--- {} server log (tail) ---\n{}",
                cluster.name(),
                cluster.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// "table, a vs b: N only in a, M only in b; first only in a …; first only in b …",
/// or `None` when equal.
fn table_diff(
    table: &str,
    a_name: &str,
    a: &[String],
    b_name: &str,
    b: &[String],
) -> Option<String> {
    if a == b {
        return None;
    }
    let a_set: BTreeSet<&String> = a.iter().collect();
    let b_set: BTreeSet<&String> = b.iter().collect();
    let first = |v: Vec<&&String>| {
        v.iter()
            .take(3)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n      ")
    };
    let only_a: Vec<&&String> = a_set.difference(&b_set).collect();
    let only_b: Vec<&&String> = b_set.difference(&a_set).collect();
    Some(format!(
        "{table}, {a_name} ({} rows) vs {b_name} ({} rows): {} only on {a_name}, {} only on {b_name}\n    \
         first only on {a_name}:\n      {}\n    first only on {b_name}:\n      {}",
        a.len(),
        b.len(),
        only_a.len(),
        only_b.len(),
        first(only_a),
        first(only_b)
    ))
}

/// Oracle test: with every table published and no filter in play, a
/// follower fed by pgsieve ends equal, table by table, to a follower fed by
/// PostgreSQL's native logical replication from the same leader, after the mixed
/// Conjur workload (a 100 k-row policy load streamed as one transaction, rotations,
/// key-changing updates, an unchanged TOAST value, cascading deletes, TRUNCATE,
/// policy_log trimming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsieve_follower_equals_a_native_subscriber_after_the_mixed_workload() {
    let started = Instant::now();
    // logical_decoding_work_mem = 64kB on the leader: the big load is streamed to
    // both pgsieve and the native subscriber.
    let (topology, mut leader, followers) = streaming_topology(2).await;
    let (by_pgsieve, by_native) = (&followers[0], &followers[1]);
    let spec = PolicySpec::new("acme", 10, 6, 2).with_seed(31);
    ok(spec.populate(&mut leader).await);

    // Both start from the populated leader: each makes its own initial copy.
    by_native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {NATIVE_SUBSCRIPTION} CONNECTION 'host=127.0.0.1 port={} \
             user=postgres dbname={CONJUR_DB}' PUBLICATION {} WITH (streaming = on)",
            topology.leader.port(),
            harness::topology::DEFAULT_PUBLICATION,
        ))
        .await
        .unwrap_or_else(|e| panic!("creating the native subscription: {e:?}"));
    let slot = "pgsieve_native_oracle";
    let origin = format!("pgsieve_{slot}");
    let mut pgsieve = ok(PgsieveProcess::start(&PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    )));

    // Eight rounds: the big load in round 1, cascading deletes in the odd ones,
    // policy_log trimmed in rounds 2 and 5, annotations truncated in round 4.
    let big = PolicySpec::new("bulk", 250, 100, 0).with_seed(3);
    let mut mix = Mix::new(31, spec, Vec::new(), Some(big));
    let setup = started.elapsed();
    let t = Instant::now();
    while mix.rounds() < 8 {
        if let Err(e) = mix.round(&mut leader).await {
            panic!("workload round {}: {e}", mix.rounds());
        }
    }
    let workload = t.elapsed();
    // The sentinel: the last transaction on the leader.
    let sentinel = format!("pgsieve-native-sentinel-{}", std::process::id());
    let inserted = leader
        .execute(
            "INSERT INTO annotations (resource_id, name, value)
             SELECT resource_id, $1, 'last' FROM resources ORDER BY resource_id LIMIT 1",
            &[&sentinel],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1, "no resource to hang the sentinel on");

    let t = Instant::now();
    wait_caught_up(
        &leader,
        by_pgsieve,
        &origin,
        &pgsieve,
        Duration::from_secs(120),
    )
    .await;
    let pgsieve_wait = t.elapsed();
    wait_native_caught_up(
        by_native,
        &topology.followers[1],
        &sentinel,
        Duration::from_secs(120),
    )
    .await;
    let native_wait = t.elapsed();

    let mut diffs = Vec::new();
    let mut counts = Vec::new();
    let mut total = 0;
    for table in CONJUR_TABLES {
        let l = ok(dump_table(&leader, table).await);
        let p = ok(dump_table(by_pgsieve, table).await);
        let n = ok(dump_table(by_native, table).await);
        diffs.extend(table_diff(
            table,
            "pgsieve follower",
            &p,
            "native follower",
            &n,
        ));
        diffs.extend(table_diff(table, "leader", &l, "pgsieve follower", &p));
        diffs.extend(table_diff(table, "leader", &l, "native follower", &n));
        counts.push(format!("{table} {}", l.len()));
        total += l.len();
    }
    assert!(
        diffs.is_empty(),
        "followers differ:\n{}\npgsieve log:\n{}",
        diffs.join("\n"),
        pgsieve.log()
    );
    println!(
        "native oracle: {total} rows in {} tables equal on leader, pgsieve follower and \
         native follower ({}); setup {setup:.1?}, workload {workload:.1?} ({} rounds), then pgsieve caught up \
         in {pgsieve_wait:.1?}, native in {native_wait:.1?}; {:.1?} in all",
        CONJUR_TABLES.len(),
        counts.join(", "),
        mix.rounds(),
        started.elapsed()
    );
    assert!(
        total > 100_000,
        "only {total} rows compared: the workload did not run"
    );
    let log = pgsieve.log();
    assert!(!log.contains("panicked"), "pgsieve panicked:\n{log}");
    by_native
        .batch_execute(&format!("DROP SUBSCRIPTION {NATIVE_SUBSCRIPTION}"))
        .await
        .unwrap();
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
}
