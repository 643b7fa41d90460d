//! Partial replication: two followers, two overlapping replica sets, one
//! pgsieve sidecar each. After every step each follower must equal the
//! leader table by table, except `secrets`, which must equal the leader's
//! rows of variables the oracle query puts in that follower's set. A leak
//! watch samples the followers throughout: no `secrets` row of a variable
//! never granted to a follower's set may ever appear there, not even for a
//! moment. A revoke committed while pgsieve is stopped purges the
//! variable's rows when it is applied, and a version written after it never
//! reaches the follower.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::Topology;
use pgsieve::harness::cluster::{CONJUR_DB, connect_url};
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::conjur::{ReplicaSet, id};
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::invariants::{
    LeakWatch, LeakWatched, current_wal_insert_lsn, never_granted_rows, origin_progress,
};
use pgsieve::harness::oracle::OracleRule;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{
    Change, add_secret, apply_changes, create_replica_set, grant_layers_to_sets, rotate_secret,
    set_expiration,
};
use pgsieve_protocol::Lsn;
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::{assert_no_leak, never_granted_variables, ok};

/// Poll interval of the leak watch.
const LEAK_EVERY: Duration = Duration::from_millis(20);

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
    // App 4 is never granted to either set: the leak watch's variables.
    let spec = PolicySpec::new("acme", 5, 5, 3).with_seed(7);
    let pop = ok(spec.populate(&mut leader).await);
    let never_granted = never_granted_variables(&leader, &spec, 4).await;
    // Before pgsieve starts: east holds app0 through its layer, west app1.
    ok(grant_layers_to_sets(&leader, &pop.layers[..2], &[east.clone(), west.clone()]).await);

    let leak_watch = LeakWatch::spawn(
        topology
            .followers
            .iter()
            .map(|f| LeakWatched {
                url: f.url(CONJUR_DB),
                never_granted: never_granted.clone(),
            })
            .collect(),
        LEAK_EVERY,
    );

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
    for app in 0..5 {
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

    let leaks = ok(leak_watch.stop().await);
    let log: String = processes.iter().map(|(_, p)| p.log()).collect();
    assert_no_leak(&leaks, 50, &log);
    let on_leader: i64 = ok(never_granted_rows(&leader, &never_granted).await)
        .iter()
        .map(|l| l.rows)
        .sum();
    assert!(on_leader > 0, "the never-granted variables hold no secrets");
    println!(
        "leak watch: {} samples ({} unavailable) of {} never-granted variables \
         ({on_leader} secrets rows on the leader), 0 violations",
        leaks.samples,
        leaks.unavailable,
        never_granted.len()
    );
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

/// What [`watch_revoked`] saw.
struct RevokedReport {
    samples: u64,
    /// Samples taken once the origin had recorded the revoke.
    after_revoke: u64,
    violations: Vec<String>,
}

/// Polls `follower` every few ms until `stop`, checking variables revoked from its set
/// while pgsieve was stopped: a version above the one it held before the stop
/// (`before`) must never appear, and once the follower's origin `origin` has recorded
/// `revoked_at` (a WAL position at or after the revoke's commit) no row may be left.
/// Origin progress is set at commit just before the rows turn visible, so the second
/// rule applies from the sample after the one that saw the origin pass.
fn watch_revoked(
    url: String,
    origin: String,
    before: BTreeMap<String, i32>,
    revoked_at: Lsn,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<RevokedReport> {
    tokio::spawn(async move {
        let client = ok(connect_url(&url).await);
        let ids: Vec<String> = before.keys().cloned().collect();
        let mut report = RevokedReport {
            samples: 0,
            after_revoke: 0,
            violations: Vec::new(),
        };
        let mut passed = false;
        while !stop.load(Ordering::Acquire) {
            let progress = ok(origin_progress(&client, &origin).await);
            for l in ok(never_granted_rows(&client, &ids).await) {
                let held = before.get(&l.variable).copied().unwrap_or(0);
                if l.versions.1 > held {
                    report.violations.push(format!(
                        "{}: version {} of {} (revoked while pgsieve was stopped; the \
                         follower held versions up to {held}) reached the follower",
                        l.at, l.versions.1, l.variable
                    ));
                }
                if passed {
                    report.violations.push(format!(
                        "{}: {} row(s) of {} left on the follower after it applied the \
                         revoke (origin at or past {revoked_at})",
                        l.at, l.rows, l.variable
                    ));
                }
            }
            report.samples += 1;
            if passed {
                report.after_revoke += 1;
            }
            passed = progress.is_some_and(|p| p >= revoked_at);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        report
    })
}

fn one_follower<'a>(
    client: &'a Client,
    process: &'a PgsieveProcess,
    origin: &str,
    set: &ReplicaSet,
) -> [Follower<'a>; 1] {
    [Follower {
        client,
        process,
        origin: origin.to_owned(),
        data_group: set.data_group(),
    }]
}

/// How pgsieve is stopped before the leader revokes.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// pgsieve stopped (SIGTERM, then SIGKILL), the leader revokes variables from the set
/// and writes new versions of them, pgsieve restarts: the follower's rows of those
/// variables go when the revoke is applied, the new versions never arrive, the
/// follower ends equal to the oracle, and the never-granted app never shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_while_pgsieve_is_stopped_purges_and_never_ships_later_versions() {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let follower = &followers[0];
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    // App 0 by its layer, v(1,0) by an execute permit, v(1,1) by ownership; app 2
    // never.
    let spec = PolicySpec::new("acme", 3, 5, 3).with_seed(8);
    let pop = ok(spec.populate(&mut leader).await);
    let v = |app: usize, var: usize| pop.variables[app * 5 + var].clone();
    let never_granted = never_granted_variables(&leader, &spec, 2).await;
    ok(apply_changes(
        &leader,
        None,
        &[
            Change::GrantRole {
                role: pop.layers[0].clone(),
                member: east.data_group(),
            },
            Change::Permit {
                role: east.data_group(),
                privilege: "execute".into(),
                resource: v(1, 0),
            },
            Change::SetOwner {
                resource: v(1, 1),
                owner: east.data_group(),
            },
        ],
    )
    .await);
    let leak_watch = LeakWatch::spawn(
        vec![LeakWatched {
            url: topology.followers[0].url(CONJUR_DB),
            never_granted: never_granted.clone(),
        }],
        LEAK_EVERY,
    );
    let slot = "pgsieve_revoke_stopped";
    let origin = format!("pgsieve_{slot}");
    let mut pgsieve = ok(PgsieveProcess::start(&PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::filtered(
            "east",
            &topology.followers[0],
            &east.data_group(),
        )],
    )));
    check(
        &leader,
        &one_follower(follower, &pgsieve, &origin, &east),
        OracleRule::Execute,
        "initial copy",
    )
    .await;
    for app in 0..3 {
        ok(rotate_secret(&leader, &v(app, 2), b"while running", None).await);
    }
    check(
        &leader,
        &one_follower(follower, &pgsieve, &origin, &east),
        OracleRule::Execute,
        "rotations",
    )
    .await;

    let rounds: [(Stop, Vec<String>, Vec<Change>); 2] = [
        (
            Stop::Term,
            (0..5).map(|i| v(0, i)).collect(),
            vec![Change::RevokeRole {
                role: pop.layers[0].clone(),
                member: east.data_group(),
            }],
        ),
        (
            Stop::Kill,
            vec![v(1, 0), v(1, 1)],
            vec![
                Change::Deny {
                    role: east.data_group(),
                    privilege: "execute".into(),
                    resource: v(1, 0),
                },
                Change::SetOwner {
                    resource: v(1, 1),
                    owner: spec.admin(),
                },
            ],
        ),
    ];
    for (stop, revoked, changes) in rounds {
        // Replicated before the stop.
        let mut before = BTreeMap::new();
        for var in &revoked {
            let held: i32 = follower
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM secrets WHERE resource_id = $1",
                    &[var],
                )
                .await
                .unwrap()
                .get(0);
            assert!(held > 0, "{var} was not replicated before the stop");
            before.insert(var.clone(), held);
        }
        match stop {
            Stop::Term => assert_eq!(
                pgsieve.terminate(Duration::from_secs(20)),
                Some(0),
                "pgsieve did not stop cleanly; log:\n{}",
                pgsieve.log()
            ),
            Stop::Kill => pgsieve.kill(),
        }
        // The revoke, in one transaction, then new versions of every revoked variable.
        {
            let tx = leader.transaction().await.unwrap();
            ok(apply_changes(&tx, None, &changes).await);
            tx.commit().await.unwrap();
        }
        let revoked_at = ok(current_wal_insert_lsn(&leader).await);
        for var in &revoked {
            let version = ok(rotate_secret(&leader, var, b"after the revoke", None).await);
            assert!(version > before[var]);
        }
        ok(add_secret(&mut leader, &revoked[0], b"api write after the revoke").await);
        let stop_flag = Arc::new(AtomicBool::new(false));
        let watch = watch_revoked(
            topology.followers[0].url(CONJUR_DB),
            origin.clone(),
            before,
            revoked_at,
            stop_flag.clone(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        ok(pgsieve.start_again());
        wait_caught_up(
            &leader,
            follower,
            &origin,
            &pgsieve,
            Duration::from_secs(60),
        )
        .await;
        // A few samples more with the origin past the revoke.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_flag.store(true, Ordering::Release);
        let report = watch.await.expect("revoked-variable watch");
        assert!(
            report.violations.is_empty(),
            "after a revoke while pgsieve was stopped ({stop:?}):\n{}\npgsieve log:\n{}",
            report.violations[..report.violations.len().min(10)].join("\n"),
            pgsieve.log()
        );
        assert!(
            report.samples >= 10 && report.after_revoke >= 2,
            "the revoked-variable watch took {} samples, {} after the revoke",
            report.samples,
            report.after_revoke
        );
        check(
            &leader,
            &one_follower(follower, &pgsieve, &origin, &east),
            OracleRule::Execute,
            &format!("revoke while stopped ({stop:?})"),
        )
        .await;
        println!(
            "revoke while stopped ({stop:?}): {} variables revoked, {} samples ({} after \
             the revoke was applied), 0 violations",
            revoked.len(),
            report.samples,
            report.after_revoke
        );
    }

    let leaks = ok(leak_watch.stop().await);
    assert_no_leak(&leaks, 50, &pgsieve.log());
    println!(
        "leak watch: {} samples ({} unavailable) of {} never-granted variables, 0 violations",
        leaks.samples,
        leaks.unavailable,
        never_granted.len()
    );
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
}
