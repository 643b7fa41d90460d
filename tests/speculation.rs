//! Streamed transactions are applied speculatively (ARCHITECTURE.md,
//! "Streamed transactions"): the follower applies a large transaction while
//! the leader still writes it, and gives it up, to replay it whole at its
//! commit, whenever its decisions could differ from the ones the leader's
//! commit order implies. The oracle is the from-scratch SQL projection on the
//! leader; each test makes a speculation start first (the follower holds an
//! open pgsieve transaction), then does what must give it up.

use std::time::{Duration, Instant};

use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::oracle::{OracleRule, resources_in_set};
use pgsieve::harness::process::PgsieveProcess;
use pgsieve::harness::workload::{Change, apply_changes, rotate_secret};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::support::ok;
use crate::support::probe::{count, free_port, get};
use crate::support::scene::Scene;

/// Rows per statement: many times `logical_decoding_work_mem`, so the
/// walsender streams them before the commit, and more than the sink gathers
/// before it writes (4096 rows a table), so the follower sees them at once.
const STREAMED_ROWS: i32 = 5_000;

/// A scene whose leader streams any transaction over 64 kB, with pgsieve
/// running for `east` (initial copy checked), and a second leader session
/// for the long transaction.
async fn streaming_scene() -> (Scene, PgsieveProcess, Client) {
    let scene = streaming_leader().await;
    let pgsieve = scene.start_east().await;
    let writer = ok(scene.topology.leader.connect(CONJUR_DB).await);
    (scene, pgsieve, writer)
}

/// The scene, its leader streaming any transaction over 64 kB.
async fn streaming_leader() -> Scene {
    let scene = Scene::new(0).await;
    for sql in [
        "ALTER SYSTEM SET logical_decoding_work_mem = '64kB'",
        "SELECT pg_reload_conf()",
    ] {
        scene
            .leader
            .batch_execute(sql)
            .await
            .expect("setting logical_decoding_work_mem");
    }
    scene
}

/// Inserts `STREAMED_ROWS` versions of `variable` in the caller's transaction.
async fn insert_versions(c: &impl GenericClient, variable: &str, salt: i32) {
    c.execute(
        "INSERT INTO secrets (resource_id, value)
         SELECT $1, '\\x47'::bytea || decode(md5((g + $2)::text), 'hex')
         FROM generate_series(1, $3) g",
        &[&variable, &salt, &STREAMED_ROWS],
    )
    .await
    .expect("inserting secret versions");
}

/// Waits until a transaction that wrote to `secrets` is open on the
/// follower: only pgsieve writes there, and the leader's transaction is
/// still open, so that can only be a speculation.
async fn wait_for_speculation(scene: &Scene, pgsieve: &PgsieveProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = scene
            .follower
            .query_one(
                "SELECT count(*) FROM pg_locks
                 WHERE relation = 'secrets'::regclass AND mode = 'RowExclusiveLock'
                   AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("reading pg_stat_activity")
            .get(0);
        if open > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no speculative transaction opened on the follower while the leader streamed one:\n{}",
            pgsieve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens the long transaction on `writer`, streams versions of `variable`
/// in it and waits until the follower applies them speculatively.
async fn start_speculation<'a>(
    scene: &Scene,
    pgsieve: &PgsieveProcess,
    writer: &'a mut Client,
    variable: &str,
) -> Transaction<'a> {
    let tx = writer.transaction().await.expect("begin");
    insert_versions(&tx, variable, 0).await;
    wait_for_speculation(scene, pgsieve).await;
    tx
}

/// Takes app 0's layer, and with it app 0's variables, away from east.
fn revoke_app_0(scene: &Scene) -> Change {
    Change::RevokeRole {
        role: scene.spec.layer(0),
        member: scene.east.data_group(),
    }
}

async fn in_east(scene: &Scene, variable: &str) -> bool {
    ok(resources_in_set(&scene.leader, &scene.east.data_group(), OracleRule::Execute).await)
        .contains(variable)
}

/// A revoke that commits while a transaction streams rows of the revoked
/// variable: the rows were forwarded under the old model, so the
/// speculation is given up and the replay at the commit drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_committed_during_a_streamed_transaction_drops_its_rows() {
    let (scene, pgsieve, mut writer) = streaming_scene().await;
    let variable = scene.spec.variable(0, 0);
    assert!(
        in_east(&scene, &variable).await,
        "{variable} starts in east"
    );

    let tx = start_speculation(&scene, &pgsieve, &mut writer, &variable).await;
    ok(apply_changes(&scene.leader, None, &[revoke_app_0(&scene)]).await);
    assert!(!in_east(&scene, &variable).await, "{variable} left east");
    insert_versions(&tx, &variable, STREAMED_ROWS).await;
    tx.commit().await.expect("commit");

    scene
        .assert_east(&pgsieve, "a revoke during a streamed transaction")
        .await;
}

/// A revoke inside a streamed transaction that then rolls back: the revoke
/// never happened on the leader, so it must never reach the model; a later
/// rotation of the variable still goes to the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_change_in_a_streamed_transaction_that_aborts_changes_no_decision() {
    let (scene, pgsieve, mut writer) = streaming_scene().await;
    let variable = scene.spec.variable(0, 1);

    let tx = start_speculation(&scene, &pgsieve, &mut writer, &variable).await;
    ok(apply_changes(&tx, None, &[revoke_app_0(&scene)]).await);
    // Enough behind the revoke that the walsender streams it before the
    // rollback.
    insert_versions(&tx, &variable, STREAMED_ROWS).await;
    tx.rollback().await.expect("rollback");

    ok(rotate_secret(&scene.leader, &variable, b"after the rollback", None).await);
    assert!(in_east(&scene, &variable).await, "{variable} stays in east");
    scene
        .assert_east(&pgsieve, "a streamed revoke rolled back, then a rotation")
        .await;
}

/// A savepoint rolled back inside a streamed transaction: its rows were
/// already applied speculatively and must not survive on the follower. (Fewer
/// rows follow the rollback than it undid: the leader numbers versions anew,
/// so a later row never overwrites a stale one by its key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_savepoint_leaves_no_rows_on_the_follower() {
    let (scene, pgsieve, mut writer) = streaming_scene().await;
    let variable = scene.spec.variable(0, 2);

    let mut tx = start_speculation(&scene, &pgsieve, &mut writer, &variable).await;
    let savepoint = tx.savepoint("doomed").await.expect("savepoint");
    insert_versions(&savepoint, &variable, STREAMED_ROWS).await;
    savepoint.rollback().await.expect("rollback to savepoint");
    tx.execute(
        "INSERT INTO secrets (resource_id, value) VALUES ($1, '\\x4701')",
        &[&variable],
    )
    .await
    .expect("inserting after the rollback");
    tx.commit().await.expect("commit");

    scene
        .assert_east(
            &pgsieve,
            "a savepoint rolled back in a streamed transaction",
        )
        .await;
}

/// SIGKILL while a speculation is open on the follower: its transaction
/// dies with the session, the restarted pgsieve receives the whole
/// transaction again, and every row lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_a_speculation_loses_and_doubles_nothing() {
    let (scene, mut pgsieve, mut writer) = streaming_scene().await;
    let variable = scene.spec.variable(0, 3);

    let tx = start_speculation(&scene, &pgsieve, &mut writer, &variable).await;
    pgsieve.kill();
    insert_versions(&tx, &variable, STREAMED_ROWS).await;
    tx.commit().await.expect("commit");
    ok(pgsieve.start_again());

    scene
        .assert_east(&pgsieve, "a SIGKILL during a speculation")
        .await;
}

/// Heartbeats commit on the leader every 100 ms while a streamed transaction
/// stays open: they change nothing, so the speculation goes on (counted on
/// `/metrics`) and the follower still ends equal to the projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_committing_during_a_speculation_leave_it_alone() {
    let scene = streaming_leader().await;
    let port = free_port();
    let mut config = scene.config(scene.entry(Some(&scene.east)));
    config.extra =
        format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n[heartbeat]\ninterval_ms = 100\n");
    let pgsieve = ok(PgsieveProcess::start(&config));
    scene.assert_east(&pgsieve, "the initial copy").await;
    let mut writer = ok(scene.topology.leader.connect(CONJUR_DB).await);
    let variable = scene.spec.variable(0, 4);

    let tx = start_speculation(&scene, &pgsieve, &mut writer, &variable).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    insert_versions(&tx, &variable, STREAMED_ROWS).await;
    tx.commit().await.expect("commit");

    scene
        .assert_east(&pgsieve, "heartbeats during a speculation")
        .await;
    let metrics = get(port, "/metrics").await.expect("metrics answer").body;
    let heartbeats = count(&metrics, "pgsieve_heartbeats_total", &[]);
    assert!(
        heartbeats >= 5,
        "{heartbeats} heartbeats: the test needs several"
    );
    assert_eq!(
        (
            count(&metrics, "pgsieve_speculations_total", &[]),
            count(&metrics, "pgsieve_speculations_given_up_total", &[]),
        ),
        (1, 0),
        "one speculation, never given up:\n{}",
        pgsieve.log()
    );
}
