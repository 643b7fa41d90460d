//! Leader failover the way Conjur does it: a physical streaming standby
//! (`pg_basebackup -R`) is promoted after the leader dies. PostgreSQL 15 does
//! not carry logical slots to a standby, so the new leader has none: pgsieve,
//! given both hosts with `target_session_attrs=read-write`, finds the new
//! leader, creates its slot there and resynchronizes every follower through
//! the online diff (ARCHITECTURE.md, "Session start and gaps"). The followers
//! keep serving reads (no table is ever empty), converge to the new leader,
//! and never hold a never-granted secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::cluster::{CONJUR_DB, Cluster, REPLICATOR_PASSWORD, REPLICATOR_ROLE};
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::invariants::{LeakWatch, LeakWatched};
use pgsieve::harness::oracle::OracleRule;
use pgsieve::harness::process::{PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::rotate_secret;

use crate::replication::wait_caught_up;
use crate::support::sampler::Sampler;
use crate::support::scene::{ORIGIN, SLOT, Scene};
use crate::support::{assert_no_leak, never_granted_variables, ok};

/// Rotates app 0..2's first variables on whichever leader answers, until told
/// to stop; the writes that fail while there is no leader are retried.
fn spawn_workload(
    urls: Vec<String>,
    variables: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut written = 0u64;
        let mut client = None;
        while !stop.load(Ordering::Relaxed) {
            if client.is_none() {
                for url in &urls {
                    if let Ok(c) = pgsieve::harness::cluster::connect_url(url).await {
                        let writable = c
                            .query_one("SELECT NOT pg_is_in_recovery()", &[])
                            .await
                            .is_ok_and(|r| r.get::<_, bool>(0));
                        if writable {
                            client = Some(c);
                            break;
                        }
                    }
                }
            }
            if let Some(c) = &client {
                let v = &variables[written as usize % variables.len()];
                match rotate_secret(c, v, format!("w{written}").as_bytes(), None).await {
                    Ok(_) => written += 1,
                    Err(_) => client = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        written
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_converge_to_a_promoted_standby() {
    let mut scene = Scene::new(0).await;
    let mut standby = ok(Cluster::start_standby("standby", &scene.topology.leader));
    let outside = never_granted_variables(&scene.leader, &scene.spec, 4).await;
    let leader_port = scene.topology.leader.port();
    let url = format!(
        "postgresql://{REPLICATOR_ROLE}:{REPLICATOR_PASSWORD}@127.0.0.1:{leader_port},127.0.0.1:{}/{CONJUR_DB}?target_session_attrs=read-write",
        standby.port()
    );
    let mut config: PgsieveConfig = scene.config(scene.entry(Some(&scene.east)));
    config.leader_url = url;
    let pgsieve = ok(PgsieveProcess::start(&config));
    let east = scene.east.clone();
    scene
        .assert_projection(
            &pgsieve,
            Some(&east),
            OracleRule::Execute,
            &[],
            "the initial copy",
        )
        .await;

    let follower_url = scene.topology.followers[0].url(CONJUR_DB);
    let sampler = Sampler::spawn(follower_url.clone());
    let watch = LeakWatch::spawn(
        vec![LeakWatched {
            url: follower_url,
            never_granted: outside.clone(),
        }],
        Duration::from_millis(20),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut rotated: Vec<String> = (0..3).map(|app| scene.spec.variable(app, 0)).collect();
    rotated.extend(outside.iter().take(2).cloned());
    let workload = spawn_workload(
        vec![scene.topology.leader.url(CONJUR_DB), standby.url(CONJUR_DB)],
        rotated,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The leader dies; the standby is promoted; the workload goes on there.
    scene.topology.leader.kill();
    ok(standby.promote());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let written = workload.await.expect("workload");
    assert!(written > 5, "the workload wrote only {written} versions");

    // The follower converges to the new leader.
    scene.leader = ok(standby.connect(CONJUR_DB).await);
    wait_caught_up(
        &scene.leader,
        &scene.follower,
        ORIGIN,
        &pgsieve,
        Duration::from_secs(120),
    )
    .await;
    let diff = ok(follower_diff(
        &scene.leader,
        &scene.follower,
        CONJUR_TABLES,
        &east.data_group(),
        OracleRule::Execute,
        &[],
    )
    .await);
    assert!(
        diff.is_empty(),
        "the follower differs from the promoted standby:\n{}\npgsieve log:\n{}",
        diff.join("\n"),
        pgsieve.log()
    );
    let slot: i64 = scene
        .leader
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .expect("slot")
        .get(0);
    assert_eq!(slot, 1, "pgsieve created its slot on the new leader");
    assert!(
        pgsieve.log().contains("the slot is missing"),
        "no resync after the failover:\n{}",
        pgsieve.log()
    );
    let (samples, empty) = sampler.stop().await;
    assert!(samples > 5, "the sampler took {samples} samples");
    assert!(empty.is_empty(), "a table was emptied: {empty:?}");
    assert_no_leak(&ok(watch.stop().await), 5, &pgsieve.log());
}
