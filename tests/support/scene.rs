//! A leader with replica sets `east` and `west` and one follower with its
//! pgsieve config: the scene the trust and gap tests share.

use std::time::Duration;

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::Topology;
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::{PolicySpec, Population};
use pgsieve::harness::oracle::OracleRule;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{create_replica_set, grant_layers_to_sets};
use tokio_postgres::Client;

use super::ok;
use crate::replication::wait_caught_up;

pub const ORIGIN: &str = "pgsieve_pgsieve_trust";
pub const SLOT: &str = "pgsieve_trust";

/// A leader with sets east and west, five apps of five variables (app 0's
/// layer in east, app 1's in west), one follower and its pgsieve, not started.
pub struct Scene {
    pub topology: Topology,
    pub leader: Client,
    pub follower: Client,
    pub spec: PolicySpec,
    pub pop: Population,
    pub east: ReplicaSet,
    pub west: ReplicaSet,
}

impl Scene {
    pub async fn new(hosts_per_app: usize) -> Scene {
        let topology = ok(Topology::start(1));
        let (mut leader, mut followers) = ok(topology.prepare_conjur().await);
        let east = ReplicaSet::new("east");
        let west = ReplicaSet::new("west");
        ok(create_replica_set(&mut leader, &east).await);
        ok(create_replica_set(&mut leader, &west).await);
        let spec = PolicySpec::new("acme", 5, 5, 2)
            .with_seed(11)
            .with_hosts_per_app(hosts_per_app);
        let pop = ok(spec.populate(&mut leader).await);
        ok(grant_layers_to_sets(&leader, &pop.layers[..2], &[east.clone(), west.clone()]).await);
        Scene {
            topology,
            leader,
            follower: followers.remove(0),
            spec,
            pop,
            east,
            west,
        }
    }

    pub fn config(&self, entry: FollowerEntry) -> PgsieveConfig {
        PgsieveConfig::new(&self.topology.leader, SLOT, vec![entry])
    }

    pub fn entry(&self, set: Option<&ReplicaSet>) -> FollowerEntry {
        let f = &self.topology.followers[0];
        match set {
            Some(set) => FollowerEntry::filtered("f", f, &set.data_group()),
            None => FollowerEntry::full("f", f),
        }
    }

    /// Waits until the follower applied everything, then asserts its
    /// `secrets` equal the oracle's projection for `set` (and, with
    /// `other_tables`, every other table equals the leader's).
    pub async fn assert_projection(
        &self,
        process: &PgsieveProcess,
        set: Option<&ReplicaSet>,
        rule: OracleRule,
        always: &[&str],
        step: &str,
    ) {
        wait_caught_up(
            &self.leader,
            &self.follower,
            ORIGIN,
            process,
            Duration::from_secs(60),
        )
        .await;
        let diff = match set {
            Some(set) => ok(follower_diff(
                &self.leader,
                &self.follower,
                &["secrets"],
                &set.data_group(),
                rule,
                always,
            )
            .await),
            None => ok(follower_diff(
                &self.leader,
                &self.follower,
                CONJUR_TABLES,
                "nobody:group:none",
                rule,
                &["*"],
            )
            .await),
        };
        assert!(
            diff.is_empty(),
            "after {step}, the follower differs:\n{}\npgsieve log:\n{}",
            diff.join("\n"),
            process.log()
        );
    }

    /// Asserts every Conjur table on the follower equals the leader's, and
    /// `secrets` the projection of `set` (after waiting until caught up).
    pub async fn assert_equal_to_leader(
        &self,
        process: &PgsieveProcess,
        set: &ReplicaSet,
        step: &str,
    ) {
        assert_follower_equals_leader(&self.leader, &self.follower, ORIGIN, set, process, step)
            .await;
    }

    /// Starts `pgsieve` with the follower in `east` and waits for its
    /// initial copy (checked against the oracle).
    pub async fn start_east(&self) -> PgsieveProcess {
        let pgsieve = ok(PgsieveProcess::start(
            &self.config(self.entry(Some(&self.east))),
        ));
        self.assert_east(&pgsieve, "the initial copy").await;
        pgsieve
    }

    /// [`Scene::assert_projection`] for `east` under rule `execute`.
    pub async fn assert_east(&self, process: &PgsieveProcess, step: &str) {
        self.assert_projection(process, Some(&self.east), OracleRule::Execute, &[], step)
            .await;
    }

    /// Stops `pgsieve` (SIGTERM), starts it again and waits until it streams
    /// (session start, reconcile or resync included).
    pub fn restart(&self, pgsieve: &mut PgsieveProcess) {
        assert!(
            pgsieve.terminate(Duration::from_secs(20)).is_some(),
            "pgsieve did not stop:\n{}",
            pgsieve.log()
        );
        start_again_streaming(pgsieve);
    }
}

/// Starts a stopped `pgsieve` again and waits until it streams (session
/// start, reconcile or resync included).
pub fn start_again_streaming(pgsieve: &mut PgsieveProcess) {
    let starts = pgsieve.log().matches("Starting replication.").count();
    ok(pgsieve.start_again());
    wait_streaming(pgsieve, starts + 1);
}

/// Waits until `pgsieve` has logged `n` stream starts.
pub fn wait_streaming(pgsieve: &PgsieveProcess, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while pgsieve.log().matches("Starting replication.").count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "pgsieve did not start streaming:\n{}",
            pgsieve.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `follower` (replication origin `origin`) has applied what the
/// leader committed, then asserts every Conjur table equals the leader's and
/// `secrets` the projection of `set` (rule `execute`), naming `step`.
pub async fn assert_follower_equals_leader(
    leader: &Client,
    follower: &Client,
    origin: &str,
    set: &ReplicaSet,
    process: &PgsieveProcess,
    step: &str,
) {
    wait_caught_up(leader, follower, origin, process, Duration::from_secs(60)).await;
    let diff = ok(follower_diff(
        leader,
        follower,
        CONJUR_TABLES,
        &set.data_group(),
        OracleRule::Execute,
        &[],
    )
    .await);
    assert!(
        diff.is_empty(),
        "after {step}, the follower of {} differs from the leader:\n{}\npgsieve log:\n{}",
        set.name,
        diff.join("\n"),
        process.log()
    );
}
