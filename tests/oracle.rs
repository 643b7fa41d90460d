//! The replica-set oracle (`harness::oracle`) against an independent in-Rust evaluation
//! of the same rules, on random graphs (membership cycles, ownership chains, grants to
//! layers, cross-account roles) and after random grant changes; and against the
//! schema's own `is_role_allowed_to` / `is_resource_visible`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pgsieve::harness::conjur::{self, ReplicaSet};
use pgsieve::harness::generate::{PolicySpec, RandomGraph, RandomGraphSpec};
use pgsieve::harness::workload::{self, Change, PolicyLoad};
use pgsieve::harness::{Cluster, ClusterSpec, OracleRule, variables_in_set};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::ok;

/// The authorization state, kept in Rust from what the test wrote.
#[derive(Debug, Default)]
struct Model {
    roles: BTreeSet<String>,
    /// (role_id, member_id, ownership)
    edges: BTreeSet<(String, String, bool)>,
    owner: BTreeMap<String, String>,
    /// (resource_id, role_id, privilege)
    perms: BTreeSet<(String, String, String)>,
}

impl Model {
    fn from_graph(g: &RandomGraph) -> Model {
        let mut m = Model::default();
        for acct in ["acme", "other", "system"] {
            let admin = format!("{acct}:user:admin");
            let root = format!("{acct}:policy:root");
            m.roles.insert(admin.clone());
            m.roles.insert(root.clone());
            m.set_owner(&admin, &admin);
            m.set_owner(&root, &admin);
        }
        m.load(&g.load);
        m
    }

    fn load(&mut self, load: &PolicyLoad) {
        for r in &load.roles {
            self.roles.insert(r.role_id.clone());
        }
        for e in &load.memberships {
            self.edges
                .insert((e.role_id.clone(), e.member_id.clone(), false));
        }
        for r in &load.resources {
            self.set_owner(&r.resource_id, &r.owner_id);
        }
        for p in &load.permissions {
            self.perms.insert((
                p.resource_id.clone(),
                p.role_id.clone(),
                p.privilege.clone(),
            ));
        }
    }

    /// Conjur's ownership rule: a resource that is also a role has its owner as an
    /// (ownership) member.
    fn set_owner(&mut self, resource: &str, owner: &str) {
        if let Some(old) = self.owner.insert(resource.into(), owner.into()) {
            self.edges.remove(&(resource.into(), old, true));
        }
        if self.roles.contains(resource) {
            self.edges.insert((resource.into(), owner.into(), true));
        }
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::GrantRole { role, member } => {
                self.edges.insert((role.clone(), member.clone(), false));
            }
            Change::RevokeRole { role, member } => {
                self.edges.remove(&(role.clone(), member.clone(), false));
            }
            Change::Permit {
                role,
                privilege,
                resource,
            } => {
                self.perms
                    .insert((resource.clone(), role.clone(), privilege.clone()));
            }
            Change::Deny {
                role,
                privilege,
                resource,
            } => {
                self.perms
                    .remove(&(resource.clone(), role.clone(), privilege.clone()));
            }
            Change::SetOwner { resource, owner } => self.set_owner(resource, owner),
            Change::DeleteResource { resource } => {
                assert!(
                    resource.contains(":variable:"),
                    "model deletes variables only"
                );
                self.owner.remove(resource);
                self.perms.retain(|(r, _, _)| r != resource);
            }
            Change::DeleteRole { .. } => unreachable!("not generated"),
        }
    }

    /// G and every role reachable from it along member → role edges (breadth first).
    fn closure(&self, group: &str) -> BTreeSet<String> {
        let mut up: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (role, member, _) in &self.edges {
            up.entry(member.as_str()).or_default().push(role.as_str());
        }
        let mut seen = BTreeSet::from([group.to_string()]);
        let mut queue = VecDeque::from([group.to_string()]);
        while let Some(r) = queue.pop_front() {
            for next in up.get(r.as_str()).into_iter().flatten() {
                if seen.insert(next.to_string()) {
                    queue.push_back(next.to_string());
                }
            }
        }
        seen
    }

    fn in_set(&self, group: &str, rule: OracleRule) -> BTreeSet<String> {
        let closure = self.closure(group);
        self.owner
            .iter()
            .filter(|(res, _)| res.split(':').nth(1) == Some("variable"))
            .filter(|(res, owner)| {
                closure.contains(*owner)
                    || self.perms.iter().any(|(r, role, privilege)| {
                        r == *res
                            && closure.contains(role)
                            && (rule == OracleRule::Any || privilege == "execute")
                    })
            })
            .map(|(res, _)| res.clone())
            .collect()
    }
}

/// A random change the model can follow, or `None` when there is nothing to change.
fn random_change(rng: &mut StdRng, g: &RandomGraph, model: &Model) -> Option<Change> {
    let pick = |rng: &mut StdRng, v: &[String]| v[rng.gen_range(0..v.len())].clone();
    let live_vars: Vec<String> = g
        .variables
        .iter()
        .filter(|v| model.owner.contains_key(*v))
        .cloned()
        .collect();
    if live_vars.is_empty() {
        return None;
    }
    Some(match rng.gen_range(0..7) {
        0 => Change::GrantRole {
            role: pick(rng, &g.roles),
            member: pick(rng, &g.data_groups),
        },
        1 => Change::GrantRole {
            role: pick(rng, &g.roles),
            member: pick(rng, &g.roles),
        },
        2 => {
            let plain: Vec<_> = model.edges.iter().filter(|e| !e.2).collect();
            if plain.is_empty() {
                return None;
            }
            let (role, member, _) = plain[rng.gen_range(0..plain.len())].clone();
            Change::RevokeRole { role, member }
        }
        3 => Change::Permit {
            role: pick(rng, &g.roles),
            privilege: ["read", "execute"][rng.gen_range(0..2)].into(),
            resource: pick(rng, &live_vars),
        },
        4 => {
            let perms: Vec<_> = model.perms.iter().collect();
            if perms.is_empty() {
                return None;
            }
            let (resource, role, privilege) = perms[rng.gen_range(0..perms.len())].clone();
            Change::Deny {
                role,
                privilege,
                resource,
            }
        }
        5 => {
            // Re-own a variable or a role-resource (moves an ownership membership).
            let resource = if rng.gen_bool(0.5) {
                pick(rng, &live_vars)
            } else {
                pick(rng, &g.roles)
            };
            Change::SetOwner {
                resource,
                owner: pick(rng, &g.roles),
            }
        }
        _ => Change::DeleteResource {
            resource: pick(rng, &live_vars),
        },
    })
}

async fn memberships_in_db(client: &tokio_postgres::Client) -> BTreeSet<(String, String, bool)> {
    client
        .query(
            "SELECT role_id, member_id, ownership FROM role_memberships",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn assert_agrees(client: &tokio_postgres::Client, g: &RandomGraph, model: &Model, ctx: &str) {
    assert_eq!(
        memberships_in_db(client).await,
        model.edges,
        "{ctx}: memberships (explicit + ownership triggers)"
    );
    for group in &g.data_groups {
        for rule in [OracleRule::Execute, OracleRule::Any] {
            let got = ok(variables_in_set(client, group, rule).await);
            let want = model.in_set(group, rule);
            assert_eq!(got, want, "{ctx}: {group} {rule:?}");
        }
        // Conjur's own functions agree with the oracle, variable by variable.
        let live: Vec<&String> = g
            .variables
            .iter()
            .filter(|v| model.owner.contains_key(*v))
            .collect();
        let rows = client
            .query(
                "SELECT v, is_role_allowed_to($1, 'execute', v), is_resource_visible(v, $1)
                 FROM unnest($2::text[]) AS v",
                &[group, &live],
            )
            .await
            .unwrap();
        let execute = model.in_set(group, OracleRule::Execute);
        let any = model.in_set(group, OracleRule::Any);
        for row in rows {
            let (var, allowed, visible): (String, bool, bool) =
                (row.get(0), row.get(1), row.get(2));
            assert_eq!(
                allowed,
                execute.contains(&var),
                "{ctx}: is_role_allowed_to({group}, execute, {var})"
            );
            assert_eq!(
                visible,
                any.contains(&var),
                "{ctx}: is_resource_visible({var}, {group})"
            );
        }
    }
}

#[tokio::test]
async fn oracle_matches_an_independent_evaluation_on_random_graphs() {
    let c = ok(Cluster::start(ClusterSpec::leader("oracle")));
    let mut nonempty = 0;
    for seed in 0..8u64 {
        let db = format!("random_{seed}");
        ok(c.psql("postgres", &format!("CREATE DATABASE {db}")));
        let mut client = ok(c.connect(&db).await);
        ok(conjur::load_schema(&client).await);
        let spec = RandomGraphSpec::small(seed);
        let g = spec.generate();
        ok(g.create(&mut client).await);
        let mut model = Model::from_graph(&g);
        assert_agrees(&client, &g, &model, &format!("seed {seed} load")).await;

        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(7919));
        for step in 0..25 {
            let Some(change) = random_change(&mut rng, &g, &model) else {
                continue;
            };
            ok(workload::policy_change(
                &mut client,
                "acme:policy:root",
                "acme:user:admin",
                std::slice::from_ref(&change),
            )
            .await);
            model.apply(&change);
            assert_agrees(
                &client,
                &g,
                &model,
                &format!("seed {seed} step {step} {change:?}"),
            )
            .await;
        }
        nonempty += g
            .data_groups
            .iter()
            .filter(|grp| !model.in_set(grp, OracleRule::Any).is_empty())
            .count();
    }
    assert!(
        nonempty > 0,
        "the random graphs put some variables in some set"
    );
}

#[tokio::test]
async fn a_set_granted_a_layer_holds_that_apps_variables() {
    let c = ok(Cluster::start(ClusterSpec::leader("oracle-layer")));
    let mut client = ok(conjur::prepare_conjur(&c).await);
    let spec = PolicySpec::new("acme", 4, 5, 1).with_seed(3);
    let pop = ok(spec.populate(&mut client).await);
    let set = ReplicaSet::new("eu");
    ok(workload::create_replica_set(&mut client, &set).await);
    let group = set.data_group();
    assert!(ok(variables_in_set(&client, &group, OracleRule::Any).await).is_empty());

    ok(workload::policy_change(
        &mut client,
        &spec.app_policy(1),
        &spec.admin(),
        &[Change::GrantRole {
            role: spec.layer(1),
            member: group.clone(),
        }],
    )
    .await);
    let app1: BTreeSet<String> = (0..5).map(|v| spec.variable(1, v)).collect();
    assert_eq!(
        ok(variables_in_set(&client, &group, OracleRule::Execute).await),
        app1
    );
    // `any` adds the variables of other apps that app 1's layer may only read.
    let [_, body] = spec.loads();
    let cross: BTreeSet<String> = body
        .permissions
        .iter()
        .filter(|p| p.role_id == spec.layer(1) && p.privilege == "read")
        .map(|p| p.resource_id.clone())
        .collect();
    let any: BTreeSet<String> = app1.union(&cross).cloned().collect();
    assert_eq!(
        ok(variables_in_set(&client, &group, OracleRule::Any).await),
        any
    );

    // Owning the app's policy (ownership grants the whole subtree) is enough too.
    let other = ReplicaSet::in_account("acme", "owners");
    ok(workload::create_replica_set(&mut client, &other).await);
    ok(workload::policy_change(
        &mut client,
        &spec.base_policy(),
        &spec.admin(),
        &[Change::SetOwner {
            resource: spec.app_policy(2),
            owner: other.data_group(),
        }],
    )
    .await);
    let app2: BTreeSet<String> = (0..5).map(|v| spec.variable(2, v)).collect();
    assert_eq!(
        ok(variables_in_set(&client, &other.data_group(), OracleRule::Execute).await),
        app2
    );
    assert_eq!(pop.variables.len(), 20);
}
