//! The mixed Conjur workload shared by the crash tests and the native-replication
//! oracle test, and the streaming topology both run it on.

use std::time::{Duration, Instant, SystemTime};

use pgsieve::harness::cluster::{Cluster, ClusterSpec};
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::workload::{
    Change, add_secret, fake_ciphertext, load_policy, policy_change, rotate_secret, set_expiration,
};
use pgsieve::harness::{HarnessError, Topology};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::support::ok;

/// A leader whose transactions beyond 64 kB are streamed (so a policy load is
/// a streamed, spooled transaction), and `followers` followers, with the
/// Conjur schema and publication.
pub(crate) async fn streaming_topology(followers: usize) -> (Topology, Client, Vec<Client>) {
    let mut specs =
        vec![ClusterSpec::leader("leader").with_conf("logical_decoding_work_mem = 64kB")];
    specs.extend((1..=followers).map(|i| ClusterSpec::follower(format!("f{i}"))));
    let mut clusters = ok(Cluster::start_all(specs)).into_iter();
    let leader = clusters.next().expect("leader started");
    let topology = Topology {
        leader,
        followers: clusters.collect(),
    };
    let (leader, followers) = ok(topology.prepare_conjur().await);
    (topology, leader, followers)
}

/// Runs `sql` on `c`, naming the server's message on failure.
async fn sql(c: &Client, sql: &str) -> Result<(), String> {
    c.batch_execute(sql).await.map_err(|e| db_message(&e, sql))
}

fn db_message(e: &tokio_postgres::Error, what: &str) -> String {
    match e.as_db_error() {
        Some(db) => format!("{what}: {}", db.message()),
        None => format!("{what}: {e}"),
    }
}

fn harness(e: HarnessError) -> String {
    e.to_string()
}

/// A seeded mix of what Conjur writes: secret rotations and API writes, key-changing
/// updates, a > 8 kB value followed by an update leaving it unchanged (TOAST `u`),
/// policy changes (with policy_log growing and being trimmed), grants and revokes to
/// replica sets, cascading deletes of whole app policies, TRUNCATE of annotations, and
/// (once) a 100 k-row policy load in one transaction.
pub(crate) struct Mix {
    rng: StdRng,
    spec: PolicySpec,
    live_apps: Vec<usize>,
    sets: Vec<ReplicaSet>,
    big: Option<PolicySpec>,
    rounds: usize,
    /// An app whose secrets are written but which is never granted, permitted or
    /// deleted (see [`Mix::never_granting`]).
    reserved: Option<usize>,
}

impl Mix {
    pub(crate) fn new(
        seed: u64,
        spec: PolicySpec,
        sets: Vec<ReplicaSet>,
        big: Option<PolicySpec>,
    ) -> Self {
        Mix {
            rng: StdRng::seed_from_u64(seed),
            live_apps: (0..spec.apps).collect(),
            spec,
            sets,
            big,
            rounds: 0,
            reserved: None,
        }
    }

    /// The same mix, keeping app `app` out of every grant, permit and delete: its
    /// variables still get rotations and API writes, but never enter a replica set,
    /// so a leak watch can treat them as never granted.
    pub(crate) fn never_granting(mut self, app: usize) -> Self {
        self.live_apps.retain(|&a| a != app);
        self.reserved = Some(app);
        self
    }

    /// How many rounds have run.
    pub(crate) fn rounds(&self) -> usize {
        self.rounds
    }

    fn some_app(&mut self) -> usize {
        self.live_apps[self.rng.gen_range(0..self.live_apps.len())]
    }

    fn some_variable(&mut self) -> String {
        let app = self.some_app();
        let v = self.rng.gen_range(0..self.spec.variables_per_app);
        self.spec.variable(app, v)
    }

    /// A variable to write a secret to: like [`Mix::some_variable`], but the
    /// reserved app (if any) is picked as often as a live one.
    fn some_secret_variable(&mut self) -> String {
        let Some(app) = self.reserved else {
            return self.some_variable();
        };
        if self.rng.gen_range(0..=self.live_apps.len()) == 0 {
            let v = self.rng.gen_range(0..self.spec.variables_per_app);
            self.spec.variable(app, v)
        } else {
            self.some_variable()
        }
    }

    /// One round of the mix; the big load (if any) goes in the second round.
    pub(crate) async fn round(&mut self, leader: &mut Client) -> Result<(), String> {
        let r = self.rounds;
        self.rounds += 1;
        if r == 1
            && let Some(big) = self.big.take()
        {
            let t = Instant::now();
            let [top, body] = big.loads();
            pgsieve::harness::workload::create_account(leader, &big.account)
                .await
                .map_err(harness)?;
            load_policy(leader, &top).await.map_err(harness)?;
            load_policy(leader, &body).await.map_err(harness)?;
            println!(
                "big policy load: {} rows in one transaction, {:.1?} on the leader",
                body.row_count(),
                t.elapsed()
            );
        }
        // Rotations (no trim) and API writes (insert + trim to 20).
        for _ in 0..3 {
            let var = self.some_secret_variable();
            rotate_secret(&*leader, &var, format!("rot-{r}").as_bytes(), None)
                .await
                .map_err(harness)?;
            let var = self.some_secret_variable();
            add_secret(leader, &var, format!("api-{r}").as_bytes())
                .await
                .map_err(harness)?;
        }
        // A value stored out of line, then an update that leaves it unchanged.
        let var = self.some_secret_variable();
        let big_value = fake_ciphertext(&mut self.rng, 9_000 + r);
        rotate_secret(&*leader, &var, &big_value, None)
            .await
            .map_err(harness)?;
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000 + r as u64);
        set_expiration(&*leader, &var, Some(when))
            .await
            .map_err(harness)?;
        // Key-changing updates: an annotation renamed, the account's key re-keyed.
        let var = self.some_variable();
        leader
            .execute(
                "INSERT INTO annotations (resource_id, name, value) VALUES ($1, 'description', 'again')
                 ON CONFLICT DO NOTHING",
                &[&var],
            )
            .await
            .map_err(|e| db_message(&e, "re-annotating"))?;
        leader
            .execute(
                "UPDATE annotations SET name = $2 WHERE resource_id = $1 AND name = 'description'",
                &[&var, &format!("description-{r}")],
            )
            .await
            .map_err(|e| db_message(&e, "renaming an annotation"))?;
        sql(
            leader,
            &format!(
                "UPDATE slosilo_keystore SET id = 'authn:{}:r{r}' WHERE id LIKE 'authn:{}%'",
                self.spec.account, self.spec.account
            ),
        )
        .await?;
        // A policy change (version row, policy_log rows, trim to 20 versions), with
        // grants and revokes moving variables in and out of the replica sets.
        let mut changes = Vec::new();
        for set in &self.sets.clone() {
            let app = self.some_app();
            let layer = self.spec.layer(app);
            let var = self.some_variable();
            changes.push(match self.rng.gen_range(0..4) {
                0 => Change::GrantRole {
                    role: layer,
                    member: set.data_group(),
                },
                1 => Change::RevokeRole {
                    role: layer,
                    member: set.data_group(),
                },
                2 => Change::Permit {
                    role: set.data_group(),
                    privilege: "execute".into(),
                    resource: var,
                },
                _ => Change::Deny {
                    role: set.data_group(),
                    privilege: "execute".into(),
                    resource: var,
                },
            });
        }
        let app = self.some_app();
        changes.push(Change::Permit {
            role: self.spec.layer(app),
            privilege: format!("update-{r}"),
            resource: self.some_variable(),
        });
        policy_change(
            leader,
            &self.spec.base_policy(),
            &self.spec.admin(),
            &changes,
        )
        .await
        .map_err(harness)?;
        // policy_log trimmed on its own (REPLICA IDENTITY FULL deletes).
        if r % 3 == 2 {
            sql(
                leader,
                "DELETE FROM policy_log WHERE ctid IN (SELECT ctid FROM policy_log ORDER BY at, ctid LIMIT 5)",
            )
            .await?;
        }
        // A whole app policy deleted: cascades to its roles, resources, secrets,
        // permissions, annotations and memberships.
        if r % 2 == 1 && self.live_apps.len() > 4 {
            let app = self
                .live_apps
                .remove(self.rng.gen_range(0..self.live_apps.len()));
            leader
                .execute(
                    "DELETE FROM resources WHERE resource_id = $1",
                    &[&self.spec.app_policy(app)],
                )
                .await
                .map_err(|e| db_message(&e, "deleting an app policy"))?;
        }
        if r % 7 == 4 {
            sql(leader, "TRUNCATE annotations").await?;
        }
        Ok(())
    }
}
