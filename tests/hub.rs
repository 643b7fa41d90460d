//! Hub mode isolation: one pgsieve, one slot, two replica-set followers,
//! and one of them stalled behind a lock or down. The other must keep
//! receiving everything within the test's patience; the stalled one must be
//! reported detached (`/readyz`, `/metrics`), hold the slot at its own
//! durable progress (flush watch: the slot never confirms past it), and on
//! its return catch up from the slot — including a grant to its set made
//! while it was away — to exactly the oracle's contents.

use std::time::Duration;

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::{PolicySpec, Population};
use pgsieve::harness::invariants::{FlushWatch, origin_progress};
use pgsieve::harness::oracle::OracleRule;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{
    Change, apply_changes, create_replica_set, grant_layers_to_sets, rotate_secret,
};
use pgsieve::harness::{Topology, wait_initial_copy};
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::ok;
use crate::support::probe::{PROBE, count, free_port, get, lock_secrets, poll, sample};

const SLOT: &str = "pgsieve_hub";
/// Leader transactions written while a follower is away: far more events
/// than the test's per-follower buffer.
const ROTATIONS: usize = 600;

/// A running hub: `east` on follower 0 (always healthy), `west` on
/// follower 1 (the one the tests stall).
struct Hub {
    topology: Topology,
    leader: Client,
    followers: Vec<Client>,
    sets: [ReplicaSet; 2],
    pop: Population,
    pgsieve: PgsieveProcess,
    port: u16,
    watch: FlushWatch,
}

impl Hub {
    async fn start() -> Hub {
        let topology = ok(Topology::start(2));
        let (mut leader, followers) = ok(topology.prepare_conjur().await);
        let sets = [ReplicaSet::new("east"), ReplicaSet::new("west")];
        for set in &sets {
            ok(create_replica_set(&mut leader, set).await);
        }
        let spec = PolicySpec::new("acme", 4, 5, 2).with_seed(11);
        let pop = ok(spec.populate(&mut leader).await);
        // App 0 is east's, app 1 west's; the tests grant app 2 to west later.
        ok(grant_layers_to_sets(&leader, &pop.layers[..2], &sets).await);

        let port = free_port();
        let entries = sets
            .iter()
            .zip(&topology.followers)
            .map(|(set, cluster)| FollowerEntry::filtered(&set.name, cluster, &set.data_group()))
            .collect();
        let mut config = PgsieveConfig::new(&topology.leader, SLOT, entries);
        config.extra = format!(
            "[apply]\nbuffer_events = 64\ndetach_after_ms = 300\n\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        );
        let pgsieve = ok(PgsieveProcess::start(&config));
        for follower in &followers {
            ok(wait_initial_copy(follower, &origin(), PROBE).await);
        }
        let watch = topology.flush_watch(SLOT, &origin(), Duration::from_millis(20));
        Hub {
            topology,
            leader,
            followers,
            sets,
            pop,
            pgsieve,
            port,
            watch,
        }
    }

    /// `n` single-row leader transactions over every app's variables.
    async fn rotate(&self, n: usize, value: &[u8]) {
        for i in 0..n {
            let variable = &self.pop.variables[i % self.pop.variables.len()];
            ok(rotate_secret(&self.leader, variable, value, None).await);
        }
    }

    /// Grants app `app`'s layer to west's data group.
    async fn grant_to_west(&self, app: usize) {
        ok(apply_changes(
            &self.leader,
            None,
            &[Change::GrantRole {
                role: self.pop.layers[app].clone(),
                member: self.sets[1].data_group(),
            }],
        )
        .await);
    }

    /// Follower `index` has everything the leader committed so far and
    /// holds exactly what the oracle says.
    async fn assert_converged(&self, index: usize, step: &str) {
        let follower = &self.followers[index];
        wait_caught_up(&self.leader, follower, &origin(), &self.pgsieve, PROBE).await;
        let diff = ok(follower_diff(
            &self.leader,
            follower,
            CONJUR_TABLES,
            &self.sets[index].data_group(),
            OracleRule::Execute,
            &[],
        )
        .await);
        assert!(
            diff.is_empty(),
            "{step}: follower {} differs from the oracle:\n{}\npgsieve log:\n{}",
            self.sets[index].name,
            diff.join("\n"),
            self.pgsieve.log()
        );
        // Backfills move the upsert bound: the stream never met a row
        // they had copied (which would have cost a restart).
        assert!(
            !self.pgsieve.log().contains("resuming with upserts"),
            "{step}: a plain INSERT met a row the follower held:\n{}",
            self.pgsieve.log()
        );
    }

    /// Waits until `/readyz` reports west detached for one of `reasons`,
    /// then checks the attachment gauges; returns the metrics text.
    async fn assert_west_detached(&self, reasons: &[&str]) -> String {
        let wanted: Vec<String> = reasons
            .iter()
            .map(|reason| format!("follower west is detached: {reason}"))
            .collect();
        poll(
            self.port,
            "/readyz",
            "west reported detached",
            &self.pgsieve,
            |r| r.status == 503 && wanted.iter().any(|w| r.body.contains(w)),
        )
        .await;
        let metrics = get(self.port, "/metrics")
            .await
            .expect("metrics answer")
            .body;
        let attached = |name| sample(&metrics, "pgsieve_follower_attached", &[("follower", name)]);
        assert_eq!(attached("west"), Some(0.0), "{metrics}");
        assert_eq!(attached("east"), Some(1.0), "{metrics}");
        metrics
    }

    async fn assert_ready(&self) {
        poll(self.port, "/readyz", "ready again", &self.pgsieve, |r| {
            r.status == 200
        })
        .await;
    }

    /// Stops the flush watch: the slot never confirmed past a follower's
    /// durable progress, and it was sampled while west was away.
    async fn finish(self) {
        let report = ok(self.watch.stop().await);
        assert!(
            report.violations.is_empty(),
            "the slot confirmed past a follower's progress:\n{}",
            report.violations.join("\n")
        );
        assert!(report.samples > 0, "flush watch never sampled: {report:?}");
        println!(
            "flush watch: {} samples ({} unavailable), 0 violations",
            report.samples, report.unavailable
        );
        drop(self.topology);
    }
}

fn origin() -> String {
    format!("pgsieve_{SLOT}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_follower_is_detached_and_rejoins_from_the_slot() {
    let hub = Hub::start().await;
    let west_before = ok(origin_progress(&hub.followers[1], &origin()).await);

    // West cannot write `secrets`: its sink stalls, its buffer fills.
    let blocker = lock_secrets(&hub.topology.followers[1]).await;
    hub.rotate(ROTATIONS / 2, b"while west is stalled").await;
    hub.grant_to_west(2).await;
    hub.rotate(ROTATIONS / 2, b"after the grant").await;

    // East gets everything meanwhile; west is reported and holds the slot.
    hub.assert_converged(0, "east while west is stalled").await;
    let metrics = hub.assert_west_detached(&["slow"]).await;
    assert!(
        count(
            &metrics,
            "pgsieve_detaches_total",
            &[("follower", "west"), ("reason", "slow")]
        ) >= 1,
        "{metrics}"
    );
    let east_at = ok(origin_progress(&hub.followers[0], &origin()).await);
    let west_at = ok(origin_progress(&hub.followers[1], &origin()).await);
    assert!(
        west_at < east_at,
        "west ({west_at:?}) should be behind east ({east_at:?}) while stalled (it started at {west_before:?})"
    );

    // Released, west catches up from the slot, the grant's backfill included.
    blocker.batch_execute("COMMIT").await.expect("unlocking");
    hub.assert_converged(1, "west after the stall").await;
    hub.assert_converged(0, "east after west rejoined").await;
    hub.assert_ready().await;
    let metrics = get(hub.port, "/metrics").await.expect("metrics").body;
    assert!(
        count(&metrics, "pgsieve_rewinds_total", &[]) >= 1,
        "{metrics}"
    );
    hub.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_is_down_holds_only_its_own_progress() {
    let mut hub = Hub::start().await;

    // West goes down while pgsieve streams: its sink fails, east goes on.
    hub.topology.followers[1].stop_fast();
    hub.rotate(ROTATIONS / 2, b"while west is down").await;
    hub.assert_converged(0, "east while west is down").await;
    // "lost" if its sink was streaming, "unreachable" if the stop won the
    // race with the session's start.
    hub.assert_west_detached(&["lost", "unreachable"]).await;
    hub.grant_to_west(2).await;

    // pgsieve restarts while west is still down: west starts detached.
    hub.pgsieve.kill();
    ok(hub.pgsieve.start_again());
    hub.rotate(ROTATIONS / 2, b"after the restart").await;
    hub.assert_converged(0, "east after pgsieve restarted without west")
        .await;
    hub.assert_west_detached(&["unreachable"]).await;

    // West is back: it rejoins and catches up, the grant's backfill included.
    ok(hub.topology.followers[1].start_again());
    hub.followers[1] = ok(hub.topology.followers[1].connect(CONJUR_DB).await);
    hub.assert_converged(1, "west after it came back").await;
    hub.assert_converged(0, "east after west rejoined").await;
    hub.assert_ready().await;
    hub.finish().await;
}
