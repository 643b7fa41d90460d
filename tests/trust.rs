//! The follower decides nothing (ARCHITECTURE.md, "Trust model"): rows
//! written on a follower never widen what it receives, a changed replica-set
//! configuration takes effect at the next start through the reconcile, secrets
//! of every resource kind follow the rule, and `run` refuses a publication
//! that cannot carry the decisions. The oracle is the from-scratch SQL query
//! on the leader (`harness::oracle`), never pgsieve's model.

use std::time::Duration;

use pgsieve::harness::Topology;
use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::compare::expected_secrets;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::invariants::{LeakWatch, LeakWatched};
use pgsieve::harness::oracle::{OracleRule, resources_in_set};
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess, run_pgsieve};
use pgsieve::harness::workload::{
    Change, apply_changes, create_replica_set, grant_layers_to_sets, rotate_secret,
};
use pgsieve::run::start::ids_digest;
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::scene::{Scene, start_again_streaming};
use crate::support::{
    assert_no_leak, never_granted_variables, ok, rows_written_since, xid_horizon,
};

/// Rows an attacker with write access to the follower plants to pull app 2
/// and app 4 into east: a membership, a permission, an owner change, and a
/// shadowing `role_memberships` in the connecting user's `"$user"` schema.
async fn poison(scene: &Scene) {
    let east = scene.east.data_group();
    let spec = &scene.spec;
    let sql = format!(
        "INSERT INTO public.role_memberships (role_id, member_id, admin_option, ownership) \
           VALUES ('{layer2}', '{east}', false, false); \
         INSERT INTO public.permissions (privilege, resource_id, role_id) \
           VALUES ('execute', '{v40}', '{east}'); \
         UPDATE public.resources SET owner_id = '{east}' WHERE resource_id = '{v41}'; \
         CREATE SCHEMA IF NOT EXISTS postgres; \
         CREATE TABLE postgres.role_memberships (LIKE public.role_memberships); \
         INSERT INTO postgres.role_memberships SELECT * FROM public.role_memberships; \
         INSERT INTO postgres.role_memberships (role_id, member_id, admin_option, ownership) \
           VALUES ('{policy4}', '{east}', false, false);",
        layer2 = spec.layer(2),
        v40 = spec.variable(4, 0),
        v41 = spec.variable(4, 1),
        policy4 = spec.app_policy(4),
    );
    scene
        .follower
        .batch_execute(&sql)
        .await
        .expect("poisoning the follower");
}

/// Rotates every never-granted variable `rounds` times on the leader.
async fn rotate(leader: &Client, variables: &[String], rounds: usize) {
    for round in 0..rounds {
        for v in variables {
            ok(rotate_secret(leader, v, format!("rot-{round}").as_bytes(), None).await);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_on_a_follower_never_widen_its_set_across_a_sigkill() {
    let scene = Scene::new(0).await;
    // App 2's and app 4's variables are outside east for good.
    let mut outside = never_granted_variables(&scene.leader, &scene.spec, 4).await;
    outside.extend(never_granted_variables(&scene.leader, &scene.spec, 2).await);
    let watch = LeakWatch::spawn(
        vec![LeakWatched {
            url: scene.topology.followers[0].url(CONJUR_DB),
            never_granted: outside.clone(),
        }],
        Duration::from_millis(20),
    );
    let mut pgsieve = ok(PgsieveProcess::start(
        &scene.config(scene.entry(Some(&scene.east))),
    ));
    scene
        .assert_projection(
            &pgsieve,
            Some(&scene.east),
            OracleRule::Execute,
            &[],
            "the initial copy",
        )
        .await;

    poison(&scene).await;
    pgsieve.kill();
    ok(pgsieve.start_again());
    rotate(&scene.leader, &outside, 50).await;
    scene
        .assert_projection(
            &pgsieve,
            Some(&scene.east),
            OracleRule::Execute,
            &[],
            "poisoning, SIGKILL, restart and 50 rotations",
        )
        .await;
    assert_no_leak(&ok(watch.stop().await), 10, &pgsieve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_on_a_hub_follower_never_widen_any_set_across_a_rewind() {
    let mut topology = ok(Topology::start(2));
    let (mut leader, mut followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    let west = ReplicaSet::new("west");
    ok(create_replica_set(&mut leader, &east).await);
    ok(create_replica_set(&mut leader, &west).await);
    let spec = PolicySpec::new("acme", 5, 5, 2).with_seed(12);
    let pop = ok(spec.populate(&mut leader).await);
    ok(grant_layers_to_sets(&leader, &pop.layers[..2], &[east.clone(), west.clone()]).await);
    let outside = never_granted_variables(&leader, &spec, 4).await;
    let watch = LeakWatch::spawn(
        topology
            .followers
            .iter()
            .map(|f| LeakWatched {
                url: f.url(CONJUR_DB),
                never_granted: outside.clone(),
            })
            .collect(),
        Duration::from_millis(20),
    );
    let entries = vec![
        FollowerEntry::filtered("east", &topology.followers[0], &east.data_group()),
        FollowerEntry::filtered("west", &topology.followers[1], &west.data_group()),
    ];
    let config = PgsieveConfig::new(&topology.leader, "pgsieve_hub", entries);
    let pgsieve = ok(PgsieveProcess::start(&config));
    let origin = "pgsieve_pgsieve_hub";
    for f in &followers {
        wait_caught_up(&leader, f, origin, &pgsieve, Duration::from_secs(60)).await;
    }
    // Poison east: its data group joins app 4's policy there.
    followers[0]
        .batch_execute(&format!(
            "INSERT INTO public.role_memberships (role_id, member_id, admin_option, ownership) \
             VALUES ('{}', '{}', false, false)",
            spec.app_policy(4),
            east.data_group()
        ))
        .await
        .expect("poisoning east");
    // Detach east (its follower restarts), let it rejoin by a rewind.
    topology.followers[0].stop_fast();
    rotate(&leader, &outside, 25).await;
    ok(topology.followers[0].start_again());
    followers[0] = ok(topology.followers[0].connect(CONJUR_DB).await);
    rotate(&leader, &outside, 25).await;
    for (client, set) in followers.iter().zip([&east, &west]) {
        wait_caught_up(&leader, client, origin, &pgsieve, Duration::from_secs(90)).await;
        let want = ok(expected_secrets(&leader, &set.data_group(), OracleRule::Execute, &[]).await);
        let got = ok(pgsieve::harness::compare::dump_table(client, "secrets").await);
        assert_eq!(want, got, "{}: secrets differ\n{}", set.name, pgsieve.log());
    }
    assert!(
        pgsieve.log().contains("Rewinding"),
        "east never rejoined by a rewind:\n{}",
        pgsieve.log()
    );
    assert_no_leak(&ok(watch.stop().await), 10, &pgsieve.log());
}

/// Restarts `pgsieve` with `entry` as its only follower.
fn reconfigure(scene: &Scene, pgsieve: &mut PgsieveProcess, entry: FollowerEntry) {
    std::fs::write(pgsieve.config_path(), scene.config(entry).to_toml()).expect("config");
    scene.restart(pgsieve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_configuration_takes_effect_through_the_reconcile() {
    let scene = Scene::new(0).await;
    // A read grant puts app 3's first variable in east only under rule `any`.
    ok(apply_changes(
        &scene.leader,
        None,
        &[Change::Permit {
            role: scene.east.data_group(),
            privilege: "read".into(),
            resource: scene.pop.variables[3 * 5].clone(),
        }],
    )
    .await);
    let mut pgsieve = ok(PgsieveProcess::start(
        &scene.config(scene.entry(Some(&scene.east))),
    ));
    let (east, west) = (scene.east.clone(), scene.west.clone());
    scene.assert_east(&pgsieve, "the initial copy").await;

    let always = format!(
        "{}*",
        scene.spec.app_policy(4).replace(":policy:", ":variable:")
    );
    let steps: Vec<(&str, Option<&ReplicaSet>, &str, Vec<&str>)> = vec![
        ("east → west", Some(&west), "execute", vec![]),
        ("west → no set", None, "execute", vec![]),
        ("no set → east", Some(&east), "execute", vec![]),
        ("privilege execute → any", Some(&east), "any", vec![]),
        ("privilege any → execute", Some(&east), "execute", vec![]),
        (
            "always added",
            Some(&east),
            "execute",
            vec![always.as_str()],
        ),
        ("always removed", Some(&east), "execute", vec![]),
    ];
    for (step, set, privilege, always) in steps {
        let horizon = xid_horizon(&scene.follower).await;
        let mut entry = scene.entry(set);
        entry.privilege = privilege;
        entry.always = always.iter().map(|s| (*s).to_owned()).collect();
        reconfigure(&scene, &mut pgsieve, entry);
        let rule = if privilege == "any" {
            OracleRule::Any
        } else {
            OracleRule::Execute
        };
        scene
            .assert_projection(&pgsieve, set, rule, &always, step)
            .await;
        assert_eq!(
            rows_written_since(&scene.follower, horizon, Some("secrets")).await,
            0,
            "{step}: tables other than secrets were written\n{}",
            pgsieve.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_of_every_kind_follow_the_rule() {
    let scene = Scene::new(1).await;
    let spec = &scene.spec;
    // Resources of other kinds: app 0's (in east by ownership) and app 4's
    // (outside every set), plus a public key of app 4's (always passes).
    let kinds = ["webservice", "database", "Variable"];
    let ids = |app: usize| -> Vec<String> {
        let base = spec.app_policy(app).replacen(":policy:", ":", 1);
        let (account, ident) = base.split_once(':').expect("an id");
        let mut ids: Vec<String> = kinds
            .iter()
            .map(|k| format!("{account}:{k}:{ident}/thing"))
            .collect();
        ids.push(format!("{account}:public_key:{ident}/key"));
        ids.push(spec.host(app, 0));
        ids
    };
    let mut sql = String::new();
    // App 0's are owned by its layer, which east's data group is a member
    // of: in east. App 4's are owned by its policy: outside every set.
    for (app, owner) in [(0usize, spec.layer(0)), (4, spec.app_policy(4))] {
        for id in ids(app).iter().filter(|id| !id.contains(":host:")) {
            sql.push_str(&format!(
                "INSERT INTO public.resources (resource_id, owner_id) VALUES ('{id}', '{owner}');"
            ));
        }
    }
    scene.leader.batch_execute(&sql).await.expect("resources");
    // Before the initial copy: a secret on each.
    for id in ids(0).iter().chain(&ids(4)) {
        ok(rotate_secret(&scene.leader, id, b"before", None).await);
    }
    let pgsieve = scene.start_east().await;
    let east = scene.east.clone();
    // In the stream.
    for id in ids(0).iter().chain(&ids(4)) {
        ok(rotate_secret(&scene.leader, id, b"streamed", None).await);
    }
    scene.assert_east(&pgsieve, "the stream").await;
    // A backfill: app 4's layer joins east, so its policy's resources do not
    // (ownership is the policy's), but an execute grant on the webservice does.
    ok(apply_changes(
        &scene.leader,
        None,
        &[Change::Permit {
            role: east.data_group(),
            privilege: "execute".into(),
            resource: ids(4)[0].clone(),
        }],
    )
    .await);
    scene.assert_east(&pgsieve, "a grant on a webservice").await;
    let held: i64 = scene
        .follower
        .query_one(
            "SELECT count(*) FROM public.secrets WHERE resource_id = ANY($1)",
            &[&ids(4)],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        held, 4,
        "app 4: the granted webservice's two versions and the public key's two, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_publication_that_cannot_carry_the_decisions() {
    let scene = Scene::new(0).await;
    let cases = [
        (
            "ALTER PUBLICATION pgsieve SET (publish = 'insert, update, truncate')",
            "does not publish delete",
            "ALTER PUBLICATION pgsieve SET (publish = 'insert, update, delete, truncate')",
        ),
        (
            "ALTER PUBLICATION pgsieve DROP TABLE public.permissions",
            "lacks public.permissions",
            "ALTER PUBLICATION pgsieve ADD TABLE public.permissions",
        ),
        (
            "DROP PUBLICATION pgsieve; CREATE PUBLICATION pgsieve FOR ALL TABLES",
            "FOR ALL TABLES",
            "",
        ),
    ];
    let config = scene.config(scene.entry(Some(&scene.east)));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pgsieve.toml");
    std::fs::write(&path, config.to_toml()).expect("config");
    let path = path.to_str().expect("utf-8 path");
    for (break_it, says, repair) in cases {
        scene.leader.batch_execute(break_it).await.expect(break_it);
        let (code, _, stderr) = ok(run_pgsieve(&["run", "-c", path], Duration::from_secs(60)));
        assert_eq!(code, Some(1), "{break_it}: exit code; stderr:\n{stderr}");
        assert!(
            stderr.contains(says),
            "{break_it}: the error should say {says:?}:\n{stderr}"
        );
        let slots: i64 = scene
            .leader
            .query_one("SELECT count(*) FROM pg_replication_slots", &[])
            .await
            .expect("slots")
            .get(0);
        assert_eq!(slots, 0, "{break_it}: a slot was created");
        if !repair.is_empty() {
            scene.leader.batch_execute(repair).await.expect(repair);
        }
    }
}

/// The digest `pgsieve` logs for the model of `set` at its last start.
fn last_model_digest(log: &str, set: &str) -> Option<(usize, String)> {
    let line = log.lines().rev().find(|l| {
        l.contains("Model built from the leader.") && l.contains(&format!("set={set} "))
    })?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    Some((field("resources")?.parse().ok()?, field("digest")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_built_at_every_restart_is_the_leaders() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let scene = Scene::new(0).await;
    let outside = never_granted_variables(&scene.leader, &scene.spec, 4).await;
    let watch = LeakWatch::spawn(
        vec![LeakWatched {
            url: scene.topology.followers[0].url(CONJUR_DB),
            never_granted: outside.clone(),
        }],
        Duration::from_millis(20),
    );
    let mut pgsieve = ok(PgsieveProcess::start(
        &scene.config(scene.entry(Some(&scene.east))),
    ));
    let east = scene.east.clone();
    let group = east.data_group();
    let mut rng = StdRng::seed_from_u64(13);
    // Apps 0..4 only: app 4 stays outside east for the leak watch.
    let var = |rng: &mut StdRng| scene.pop.variables[rng.gen_range(0..20)].clone();
    for round in 0..6 {
        let kill_at = rng.gen_range(0..30);
        for op in 0..30 {
            if op == kill_at {
                pgsieve.kill();
            }
            let change = match rng.gen_range(0..6) {
                0 => Change::GrantRole {
                    role: scene.pop.layers[rng.gen_range(0..4)].clone(),
                    member: group.clone(),
                },
                1 => Change::RevokeRole {
                    role: scene.pop.layers[rng.gen_range(0..4)].clone(),
                    member: group.clone(),
                },
                2 => Change::Permit {
                    role: group.clone(),
                    privilege: "execute".into(),
                    resource: var(&mut rng),
                },
                3 => Change::Deny {
                    role: group.clone(),
                    privilege: "execute".into(),
                    resource: var(&mut rng),
                },
                4 => Change::SetOwner {
                    resource: var(&mut rng),
                    owner: if rng.gen_bool(0.5) {
                        group.clone()
                    } else {
                        scene.spec.app_policy(0)
                    },
                },
                _ => {
                    let v = var(&mut rng);
                    ok(
                        rotate_secret(&scene.leader, &v, format!("r{round}-{op}").as_bytes(), None)
                            .await,
                    );
                    continue;
                }
            };
            // A grant that exists already, or a revoke of nothing, is a no-op.
            let _ = apply_changes(&scene.leader, None, &[change]).await;
        }
        for v in &outside {
            ok(rotate_secret(&scene.leader, v, format!("out-{round}").as_bytes(), None).await);
        }
        // The leader is quiet (but for heartbeats) while pgsieve starts, so
        // the leader's state now is the state at the model's snapshot.
        start_again_streaming(&mut pgsieve);
        let oracle = ok(resources_in_set(&scene.leader, &group, OracleRule::Execute).await);
        let ids: Vec<&str> = oracle.iter().map(String::as_str).collect();
        let want = (ids.len(), format!("{:016x}", ids_digest(&ids)));
        assert_eq!(
            last_model_digest(&pgsieve.log(), &group),
            Some(want),
            "round {round}: the model built at start differs from the leader's oracle\n{}",
            pgsieve.log()
        );
        scene
            .assert_projection(
                &pgsieve,
                Some(&east),
                OracleRule::Execute,
                &[],
                &format!("round {round}"),
            )
            .await;
    }
    assert_no_leak(&ok(watch.stop().await), 10, &pgsieve.log());
}

/// A follower can hold an in-set variable without some of its versions (a
/// grant's copy that found the variable revoked again on the leader copies
/// nothing, later versions stream in, and a SIGKILL before the next grant
/// replays that grant inside the window, where it has no effect: the SIGKILL
/// crash test met it). Here the hole is made directly on the follower: the
/// next start must fill it, and only with rows of the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_missing_versions_of_a_variable_it_holds_is_repaired_at_start() {
    let scene = Scene::new(0).await;
    let mut pgsieve = scene.start_east().await;
    let group = scene.east.data_group();
    let in_set = ok(resources_in_set(&scene.leader, &group, OracleRule::Execute).await);
    let variable = in_set
        .iter()
        .find(|id| id.contains(":variable:"))
        .expect("east holds a variable")
        .clone();
    rotate(&scene.leader, std::slice::from_ref(&variable), 5).await;
    scene.assert_east(&pgsieve, "five rotations").await;

    pgsieve.kill();
    let removed = scene
        .follower
        .execute(
            "DELETE FROM public.secrets WHERE resource_id = $1 \
             AND version < (SELECT max(version) FROM public.secrets WHERE resource_id = $1)",
            &[&variable],
        )
        .await
        .expect("making the hole on the follower");
    assert!(
        removed >= 5,
        "the hole holds the older versions ({removed} rows)"
    );
    start_again_streaming(&mut pgsieve);
    scene
        .assert_east(
            &pgsieve,
            "older versions removed on the follower, SIGKILL and restart",
        )
        .await;
    assert!(
        pgsieve.log().contains("repaired=1"),
        "the reconcile reports the repair:\n{}",
        pgsieve.log()
    );
}
