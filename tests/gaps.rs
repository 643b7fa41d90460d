//! A follower that fell off the stream is brought back by an online diff
//! resync, never resumed across the gap (ARCHITECTURE.md, "Session start and
//! gaps"): a follower restored from an old copy of its data directory, a slot
//! dropped or invalidated while pgsieve was stopped. A sampler counts rows
//! throughout: no table is ever emptied on the way, and no revoked secret is
//! held at any sample. The oracles are the leader's own tables and the
//! from-scratch visibility query.

use std::time::Duration;

use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::invariants::{LeakWatch, LeakWatched};
use pgsieve::harness::process::{PgsieveProcess, run_pgsieve};
use pgsieve::harness::workload::{Change, apply_changes, rotate_secret};

use crate::support::sampler::Sampler;
use crate::support::scene::{SLOT, Scene, assert_follower_equals_leader, start_again_streaming};
use crate::support::{assert_no_leak, ok, rows_written_since, xid_horizon};

/// Leader changes of every kind: a grant and a revoke into east, a role
/// inserted and one deleted, an update, a truncate. Returns the revoked
/// variables (outside east from then on).
async fn leader_changes(scene: &Scene, round: usize) -> Vec<String> {
    let east = scene.east.data_group();
    let v = |app: usize, var: usize| scene.pop.variables[app * 5 + var].clone();
    ok(apply_changes(
        &scene.leader,
        None,
        &[
            // Grant app 2's layer; revoke app 0's.
            Change::GrantRole {
                role: scene.pop.layers[2].clone(),
                member: east.clone(),
            },
            Change::RevokeRole {
                role: scene.pop.layers[0].clone(),
                member: east,
            },
        ],
    )
    .await);
    scene
        .leader
        .batch_execute(&format!(
            "INSERT INTO public.roles (role_id) VALUES ('acme:user:gap-{round}'); \
             DELETE FROM public.roles WHERE role_id = 'acme:user:gap-{}'; \
             UPDATE public.secrets SET expires_at = now() WHERE resource_id = '{}'; \
             TRUNCATE public.annotations;",
            round.wrapping_sub(1),
            v(2, 0),
        ))
        .await
        .expect("leader changes");
    ok(rotate_secret(&scene.leader, &v(0, 0), b"after the revoke", None).await);
    (0..5).map(|var| v(0, var)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restored_from_an_old_copy_is_resynced_not_resumed() {
    let mut scene = Scene::new(0).await;
    let mut pgsieve = scene.start_east().await;
    let east = scene.east.clone();

    // A backup of the follower's data directory, taken cold.
    let backup = tempfile::tempdir().expect("tempdir");
    scene.topology.followers[0].stop_fast();
    let data = scene.topology.followers[0].data_dir();
    let saved = backup.path().join("data");
    copy_dir(&data, &saved);
    ok(scene.topology.followers[0].start_again());
    scene.follower = ok(scene.topology.followers[0].connect(CONJUR_DB).await);

    // Changes the slot then confirms (pgsieve applies them and reports).
    let revoked = leader_changes(&scene, 1).await;
    scene.assert_east(&pgsieve, "the changes").await;
    wait_slot_confirmed_past_changes(&scene).await;

    // Restore the old copy under a stopped pgsieve.
    assert!(pgsieve.terminate(Duration::from_secs(20)).is_some());
    scene.topology.followers[0].stop_fast();
    std::fs::remove_dir_all(&data).expect("removing the data directory");
    copy_dir(&saved, &data);
    ok(scene.topology.followers[0].start_again());
    scene.follower = ok(scene.topology.followers[0].connect(CONJUR_DB).await);
    let url = scene.topology.followers[0].url(CONJUR_DB);

    // on_gap = "stop": one line naming the follower and the fix, exit 1.
    let stop_config = {
        let mut c = scene.config(scene.entry(Some(&scene.east)));
        c.extra = "[apply]\non_gap = \"stop\"\n".into();
        c
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stop.toml");
    std::fs::write(&path, stop_config.to_toml()).expect("config");
    let (code, _, stderr) = ok(run_pgsieve(
        &["run", "-c", path.to_str().expect("utf-8")],
        Duration::from_secs(60),
    ));
    assert_eq!(code, Some(1), "on_gap = stop must exit 1:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("not streaming across the gap"))
        .unwrap_or_else(|| panic!("no gap line in:\n{stderr}"));
    assert!(
        line.contains("follower f") && line.contains("pgsieve resync"),
        "the line names the follower and the fix: {line}"
    );

    // on_gap = "resync" (default): the follower is brought to the leader.
    // The restored copy holds the revoked variables' secrets (it predates
    // the revoke): the resync purges them before the stream starts, and they
    // never come back.
    let sampler = Sampler::spawn(url.clone());
    start_again_streaming(&mut pgsieve);
    let watch = LeakWatch::spawn(
        vec![LeakWatched {
            url,
            never_granted: revoked,
        }],
        Duration::from_millis(20),
    );
    leader_changes(&scene, 2).await;
    scene.assert_east(&pgsieve, "the resync").await;
    scene
        .assert_equal_to_leader(&pgsieve, &east, "the resync")
        .await;
    let (samples, empty) = sampler.stop().await;
    assert!(samples > 5, "the sampler took {samples} samples");
    assert!(empty.is_empty(), "a table was emptied: {empty:?}");
    assert_no_leak(&ok(watch.stop().await), 1, &pgsieve.log());
    assert!(
        pgsieve
            .log()
            .contains("resynchronizing the follower online"),
        "no resync in the log:\n{}",
        pgsieve.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_or_lost_while_stopped_leads_to_a_resync() {
    let scene = Scene::new(0).await;
    let mut pgsieve = scene.start_east().await;

    // Dropped while pgsieve is stopped.
    assert!(pgsieve.terminate(Duration::from_secs(20)).is_some());
    // The walsender may outlive pgsieve by a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = scene
        .leader
        .execute("SELECT pg_drop_replication_slot($1)", &[&SLOT])
        .await
    {
        assert!(
            std::time::Instant::now() < deadline,
            "dropping the slot: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leader_changes(&scene, 1).await;
    start_again_streaming(&mut pgsieve);
    scene.assert_east(&pgsieve, "a dropped slot").await;
    assert!(
        pgsieve.log().contains("the slot is missing"),
        "{}",
        pgsieve.log()
    );

    // Invalidated by max_slot_wal_keep_size while pgsieve is stopped.
    assert!(pgsieve.terminate(Duration::from_secs(20)).is_some());
    sql_each(
        &scene.leader,
        &[
            "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    leader_changes(&scene, 2).await;
    for _ in 0..4 {
        sql_each(
            &scene.leader,
            &[
                "CREATE TEMP TABLE IF NOT EXISTS filler (x text)",
                "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 3000)",
                "SELECT pg_switch_wal()",
                "CHECKPOINT",
            ],
        )
        .await;
    }
    let status: String = scene
        .leader
        .query_one(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .expect("wal_status")
        .get(0);
    assert_eq!(status, "lost", "the slot should be invalidated");
    sql_each(
        &scene.leader,
        &[
            "ALTER SYSTEM RESET max_slot_wal_keep_size",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    start_again_streaming(&mut pgsieve);
    scene.assert_east(&pgsieve, "a lost slot").await;
    assert!(
        pgsieve.log().contains("wal_status = lost"),
        "{}",
        pgsieve.log()
    );
}

/// Waits until the slot's confirmed position has passed the leader's WAL
/// insert position now (so the changes before are confirmed).
async fn wait_slot_confirmed_past_changes(scene: &Scene) {
    let target = ok(pgsieve::harness::invariants::current_wal_insert_lsn(&scene.leader).await);
    ok(pgsieve::harness::invariants::wait_slot_flush_at_least(
        &scene.leader,
        SLOT,
        target,
        Duration::from_secs(60),
    )
    .await);
}

/// Runs each statement on its own (outside any transaction block).
async fn sql_each(client: &tokio_postgres::Client, statements: &[&str]) {
    for sql in statements {
        client.batch_execute(sql).await.expect(sql);
    }
}

/// `cp -a from to` (`to` must not exist): the data directory keeps its owner
/// and modes.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_removed_from_a_hub_and_added_back_is_resynced() {
    use pgsieve::harness::Topology;
    use pgsieve::harness::conjur::ReplicaSet;
    use pgsieve::harness::generate::PolicySpec;
    use pgsieve::harness::process::{FollowerEntry, PgsieveConfig};
    use pgsieve::harness::workload::{create_replica_set, grant_layers_to_sets};

    use crate::replication::wait_caught_up;

    let topology = ok(Topology::start(2));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    let west = ReplicaSet::new("west");
    ok(create_replica_set(&mut leader, &east).await);
    ok(create_replica_set(&mut leader, &west).await);
    let spec = PolicySpec::new("acme", 5, 5, 2).with_seed(21);
    let pop = ok(spec.populate(&mut leader).await);
    ok(grant_layers_to_sets(&leader, &pop.layers[..2], &[east.clone(), west.clone()]).await);
    let slot = "pgsieve_hub_gap";
    let origin = format!("pgsieve_{slot}");
    let entries = || {
        vec![
            FollowerEntry::filtered("east", &topology.followers[0], &east.data_group()),
            FollowerEntry::filtered("west", &topology.followers[1], &west.data_group()),
        ]
    };
    let both = PgsieveConfig::new(&topology.leader, slot, entries());
    let mut pgsieve = ok(PgsieveProcess::start(&both));
    for f in &followers {
        wait_caught_up(&leader, f, &origin, &pgsieve, Duration::from_secs(60)).await;
    }

    // West leaves the hub; the leader moves on and the slot confirms it.
    let east_only = PgsieveConfig::new(&topology.leader, slot, entries()[..1].to_vec());
    std::fs::write(pgsieve.config_path(), east_only.to_toml()).expect("config");
    assert!(pgsieve.terminate(Duration::from_secs(20)).is_some());
    start_again_streaming(&mut pgsieve);
    let v = |app: usize, var: usize| pop.variables[app * 5 + var].clone();
    for round in 0..3 {
        ok(rotate_secret(&leader, &v(1, round), b"while west was away", None).await);
        ok(rotate_secret(&leader, &v(0, round), b"while west was away", None).await);
    }
    wait_caught_up(
        &leader,
        &followers[0],
        &origin,
        &pgsieve,
        Duration::from_secs(60),
    )
    .await;
    let target = ok(pgsieve::harness::invariants::current_wal_insert_lsn(&leader).await);
    ok(pgsieve::harness::invariants::wait_slot_flush_at_least(
        &leader,
        slot,
        target,
        Duration::from_secs(60),
    )
    .await);

    // West comes back: its origin is behind the slot, so it is resynced; east
    // only goes on streaming.
    let east_horizon = xid_horizon(&followers[0]).await;
    std::fs::write(pgsieve.config_path(), both.to_toml()).expect("config");
    assert!(pgsieve.terminate(Duration::from_secs(20)).is_some());
    start_again_streaming(&mut pgsieve);
    for (f, set) in followers.iter().zip([&east, &west]) {
        assert_follower_equals_leader(&leader, f, &origin, set, &pgsieve, "the rejoin").await;
    }
    assert!(
        pgsieve.log().contains("follower=west gap=its origin"),
        "west was not resynced across the gap:\n{}",
        pgsieve.log()
    );
    assert_eq!(
        rows_written_since(&followers[0], east_horizon, None).await,
        0,
        "west's resync wrote to east"
    );
}
