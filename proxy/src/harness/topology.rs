/*!
The usual test layout in one call: a leader and N followers started in parallel, each
with the Conjur schema, and the leader's publication prepared the way `pgsieve setup`
does it. Tests and the demo start here instead of repeating the steps.
*/

use std::time::Duration;

use super::cluster::{CONJUR_DB, Cluster, ClusterSpec};
use super::conjur::{prepare_conjur, prepare_leader};
use super::error::HarnessError;
use super::invariants::{FlushWatch, WatchedFollower};

/// The publication name used by [`Topology::prepare_conjur`].
pub const DEFAULT_PUBLICATION: &str = "pgsieve";

/// A leader and its followers. Dropping it stops and removes every cluster.
#[derive(Debug)]
pub struct Topology {
    /// The leader (`wal_level = logical`), named `leader`.
    pub leader: Cluster,
    /// The followers, named `f1`, `f2`, ...
    pub followers: Vec<Cluster>,
}

impl Topology {
    /// Starts a leader and `followers` followers in parallel (no schema yet).
    pub fn start(followers: usize) -> Result<Topology, HarnessError> {
        let mut specs = vec![ClusterSpec::leader("leader")];
        specs.extend((1..=followers).map(|i| ClusterSpec::follower(format!("f{i}"))));
        let mut clusters = Cluster::start_all(specs)?.into_iter();
        let leader = clusters
            .next()
            .ok_or_else(|| HarnessError::Usage("start_all returned no leader".into()))?;
        Ok(Topology {
            leader,
            followers: clusters.collect(),
        })
    }

    /// Loads the Conjur schema into `conjur` on every cluster, grants `replicator` read
    /// access, and prepares [`DEFAULT_PUBLICATION`] on the leader. Returns superuser
    /// connections: the leader's first, then one per follower.
    pub async fn prepare_conjur(
        &self,
    ) -> Result<(tokio_postgres::Client, Vec<tokio_postgres::Client>), HarnessError> {
        let leader = prepare_conjur(&self.leader).await?;
        prepare_leader(&leader, DEFAULT_PUBLICATION).await?;
        let mut followers = Vec::with_capacity(self.followers.len());
        for f in &self.followers {
            followers.push(prepare_conjur(f).await?);
        }
        Ok((leader, followers))
    }

    /// A [`FlushWatch`] of slot `slot` over every follower, each applying
    /// with replication origin `origin`, sampled every `interval`.
    pub fn flush_watch(&self, slot: &str, origin: &str, interval: Duration) -> FlushWatch {
        FlushWatch::spawn(
            self.leader.url(CONJUR_DB),
            slot.to_owned(),
            self.followers
                .iter()
                .map(|f| WatchedFollower {
                    url: f.url(CONJUR_DB),
                    origin: origin.to_owned(),
                })
                .collect(),
            interval,
        )
    }

    /// Superuser connection to the leader's `conjur` database.
    pub async fn leader_client(&self) -> Result<tokio_postgres::Client, HarnessError> {
        self.leader.connect(CONJUR_DB).await
    }
}
