//! The incremental model against the naive evaluator after every step of random change
//! sequences on random policies; per-transaction flips against the naive flips; bulk
//! build against incremental feed.

use crate::naive::{self, Tables};
use pgsieve_filters::{Change, Flip, Model, ModelTable, ReplicaSetSpec, Rule, SetMask};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const GROUP_SYS: &str = "system:group:conjur/replication-sets/s0/replicated-data";
const GROUP_ACCT: &str = "acct:group:conjur/replication-sets/s1/replicated-data";

/// Roles: both data groups, layers, a policy, a cross-account host, and a variable id used
/// as a role (generic `!role` allows any kind).
const ROLES: &[&str] = &[
    GROUP_SYS,
    GROUP_ACCT,
    "acct:layer:l0",
    "acct:layer:l1",
    "acct:policy:p",
    "other:host:h",
    "acct:user:admin",
    "acct:variable:v0",
];

/// Resources: variables (one with ':' in its identifier, one under an always pattern, one in
/// account `system`), a webservice and a mixed-case kind (filtered like variables), and a
/// public key (never filtered).
const RESOURCES: &[&str] = &[
    "acct:variable:v0",
    "acct:variable:v1",
    "acct:variable:db:pass",
    "acct:variable:conjur/shared/k",
    "system:variable:v0",
    "acct:public_key:user/admin/k",
    "acct:webservice:w",
    "acct:Variable:mixed",
];

const PRIVILEGES: &[&str] = &["execute", "read", "update"];

/// Ids checked after every step (resources, roles, never-seen ids, garbage).
fn probe_ids() -> Vec<&'static str> {
    let mut ids: Vec<&str> = RESOURCES.iter().chain(ROLES).copied().collect();
    ids.extend([
        "acct:variable:never",
        "acct:variable:conjur/shared/never",
        "acct:public_key:never",
        "garbage",
        "acct:variable",
    ]);
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[derive(Debug, Clone)]
enum Op {
    AddMember(usize, usize, bool),
    DelMember(usize, usize, bool),
    Permit(usize, usize, usize),
    Deny(usize, usize, usize),
    Own(usize, usize),
    /// Key-only resource delete, as the WAL has it when permissions are deleted later.
    DropResource(usize),
    /// Resource delete followed by the cascaded permission deletes.
    DropResourceCascade(usize),
    /// Role delete: explicit deletes of its owned resources, memberships and permissions.
    DropRole(usize),
    Truncate(u8),
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..ROLES.len();
    let v = 0..RESOURCES.len();
    let p = 0..PRIVILEGES.len();
    prop_oneof![
        6 => (r.clone(), r.clone(), any::<bool>()).prop_map(|(a, b, o)| Op::AddMember(a, b, o)),
        3 => (r.clone(), r.clone(), any::<bool>()).prop_map(|(a, b, o)| Op::DelMember(a, b, o)),
        5 => (v.clone(), r.clone(), p.clone()).prop_map(|(a, b, c)| Op::Permit(a, b, c)),
        2 => (v.clone(), r.clone(), p).prop_map(|(a, b, c)| Op::Deny(a, b, c)),
        4 => (v.clone(), r.clone()).prop_map(|(a, b)| Op::Own(a, b)),
        1 => v.clone().prop_map(Op::DropResource),
        1 => v.prop_map(Op::DropResourceCascade),
        1 => r.prop_map(Op::DropRole),
        1 => (0u8..3).prop_map(Op::Truncate),
        2 => Just(Op::Commit),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![Just(Rule::Execute), Just(Rule::Any)]
}

/// 1–3 sets: set 0 on the `system` group, set 1 on the customer-account group, set 2 on the
/// `system` group again (possibly with the other rule); random `always` patterns.
fn sets() -> impl Strategy<Value = Vec<ReplicaSetSpec>> {
    let always = prop_oneof![
        Just(vec![]),
        Just(vec!["*:variable:conjur/shared/*".to_owned()]),
        Just(vec!["acct:variable:v*".to_owned(), "*:pass".to_owned()]),
    ];
    (1usize..=3, prop::collection::vec((rule(), always), 3)).prop_map(|(n, cfg)| {
        cfg.into_iter()
            .take(n)
            .enumerate()
            .map(|(i, (rule, always))| ReplicaSetSpec {
                name: format!("s{i}"),
                data_group: if i == 1 { GROUP_ACCT } else { GROUP_SYS }.to_owned(),
                rule,
                always,
            })
            .collect()
    })
}

/// Expands an op into the row changes the WAL would carry, applying each to the tables.
fn changes(op: &Op, t: &Tables) -> Vec<Row> {
    let role = |i: usize| ROLES[i].to_owned();
    let res = |i: usize| RESOURCES[i].to_owned();
    match *op {
        Op::AddMember(a, b, o) => vec![Row::Member(role(a), role(b), o, true)],
        Op::DelMember(a, b, o) => vec![Row::Member(role(a), role(b), o, false)],
        Op::Permit(v, r, p) => vec![Row::Perm(res(v), role(r), PRIVILEGES[p].to_owned(), true)],
        Op::Deny(v, r, p) => vec![Row::Perm(res(v), role(r), PRIVILEGES[p].to_owned(), false)],
        Op::Own(v, r) => vec![Row::Owner(res(v), Some(role(r)))],
        Op::DropResource(v) => vec![Row::Owner(res(v), None)],
        Op::DropResourceCascade(v) => cascade_resource(t, &res(v)),
        Op::DropRole(r) => {
            let r = role(r);
            let mut rows = Vec::new();
            for (v, owner) in &t.resources {
                if *owner == r {
                    rows.extend(cascade_resource(t, v));
                }
            }
            for (p, m, o) in &t.memberships {
                if *p == r || *m == r {
                    rows.push(Row::Member(p.clone(), m.clone(), *o, false));
                }
            }
            for (v, holder, p) in &t.permissions {
                if *holder == r {
                    rows.push(Row::Perm(v.clone(), holder.clone(), p.clone(), false));
                }
            }
            rows
        }
        Op::Truncate(k) => vec![Row::Truncate(k)],
        Op::Commit => vec![],
    }
}

fn cascade_resource(t: &Tables, v: &str) -> Vec<Row> {
    let mut rows = vec![Row::Owner(v.to_owned(), None)];
    for (r, holder, p) in &t.permissions {
        if r == v {
            rows.push(Row::Perm(r.clone(), holder.clone(), p.clone(), false));
        }
    }
    rows
}

#[derive(Debug, Clone)]
enum Row {
    Member(String, String, bool, bool),
    Perm(String, String, String, bool),
    Owner(String, Option<String>),
    Truncate(u8),
}

fn apply(row: &Row, t: &mut Tables, m: &mut Model) {
    let change = match row {
        Row::Member(p, mem, o, true) => {
            t.memberships.insert((p.clone(), mem.clone(), *o));
            Change::MembershipUpsert {
                role_id: p,
                member_id: mem,
                ownership: *o,
            }
        }
        Row::Member(p, mem, o, false) => {
            t.memberships.remove(&(p.clone(), mem.clone(), *o));
            Change::MembershipDelete {
                role_id: p,
                member_id: mem,
                ownership: *o,
            }
        }
        Row::Perm(v, r, p, true) => {
            t.permissions.insert((v.clone(), r.clone(), p.clone()));
            Change::PermissionUpsert {
                resource_id: v,
                role_id: r,
                privilege: p,
            }
        }
        Row::Perm(v, r, p, false) => {
            t.permissions.remove(&(v.clone(), r.clone(), p.clone()));
            Change::PermissionDelete {
                resource_id: v,
                role_id: r,
                privilege: p,
            }
        }
        Row::Owner(v, Some(o)) => {
            t.resources.insert(v.clone(), o.clone());
            Change::ResourceUpsert {
                resource_id: v,
                owner_id: o,
            }
        }
        Row::Owner(v, None) => {
            t.resources.remove(v);
            Change::ResourceDelete { resource_id: v }
        }
        Row::Truncate(k) => {
            let table = match k {
                0 => {
                    t.memberships.clear();
                    ModelTable::RoleMemberships
                }
                1 => {
                    t.permissions.clear();
                    ModelTable::Permissions
                }
                _ => {
                    t.resources.clear();
                    ModelTable::Resources
                }
            };
            Change::Truncate(table)
        }
    };
    m.feed(change).expect("valid ids");
}

fn naive_masks(t: &Tables, sets: &[ReplicaSetSpec], ids: &[&str]) -> BTreeMap<String, u64> {
    ids.iter()
        .map(|id| (id.to_string(), naive::decide(t, sets, id)))
        .collect()
}

/// Checks the model's decisions, `resources_in` and explanations against the oracle.
fn check_state(
    m: &Model,
    t: &Tables,
    sets: &[ReplicaSetSpec],
    expected: &BTreeMap<String, u64>,
) -> Result<(), TestCaseError> {
    for (id, &want) in expected {
        prop_assert_eq!(
            m.decide(id.as_bytes()),
            SetMask(want),
            "decide({}) with {:?}",
            id,
            t
        );
        for (s, spec) in sets.iter().enumerate() {
            let e = m.explain(id, s);
            prop_assert_eq!(e.is_in, want & (1 << s) != 0, "explain {}", e);
            if let pgsieve_filters::Reason::Granted { chain, privilege } = &e.reason {
                check_chain(t, spec, id, chain, privilege.as_deref())?;
            }
        }
    }
    for (s, spec) in sets.iter().enumerate() {
        let got: BTreeSet<&str> = m.resources_in(s).collect();
        let want: BTreeSet<&str> = t
            .resources
            .keys()
            .filter(|v| v.split(':').nth(1) != Some("public_key"))
            .filter(|v| naive::decide(t, sets, v) & (1 << s) != 0)
            .map(String::as_str)
            .collect();
        prop_assert_eq!(got, want, "resources_in({}) ({})", s, spec.name);
    }
    Ok(())
}

/// A granted explanation must be a real path of membership rows ending in a real grant.
fn check_chain(
    t: &Tables,
    spec: &ReplicaSetSpec,
    id: &str,
    chain: &[String],
    privilege: Option<&str>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(chain.first(), Some(&spec.data_group));
    for w in chain.windows(2) {
        let edge = t
            .memberships
            .iter()
            .any(|(p, m, _)| *p == w[1] && *m == w[0]);
        prop_assert!(edge, "no membership {} → {}", w[0], w[1]);
    }
    let last = chain.last().expect("non-empty chain");
    match privilege {
        None => prop_assert_eq!(t.resources.get(id), Some(last)),
        Some(p) => {
            prop_assert!(spec.rule == Rule::Any || p == "execute");
            prop_assert!(
                t.permissions
                    .contains(&(id.to_owned(), last.clone(), p.to_owned()))
            );
        }
    }
    Ok(())
}

fn expected_flips(
    flipped: &BTreeMap<(usize, String), ()>,
    now: &BTreeMap<String, u64>,
) -> Vec<Flip> {
    flipped
        .keys()
        .map(|(set, id)| Flip {
            set: *set,
            resource_id: id.clone(),
            now_in: now[id] & (1 << set) != 0,
        })
        .collect()
}

fn build_from(t: &Tables, sets: &[ReplicaSetSpec]) -> Model {
    let mut b = Model::builder(sets.to_vec()).expect("valid sets");
    for (p, mem, o) in &t.memberships {
        b.add_membership(p, mem, *o).expect("valid ids");
    }
    for (v, r, p) in &t.permissions {
        b.add_permission(v, r, p).expect("valid ids");
    }
    for (v, o) in &t.resources {
        b.add_resource(v, o).expect("valid ids");
    }
    b.build()
}

fn run(sets: Vec<ReplicaSetSpec>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let ids = probe_ids();
    let mut m = Model::new(sets.clone()).expect("valid sets");
    let mut t = Tables::default();
    let mut prev = naive_masks(&t, &sets, &ids);
    let mut flipped: BTreeMap<(usize, String), ()> = BTreeMap::new();
    m.begin();
    for op in ops.iter().chain([&Op::Commit]) {
        if let Op::Commit = op {
            let effects = m.end();
            prop_assert_eq!(
                &effects.flips,
                &expected_flips(&flipped, &prev),
                "flips with {:?}",
                t
            );
            flipped.clear();
            m.begin();
            continue;
        }
        for row in changes(op, &t) {
            apply(&row, &mut t, &mut m);
            let now = naive_masks(&t, &sets, &ids);
            for (id, &mask) in &now {
                let diff = mask ^ prev[id];
                for s in SetMask(diff).iter() {
                    flipped.insert((s, id.clone()), ());
                }
            }
            check_state(&m, &t, &sets, &now)?;
            prev = now;
        }
    }
    // Bulk build of the final tables equals the incrementally fed model.
    let built = build_from(&t, &sets);
    for id in &ids {
        prop_assert_eq!(
            built.decide(id.as_bytes()),
            m.decide(id.as_bytes()),
            "bulk vs feed: {}",
            id
        );
    }
    for s in 0..sets.len() {
        let a: BTreeSet<&str> = built.resources_in(s).collect();
        let b: BTreeSet<&str> = m.resources_in(s).collect();
        prop_assert_eq!(a, b);
    }
    Ok(())
}

proptest! {
    // 600 cases by default; `PROPTEST_CASES=N` for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(600)
    ))]

    #[test]
    fn incremental_model_matches_naive_after_every_step(sets in sets(), ops in prop::collection::vec(op(), 0..60)) {
        run(sets, ops)?;
    }
}
