//! `[metrics] listen` end to end: the real binary, a replica-set follower, and
//! a workload whose every `secrets` row is counted here and then compared
//! with `/metrics`; `/healthz` and `/readyz` before streaming, while
//! streaming, while the follower lags behind a lock, and while the follower
//! is down.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::PgsieveProcess;
use pgsieve::harness::workload::{
    Change, add_secret, apply_changes, create_replica_set, fake_ciphertext, rotate_secret,
    set_expiration,
};
use pgsieve::harness::{OracleRule, Topology, variables_in_set, wait_initial_copy};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::ok;
use crate::support::probe::{
    PROBE, count, free_port, get, lock_secrets, poll, probed_config, sample,
};

/// `[metrics] max_lag_bytes` of the test: above idle noise, below one big value.
const MAX_LAG: u64 = 64 * 1024;

async fn secrets_rows(leader: &Client, variables: &BTreeSet<String>) -> u64 {
    let ids: Vec<&String> = variables.iter().collect();
    let n: i64 = leader
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id = ANY($1)",
            &[&ids],
        )
        .await
        .expect("counting secrets")
        .get(0);
    n as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_workload_and_probes_follow_the_pipeline() {
    let started = Instant::now();
    let mut topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    let spec = PolicySpec::new("acme", 4, 5, 2).with_seed(5);
    let pop = ok(spec.populate(&mut leader).await);
    let group = east.data_group();
    let grant = |app: usize| Change::GrantRole {
        role: pop.layers[app].clone(),
        member: group.clone(),
    };
    ok(apply_changes(&leader, None, &[grant(0), grant(1)]).await);

    // Before streaming: the follower's tables are locked, so the initial
    // copy waits; the process serves probes meanwhile.
    let blocker = lock_secrets(&topology.followers[0]).await;
    let port = free_port();
    let slot = "pgsieve_metrics";
    let origin = format!("pgsieve_{slot}");
    // No heartbeats: this test counts every leader transaction it makes.
    let config = probed_config(
        &topology,
        slot,
        ("east", &group),
        port,
        &format!("max_lag_bytes = {MAX_LAG}\n"),
        "[heartbeat]\ninterval_ms = 0\n",
    );
    let pgsieve = ok(PgsieveProcess::start(&config));
    let health = poll(port, "/healthz", "health before streaming", &pgsieve, |r| {
        r.status == 200
    })
    .await;
    assert_eq!(health.body, "ok\n");
    let ready = get(port, "/readyz").await.expect("readyz answers");
    assert_eq!(ready.status, 503, "ready before streaming: {ready:?}");
    assert!(ready.body.starts_with("not streaming"), "{ready:?}");
    let early = get(port, "/metrics").await.expect("metrics answer");
    assert_eq!(early.status, 200);
    assert_eq!(sample(&early.body, "pgsieve_streaming", &[]), Some(0.0));
    blocker.batch_execute("COMMIT").await.expect("unlocking");
    ok(wait_initial_copy(&followers[0], &origin, PROBE).await);
    poll(port, "/readyz", "ready once streaming", &pgsieve, |r| {
        r.status == 200 && r.body == "ready\n"
    })
    .await;

    // Streamed rows: per app a rotation, an API write, an expiration on
    // every version and a version deleted; apps 0 and 1 are in the set.
    let in_before = ok(variables_in_set(&leader, &group, OracleRule::Execute).await);
    let (mut rows_in, mut rows_out, mut transactions) = (0u64, 0u64, 0u64);
    for app in 0..spec.apps {
        let v = |i: usize| spec.variable(app, i);
        ok(rotate_secret(&leader, &v(0), b"rotated", None).await);
        ok(add_secret(&mut leader, &v(1), b"api write").await);
        let expired = ok(set_expiration(&leader, &v(2), Some(SystemTime::now())).await);
        let deleted = leader
            .execute(
                "DELETE FROM secrets WHERE resource_id = $1 AND version = 1",
                &[&v(3)],
            )
            .await
            .expect("deleting a version");
        let rows = 2 + expired + deleted;
        transactions += 4;
        if in_before.contains(&v(0)) {
            rows_in += rows;
        } else {
            rows_out += rows;
        }
    }
    assert!(rows_in > 0 && rows_out > 0, "{rows_in} in, {rows_out} out");

    // A grant (app 2 enters: backfill) and a revoke (app 1 leaves: purge).
    ok(apply_changes(&leader, None, &[grant(2)]).await);
    ok(apply_changes(
        &leader,
        None,
        &[Change::RevokeRole {
            role: pop.layers[1].clone(),
            member: group.clone(),
        }],
    )
    .await);
    transactions += 2;
    let in_after = ok(variables_in_set(&leader, &group, OracleRule::Execute).await);
    let backfilled: BTreeSet<String> = in_after.difference(&in_before).cloned().collect();
    let purged: BTreeSet<String> = in_before.difference(&in_after).cloned().collect();
    assert_eq!((backfilled.len(), purged.len()), (5, 5));
    let (backfill_rows, purge_rows) = (
        secrets_rows(&leader, &backfilled).await,
        secrets_rows(&leader, &purged).await,
    );
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, PROBE).await;

    // Counters settle right after the follower commit that the wait saw.
    let f = ("follower", "east");
    let secrets = ("table", "public.secrets");
    let memberships = ("table", "public.role_memberships");
    let seen = rows_in + rows_out;
    let scraped = poll(
        port,
        "/metrics",
        "counters of the workload",
        &pgsieve,
        |r| {
            count(&r.body, "pgsieve_rows_seen_total", &[secrets]) >= seen
                && count(&r.body, "pgsieve_leader_transactions_total", &[f]) >= transactions
                && sample(&r.body, "pgsieve_lag_bytes", &[f]).is_some_and(|b| b <= 8192.0)
        },
    )
    .await;
    let m = scraped.body.as_str();
    assert_eq!(count(m, "pgsieve_rows_seen_total", &[secrets]), seen, "{m}");
    assert_eq!(
        count(m, "pgsieve_rows_forwarded_total", &[f, secrets]),
        rows_in,
        "{m}"
    );
    assert_eq!(
        count(m, "pgsieve_rows_dropped_total", &[f, secrets]),
        rows_out,
        "{m}"
    );
    assert_eq!(
        count(m, "pgsieve_rows_seen_total", &[memberships]),
        2,
        "{m}"
    );
    assert_eq!(
        count(m, "pgsieve_rows_forwarded_total", &[f, memberships]),
        2,
        "{m}"
    );
    assert_eq!(
        count(m, "pgsieve_rows_dropped_total", &[f, memberships]),
        0,
        "{m}"
    );
    assert_eq!(count(m, "pgsieve_backfills_total", &[f]), 5, "{m}");
    assert_eq!(
        count(m, "pgsieve_backfill_rows_total", &[f]),
        backfill_rows,
        "{m}"
    );
    assert_eq!(count(m, "pgsieve_purges_total", &[f]), 5, "{m}");
    assert_eq!(
        count(m, "pgsieve_purge_rows_total", &[f]),
        purge_rows,
        "{m}"
    );
    let applied = count(m, "pgsieve_leader_transactions_total", &[f]);
    assert_eq!(applied, transactions, "{m}");
    let commits = count(m, "pgsieve_follower_commits_total", &[f]);
    assert!(commits >= 1, "{m}");
    // Every leader transaction is in exactly one follower commit.
    let group_size = "pgsieve_group_commit_transactions";
    assert_eq!(count(m, &format!("{group_size}_sum"), &[f]), applied, "{m}");
    assert_eq!(
        count(m, &format!("{group_size}_count"), &[f]),
        commits,
        "{m}"
    );
    let latency = "pgsieve_apply_latency_seconds";
    assert_eq!(count(m, &format!("{latency}_count"), &[f]), applied, "{m}");
    assert!(
        sample(m, "pgsieve_lag_seconds", &[f]).is_some_and(|s| s < 30.0),
        "{m}"
    );
    assert_eq!(sample(m, "pgsieve_streaming", &[]), Some(1.0), "{m}");
    assert_eq!(count(m, "pgsieve_reconnects_total", &[]), 0, "{m}");
    // Error series exist at 0 (for alerts' increase()), and stay there.
    assert!(
        m.lines()
            .filter(|l| l.starts_with("pgsieve_errors_total{"))
            .all(|l| l.ends_with(" 0")),
        "{m}"
    );
    let health = get(port, "/healthz").await.expect("healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(port, "/readyz").await.expect("readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    // Lag beyond max_lag_bytes: the follower's secrets are locked while a
    // large value streams in.
    let blocker = lock_secrets(&topology.followers[0]).await;
    let mut rng = StdRng::seed_from_u64(9);
    let big = fake_ciphertext(&mut rng, 4 * MAX_LAG as usize);
    ok(rotate_secret(&leader, &spec.variable(0, 4), &big, None).await);
    let lagging = poll(port, "/readyz", "not ready while lagging", &pgsieve, |r| {
        r.status == 503
    })
    .await;
    assert!(
        lagging.body.starts_with("follower east lags "),
        "{lagging:?}"
    );
    let m = get(port, "/metrics").await.expect("metrics").body;
    assert!(
        sample(&m, "pgsieve_lag_bytes", &[f]).is_some_and(|b| b > MAX_LAG as f64),
        "{m}"
    );
    blocker.batch_execute("COMMIT").await.expect("unlocking");
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, PROBE).await;
    poll(port, "/readyz", "ready after catching up", &pgsieve, |r| {
        r.status == 200
    })
    .await;

    // The follower goes away: not ready; a change makes the sink fail and the
    // pipeline retry until the follower is back.
    drop(blocker);
    drop(followers);
    topology.followers[0].stop_fast();
    let down = poll(
        port,
        "/readyz",
        "not ready without the follower",
        &pgsieve,
        |r| r.status == 503,
    )
    .await;
    println!("readyz with the follower down: {}", down.body.trim_end());
    ok(rotate_secret(&leader, &spec.variable(0, 0), b"while down", None).await);
    poll(port, "/metrics", "a reconnect counted", &pgsieve, |r| {
        count(&r.body, "pgsieve_reconnects_total", &[]) >= 1
    })
    .await;
    ok(topology.followers[0].start_again());
    poll(
        port,
        "/readyz",
        "ready with the follower back",
        &pgsieve,
        |r| r.status == 200,
    )
    .await;
    let follower = ok(topology.followers[0].connect(CONJUR_DB).await);
    wait_caught_up(&leader, &follower, &origin, &pgsieve, PROBE).await;
    let m = get(port, "/metrics").await.expect("metrics").body;
    assert!(
        count(&m, "pgsieve_errors_total", &[("kind", "apply"), f]) >= 1,
        "{m}"
    );
    println!(
        "metrics: {seen} secrets rows ({rows_in} forwarded, {rows_out} dropped), \
         {applied} leader transactions in {commits} follower commits, \
         {backfill_rows} rows backfilled, {purge_rows} purged; {:.1?}",
        started.elapsed()
    );
}
