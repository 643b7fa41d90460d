//! Hand-written scenarios: explanations, cycles, deletions, unknown ids, errors.

use pgsieve_filters::{
    Change, FilterError, Flip, Model, ModelTable, Reason, ReplicaSetSpec, Rule, SetMask,
};

const G: &str = "system:group:conjur/replication-sets/east/replicated-data";
const V: &str = "acme:variable:prod/db/pass";
const LAYER: &str = "acme:layer:prod/app";
const POLICY: &str = "acme:policy:prod";

fn model(rule: Rule) -> Model {
    Model::new(vec![ReplicaSetSpec {
        name: "east".into(),
        data_group: G.into(),
        rule,
        always: vec!["*:variable:conjur/shared/*".into()],
    }])
    .expect("valid config")
}

fn feed(m: &mut Model, changes: &[Change<'_>]) {
    for c in changes {
        m.feed(*c).expect("valid change");
    }
}

fn member(role_id: &'static str, member_id: &'static str) -> Change<'static> {
    Change::MembershipUpsert {
        role_id,
        member_id,
        ownership: false,
    }
}

fn unmember(role_id: &'static str, member_id: &'static str) -> Change<'static> {
    Change::MembershipDelete {
        role_id,
        member_id,
        ownership: false,
    }
}

fn permit(privilege: &'static str) -> Change<'static> {
    Change::PermissionUpsert {
        resource_id: V,
        role_id: LAYER,
        privilege,
    }
}

fn flip(resource_id: &str, now_in: bool) -> Flip {
    Flip {
        set: 0,
        resource_id: resource_id.into(),
        now_in,
    }
}

#[test]
fn explain_chain_through_layer() {
    let mut m = model(Rule::Execute);
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(LAYER, G),
            permit("execute"),
        ],
    );
    let e = m.explain(V, 0);
    assert!(e.is_in);
    assert_eq!(
        e.to_string(),
        format!("{V} in east: data group {G} → member of {LAYER} → execute on {V}")
    );
}

#[test]
fn explain_out_when_only_read_is_held() {
    let mut m = model(Rule::Execute);
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(LAYER, G),
            permit("read"),
        ],
    );
    let e = m.explain(V, 0);
    assert!(!e.is_in);
    assert_eq!(
        e.to_string(),
        format!(
            "{V} out of east: no role in the closure of {G} (2 roles) owns it or holds execute on it; owner is {POLICY}; the closure holds only read (by {LAYER})"
        )
    );
    // The seed's rule counts read.
    let mut any = model(Rule::Any);
    feed(
        &mut any,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(LAYER, G),
            permit("read"),
        ],
    );
    assert!(any.decide(V.as_bytes()).contains(0));
}

#[test]
fn ownership_through_policy_membership() {
    let mut m = model(Rule::Execute);
    feed(
        &mut m,
        &[Change::ResourceUpsert {
            resource_id: V,
            owner_id: POLICY,
        }],
    );
    m.begin();
    feed(
        &mut m,
        &[Change::MembershipUpsert {
            role_id: POLICY,
            member_id: G,
            ownership: true,
        }],
    );
    assert_eq!(m.end().flips, vec![flip(V, true)]);
    assert_eq!(
        m.explain(V, 0).to_string(),
        format!("{V} in east: data group {G} → member of {POLICY} → owns {V}")
    );
}

#[test]
fn revoke_and_regrant_in_one_transaction_is_a_flip_in() {
    let mut m = model(Rule::Execute);
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(LAYER, G),
            permit("execute"),
        ],
    );
    m.begin();
    feed(&mut m, &[unmember(LAYER, G), member(LAYER, G)]);
    assert_eq!(m.end().flips, vec![flip(V, true)]);
    m.begin();
    assert!(m.end().is_empty());
}

#[test]
fn cycle_keeps_and_then_loses_membership() {
    // G → A → B → A (cycle), B holds execute. Deleting A → B keeps nothing; deleting G → A drops all.
    const A: &str = "acme:group:a";
    const B: &str = "acme:group:b";
    let mut m = model(Rule::Execute);
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(A, G),
            member(B, A),
            member(A, B),
            Change::PermissionUpsert {
                resource_id: V,
                role_id: B,
                privilege: "execute",
            },
        ],
    );
    assert!(m.decide(V.as_bytes()).contains(0));
    m.begin();
    feed(&mut m, &[member(B, G), unmember(B, A)]);
    assert!(
        m.decide(V.as_bytes()).contains(0),
        "B still reached directly"
    );
    assert!(m.end().is_empty());
    m.begin();
    feed(&mut m, &[unmember(B, G)]);
    assert!(
        !m.decide(V.as_bytes()).contains(0),
        "B only reachable from itself now"
    );
    assert_eq!(m.end().flips, vec![flip(V, false)]);
}

#[test]
fn deleting_the_resource_purges_and_recreating_restores() {
    let mut m = model(Rule::Execute);
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(LAYER, G),
            permit("execute"),
        ],
    );
    m.begin();
    feed(&mut m, &[Change::ResourceDelete { resource_id: V }]);
    assert_eq!(m.decide(V.as_bytes()), SetMask::NONE);
    assert_eq!(m.explain(V, 0).reason, Reason::UnknownVariable);
    feed(
        &mut m,
        &[Change::PermissionDelete {
            resource_id: V,
            role_id: LAYER,
            privilege: "execute",
        }],
    );
    assert_eq!(m.end().flips, vec![flip(V, false)]);
    m.begin();
    feed(
        &mut m,
        &[
            Change::Truncate(ModelTable::RoleMemberships),
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: G,
            },
        ],
    );
    assert_eq!(
        m.end().flips,
        vec![flip(V, true)],
        "the data group may own a variable itself"
    );
}

#[test]
fn unknown_ids_and_other_kinds() {
    let m = model(Rule::Execute);
    assert_eq!(m.decide(b"acme:public_key:user/alice/k"), m.all_sets());
    assert_eq!(m.decide(b"acme:variable:not/yet"), SetMask::NONE);
    assert_eq!(
        m.decide(b"acme:variable:conjur/shared/x"),
        SetMask::single(0)
    );
    assert_eq!(m.decide(b"not-an-id"), SetMask::NONE);
    assert_eq!(m.decide(b"\xff\xfe:variable:x"), SetMask::NONE);
    assert_eq!(
        m.explain("acme:public_key:user/alice/k", 0).reason,
        Reason::NotFiltered {
            kind: "public_key".into()
        }
    );
    assert_eq!(m.explain(V, 7).reason, Reason::NoSuchSet);
    assert_eq!(
        m.explain("acme:variable:conjur/shared/x", 0).reason,
        Reason::AlwaysPattern {
            pattern: "*:variable:conjur/shared/*".into()
        }
    );
}

#[test]
fn every_kind_but_public_key_follows_the_rule() {
    let mut m = model(Rule::Execute);
    feed(&mut m, &[member(LAYER, G)]);
    assert_eq!(
        m.decide(b"acme:webservice:w"),
        SetMask::NONE,
        "an unknown webservice is in no set (fail closed)"
    );
    m.begin();
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: "acme:webservice:w",
                owner_id: "acme:policy:elsewhere",
            },
            Change::ResourceUpsert {
                resource_id: "acme:host:h",
                owner_id: "acme:policy:elsewhere",
            },
            Change::ResourceUpsert {
                resource_id: "acme:Variable:mixed",
                owner_id: "acme:policy:elsewhere",
            },
            Change::PermissionUpsert {
                resource_id: "acme:webservice:w",
                role_id: LAYER,
                privilege: "execute",
            },
            Change::PermissionUpsert {
                resource_id: "acme:host:h",
                role_id: LAYER,
                privilege: "read",
            },
        ],
    );
    let flips = m.end().flips;
    assert_eq!(flips, vec![flip("acme:webservice:w", true)]);
    assert_eq!(m.decide(b"acme:webservice:w"), SetMask::single(0));
    assert_eq!(
        m.decide(b"acme:host:h"),
        SetMask::NONE,
        "read is not execute"
    );
    assert_eq!(
        m.decide(b"acme:Variable:mixed"),
        SetMask::NONE,
        "kinds are case-sensitive: Variable is not variable, and still needs the rule"
    );
    assert_eq!(m.decide(b"acme:public_key:user/alice/k"), m.all_sets());
}

#[test]
fn configuration_and_id_errors() {
    let spec = |name: &str| ReplicaSetSpec {
        name: name.into(),
        data_group: G.into(),
        rule: Rule::Execute,
        always: vec![],
    };
    assert_eq!(
        Model::new((0..65).map(|i| spec(&format!("s{i}"))).collect()).err(),
        Some(FilterError::TooManySets { count: 65 })
    );
    assert_eq!(
        Model::new(vec![spec("a"), spec("a")]).err(),
        Some(FilterError::DuplicateSet { name: "a".into() })
    );
    let full = Model::new((0..64).map(|i| spec(&format!("s{i}"))).collect()).expect("64 sets fit");
    assert_eq!(full.all_sets(), SetMask::ALL);
    let mut bad = ReplicaSetSpec {
        data_group: "nogroup".into(),
        ..spec("x")
    };
    assert!(matches!(
        Model::new(vec![bad.clone()]),
        Err(FilterError::BadId { .. })
    ));
    bad.data_group = G.into();
    let mut m = Model::new(vec![bad]).expect("valid");
    let err = m.feed(Change::MembershipUpsert {
        role_id: "acme",
        member_id: G,
        ownership: false,
    });
    assert_eq!(err, Err(FilterError::BadId { id: "acme".into() }));
    assert!(
        m.feed(Change::ResourceDelete { resource_id: "x:y" })
            .is_err()
    );
}

#[test]
fn effects_for_set_splits_by_set() {
    let mut m = Model::new(vec![
        ReplicaSetSpec {
            name: "a".into(),
            data_group: G.into(),
            rule: Rule::Execute,
            always: vec![],
        },
        ReplicaSetSpec {
            name: "b".into(),
            data_group: G.into(),
            rule: Rule::Any,
            always: vec![],
        },
    ])
    .expect("valid");
    feed(
        &mut m,
        &[
            Change::ResourceUpsert {
                resource_id: V,
                owner_id: POLICY,
            },
            member(LAYER, G),
        ],
    );
    m.begin();
    feed(&mut m, &[permit("read")]);
    let e = m.end();
    assert_eq!(e.len(), 1);
    assert_eq!(e.for_set(0).count(), 0);
    assert_eq!(
        e.for_set(1).next(),
        Some(&Flip {
            set: 1,
            resource_id: V.into(),
            now_in: true
        })
    );
}
