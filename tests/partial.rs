//! Partial replication: two followers, two overlapping replica sets, one
//! pgsieve sidecar each. After every step each follower must equal the
//! leader table by table, except `secrets`, which must equal the leader's
//! rows of variables the oracle query puts in that follower's set.

use std::time::Duration;

use pgsieve::harness::Topology;
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::conjur::{ReplicaSet, id};
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::oracle::OracleRule;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{
    Change, add_secret, apply_changes, create_replica_set, rotate_secret, set_expiration,
};
use pgsieve::setup::CONJUR_TABLES;
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::ok;

struct Follower<'a> {
    client: &'a Client,
    process: &'a PgsieveProcess,
    origin: String,
    data_group: String,
}

async fn check(leader: &Client, followers: &[Follower<'_>], rule: OracleRule, step: &str) {
    for f in followers {
        wait_caught_up(
            leader,
            f.client,
            &f.origin,
            f.process,
            Duration::from_secs(60),
        )
        .await;
        let diff =
            ok(follower_diff(leader, f.client, CONJUR_TABLES, &f.data_group, rule, &[]).await);
        assert!(
            diff.is_empty(),
            "after {step}, follower of {} differs:\n{}\npgsieve log:\n{}",
            f.data_group,
            diff.join("\n"),
            f.process.log()
        );
    }
}

/// How pgsieve is deployed for the test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One process and slot per follower.
    Sidecars,
    /// One process, one slot, both followers.
    Hub,
}

async fn grants_and_revokes_move_exactly_their_variables(rule: OracleRule, mode: Mode) {
    let topology = ok(Topology::start(2));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    let west = ReplicaSet::new("west");
    ok(create_replica_set(&mut leader, &east).await);
    ok(create_replica_set(&mut leader, &west).await);
    let spec = PolicySpec::new("acme", 4, 5, 3).with_seed(7);
    let pop = ok(spec.populate(&mut leader).await);
    // Before pgsieve starts: east holds app0 through its layer, west app1.
    ok(apply_changes(
        &leader,
        None,
        &[
            Change::GrantRole {
                role: pop.layers[0].clone(),
                member: east.data_group(),
            },
            Change::GrantRole {
                role: pop.layers[1].clone(),
                member: west.data_group(),
            },
        ],
    )
    .await);

    let privilege = if rule == OracleRule::Any {
        "any"
    } else {
        "execute"
    };
    let entries: Vec<FollowerEntry> = [&east, &west]
        .into_iter()
        .enumerate()
        .map(|(i, set)| {
            let mut entry =
                FollowerEntry::filtered(&set.name, &topology.followers[i], &set.data_group());
            entry.privilege = privilege;
            entry
        })
        .collect();
    let processes: Vec<(String, PgsieveProcess)> = match mode {
        Mode::Sidecars => entries
            .into_iter()
            .map(|entry| {
                let slot = format!("pgsieve_{}", entry.name);
                let config = PgsieveConfig::new(&topology.leader, &slot, vec![entry]);
                (slot, ok(PgsieveProcess::start(&config)))
            })
            .collect(),
        Mode::Hub => {
            let config = PgsieveConfig::new(&topology.leader, "pgsieve_hub", entries);
            vec![("pgsieve_hub".to_owned(), ok(PgsieveProcess::start(&config)))]
        }
    };
    let fs: Vec<Follower<'_>> = (0..2)
        .map(|i| {
            let (slot, process) = &processes[i.min(processes.len() - 1)];
            Follower {
                client: &followers[i],
                process,
                origin: format!("pgsieve_{slot}"),
                data_group: [&east, &west][i].data_group(),
            }
        })
        .collect();
    check(&leader, &fs, rule, "initial copy").await;

    let v = |app: usize, var: usize| pop.variables[app * 5 + var].clone();
    for app in 0..4 {
        ok(rotate_secret(&leader, &v(app, 0), b"rotated", None).await);
        ok(add_secret(&mut leader, &v(app, 1), b"api write").await);
    }
    check(&leader, &fs, rule, "rotations").await;

    // Grant by execute permit, by layer membership, by ownership.
    ok(apply_changes(
        &leader,
        None,
        &[Change::Permit {
            role: east.data_group(),
            privilege: "execute".into(),
            resource: v(2, 0),
        }],
    )
    .await);
    ok(apply_changes(
        &leader,
        None,
        &[Change::GrantRole {
            role: pop.layers[3].clone(),
            member: west.data_group(),
        }],
    )
    .await);
    ok(apply_changes(
        &leader,
        None,
        &[Change::SetOwner {
            resource: v(2, 1),
            owner: west.data_group(),
        }],
    )
    .await);
    // A read permit: in the set only under rule `any`.
    ok(apply_changes(
        &leader,
        None,
        &[Change::Permit {
            role: east.data_group(),
            privilege: "read".into(),
            resource: v(2, 2),
        }],
    )
    .await);
    check(&leader, &fs, rule, "grants").await;

    // Revoke each.
    ok(apply_changes(
        &leader,
        None,
        &[Change::Deny {
            role: east.data_group(),
            privilege: "execute".into(),
            resource: v(2, 0),
        }],
    )
    .await);
    ok(apply_changes(
        &leader,
        None,
        &[Change::RevokeRole {
            role: pop.layers[3].clone(),
            member: west.data_group(),
        }],
    )
    .await);
    ok(apply_changes(
        &leader,
        None,
        &[Change::SetOwner {
            resource: v(2, 1),
            owner: spec.admin(),
        }],
    )
    .await);
    check(&leader, &fs, rule, "revokes").await;

    // Grant and secret write in one transaction, both orders.
    {
        let tx = leader.transaction().await.unwrap();
        ok(apply_changes(
            &tx,
            None,
            &[Change::Permit {
                role: east.data_group(),
                privilege: "execute".into(),
                resource: v(3, 2),
            }],
        )
        .await);
        ok(rotate_secret(&tx, &v(3, 2), b"after grant", None).await);
        ok(rotate_secret(&tx, &v(3, 3), b"before grant", None).await);
        ok(apply_changes(
            &tx,
            None,
            &[Change::Permit {
                role: east.data_group(),
                privilege: "execute".into(),
                resource: v(3, 3),
            }],
        )
        .await);
        tx.commit().await.unwrap();
    }
    check(&leader, &fs, rule, "grant and write in one transaction").await;

    // Revoke, write, re-grant in one transaction.
    {
        let tx = leader.transaction().await.unwrap();
        ok(apply_changes(
            &tx,
            None,
            &[Change::RevokeRole {
                role: pop.layers[0].clone(),
                member: east.data_group(),
            }],
        )
        .await);
        ok(rotate_secret(&tx, &v(0, 4), b"while revoked", None).await);
        ok(apply_changes(
            &tx,
            None,
            &[Change::GrantRole {
                role: pop.layers[0].clone(),
                member: east.data_group(),
            }],
        )
        .await);
        tx.commit().await.unwrap();
    }
    check(&leader, &fs, rule, "revoke and re-grant in one transaction").await;

    // A chain of nested groups with a membership cycle.
    let g1 = id("acme", "group", "nest/g1");
    let g2 = id("acme", "group", "nest/g2");
    {
        let tx = leader.transaction().await.unwrap();
        for g in [&g1, &g2] {
            tx.execute("INSERT INTO roles (role_id) VALUES ($1)", &[g])
                .await
                .unwrap();
            tx.execute(
                "INSERT INTO resources (resource_id, owner_id) VALUES ($1, $2)",
                &[g, &spec.admin()],
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    ok(apply_changes(
        &leader,
        None,
        &[
            Change::GrantRole {
                role: g1.clone(),
                member: west.data_group(),
            },
            Change::GrantRole {
                role: g2.clone(),
                member: g1.clone(),
            },
            Change::GrantRole {
                role: g1.clone(),
                member: g2.clone(),
            },
            Change::GrantRole {
                role: pop.layers[2].clone(),
                member: g2.clone(),
            },
        ],
    )
    .await);
    check(&leader, &fs, rule, "nested groups with a cycle").await;

    // Expiration update of every version; a transaction on unfiltered tables only.
    ok(set_expiration(&leader, &v(2, 3), Some(std::time::SystemTime::now())).await);
    leader
        .execute(
            "UPDATE annotations SET value = value || '!' WHERE resource_id = $1",
            &[&v(1, 0)],
        )
        .await
        .unwrap();
    check(&leader, &fs, rule, "expiration and annotations").await;

    // Deleting a policy subtree cascades to its secrets everywhere.
    ok(apply_changes(
        &leader,
        None,
        &[Change::DeleteResource {
            resource: spec.app_policy(2),
        }],
    )
    .await);
    check(&leader, &fs, rule, "policy subtree deleted").await;

    // Foreign keys stay defined and valid on every follower.
    for f in &fs {
        let constraints: i64 = f.client
            .query_one("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace", &[])
            .await.unwrap().get(0);
        assert!(constraints >= 20, "foreign keys missing: {constraints}");
        let orphans: i64 = f.client
            .query_one("SELECT count(*) FROM secrets s WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.resource_id = s.resource_id)", &[])
            .await.unwrap().get(0);
        assert_eq!(orphans, 0, "secrets without a resource on a follower");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_rule_grants_and_revokes_move_exactly_their_variables() {
    grants_and_revokes_move_exactly_their_variables(OracleRule::Execute, Mode::Sidecars).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_mode_serves_two_replica_sets_from_one_slot() {
    grants_and_revokes_move_exactly_their_variables(OracleRule::Execute, Mode::Hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_rule_grants_and_revokes_move_exactly_their_variables() {
    grants_and_revokes_move_exactly_their_variables(OracleRule::Any, Mode::Sidecars).await;
}
