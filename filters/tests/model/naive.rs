//! The replica-set rule (README.md; ARCHITECTURE.md, "Trust model") evaluated literally: fixpoint closure of the
//! data group over the membership rows, then owner-or-privilege over the tables.

use pgsieve_filters::{ReplicaSetSpec, Rule};
use std::collections::{BTreeMap, BTreeSet};

/// The three followed tables as plain sets of rows.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// (role_id, member_id, ownership)
    pub memberships: BTreeSet<(String, String, bool)>,
    /// (resource_id, role_id, privilege)
    pub permissions: BTreeSet<(String, String, String)>,
    /// resource_id → owner_id
    pub resources: BTreeMap<String, String>,
}

/// `*` matches any run of characters; written recursively, unlike the model's.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

/// Upward closure of `group` by fixpoint iteration.
pub fn closure(t: &Tables, group: &str) -> BTreeSet<String> {
    let mut s = BTreeSet::from([group.to_owned()]);
    loop {
        let before = s.len();
        for (role, member, _) in &t.memberships {
            if s.contains(member) {
                s.insert(role.clone());
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

/// The mask the model must return from `decide(id)`.
pub fn decide(t: &Tables, sets: &[ReplicaSetSpec], id: &str) -> u64 {
    let mut parts = id.splitn(3, ':');
    let (Some(account), Some(kind), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return 0;
    };
    if account.is_empty() || kind.is_empty() {
        return 0;
    }
    let all = if sets.len() == 64 {
        u64::MAX
    } else {
        (1u64 << sets.len()) - 1
    };
    if kind == "public_key" {
        return all;
    }
    let mut m = 0u64;
    for (i, s) in sets.iter().enumerate() {
        let always = s.always.iter().any(|p| glob(p, id));
        let granted = t.resources.get(id).is_some_and(|owner| {
            let c = closure(t, &s.data_group);
            c.contains(owner)
                || t.permissions.iter().any(|(r, role, p)| {
                    r == id && c.contains(role) && (s.rule == Rule::Any || p == "execute")
                })
        });
        if always || granted {
            m |= 1 << i;
        }
    }
    m
}

#[test]
fn glob_oracle() {
    assert!(glob(
        "*:variable:conjur/shared/*",
        "a:variable:conjur/shared/x"
    ));
    assert!(!glob("*:variable:conjur/shared/*", "a:variable:conjur/x"));
    assert!(glob("a*", "a"));
    assert!(!glob("a", "ab"));
}
