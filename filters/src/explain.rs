//! Why a variable is in or out of a replica set, for the tap, `status` and operators: the
//! shortest membership chain from the data group to a role that owns the variable or
//! holds a qualifying privilege on it, or the reason no such role exists.

use crate::ids::ResourceId;
use crate::intern::{NO_SYM, Sym};
use crate::model::Model;
use crate::privileges::EXECUTE;
use crate::replica_set::Rule;
use std::fmt;

/// The answer to "why is `resource_id` in (or out of) set `set`?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The id asked about.
    pub resource_id: String,
    /// Name of the replica set (empty if the index was out of range).
    pub set: String,
    /// Whether rows of this id go to the set: always equal to `decide`'s bit.
    pub is_in: bool,
    /// Why.
    pub reason: Reason,
}

/// The reason behind an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The set index is not configured.
    NoSuchSet,
    /// Not an `account:kind:identifier` id: forwarded nowhere.
    BadId,
    /// A `public_key` (public in Conjur's API): forwarded to every set.
    NotFiltered {
        /// The id's kind.
        kind: String,
    },
    /// Matches one of the set's `always` patterns.
    AlwaysPattern {
        /// The first matching pattern.
        pattern: String,
    },
    /// A resource without a `resources` row (not yet inserted, or deleted): fail closed.
    UnknownVariable,
    /// In: `chain[0]` is the data group, each next role is one the previous is a member
    /// of, and the last one owns the variable or holds `privilege` on it.
    Granted {
        /// Roles from the data group to the grantee.
        chain: Vec<String>,
        /// `None` when the last role owns the variable.
        privilege: Option<String>,
    },
    /// Out: no role in the data group's closure owns the variable or holds a privilege the rule counts.
    NotGranted {
        /// The data group.
        data_group: String,
        /// Number of roles in its closure.
        closure_size: usize,
        /// The set's rule.
        rule: Rule,
        /// The variable's owner (outside the closure).
        owner: String,
        /// Privileges that closure roles do hold but the rule does not count (role, privilege).
        held: Vec<(String, String)>,
    },
}

impl Model {
    /// Explains the decision for `resource_id` and set index `set`.
    pub fn explain(&self, resource_id: &str, set: usize) -> Explanation {
        let is_in = self.decide(resource_id.as_bytes()).contains(set);
        let spec = self.sets.get(set);
        let reason = match spec {
            None => Reason::NoSuchSet,
            Some(spec) => self.reason(resource_id, set, spec.rule),
        };
        Explanation {
            resource_id: resource_id.to_owned(),
            set: spec.map(|s| s.name.clone()).unwrap_or_default(),
            is_in,
            reason,
        }
    }

    fn reason(&self, resource_id: &str, set: usize, rule: Rule) -> Reason {
        let Ok(id) = ResourceId::parse_str(resource_id) else {
            return Reason::BadId;
        };
        if !id.is_filtered() {
            return Reason::NotFiltered {
                kind: id.kind.to_owned(),
            };
        }
        if let Some(pattern) = self.sets.get(set).and_then(|s| {
            s.always
                .iter()
                .find(|p| crate::replica_set::glob_matches(p.as_bytes(), resource_id.as_bytes()))
        }) {
            return Reason::AlwaysPattern {
                pattern: pattern.clone(),
            };
        }
        let var = match self.lookup(resource_id) {
            Some(v) if self.owner.get(v as usize).is_some_and(|&o| o != NO_SYM) => v,
            _ => return Reason::UnknownVariable,
        };
        let owner = self.owner.get(var as usize).copied().unwrap_or(NO_SYM);
        let perms = self.perms.get(var as usize).map(|p| &p[..]).unwrap_or(&[]);
        let Some(&group) = self.groups.get(set) else {
            return Reason::NoSuchSet;
        };
        let tree = self.closure_tree(group);
        let counts = |p: u32| p == EXECUTE || rule == Rule::Any;
        for (i, &(role, _)) in tree.iter().enumerate() {
            let privilege = if role == owner {
                Some(None)
            } else {
                let mut held: Vec<u32> = perms
                    .iter()
                    .filter(|p| p.role == role && counts(p.privilege))
                    .map(|p| p.privilege)
                    .collect();
                held.sort_unstable();
                held.first()
                    .map(|&p| Some(self.privileges.name(p).to_owned()))
            };
            if let Some(privilege) = privilege {
                return Reason::Granted {
                    chain: self.chain(&tree, i),
                    privilege,
                };
            }
        }
        let in_closure: rustc_hash::FxHashSet<Sym> = tree.iter().map(|&(r, _)| r).collect();
        let mut held: Vec<(String, String)> = perms
            .iter()
            .filter(|p| in_closure.contains(&p.role))
            .map(|p| {
                (
                    self.names.name(p.role).to_owned(),
                    self.privileges.name(p.privilege).to_owned(),
                )
            })
            .collect();
        held.sort();
        Reason::NotGranted {
            data_group: self.names.name(group).to_owned(),
            closure_size: tree.len(),
            rule,
            owner: self.names.name(owner).to_owned(),
            held,
        }
    }

    fn chain(&self, tree: &[(Sym, Option<usize>)], mut i: usize) -> Vec<String> {
        let mut chain = Vec::new();
        while let Some(&(role, from)) = tree.get(i) {
            chain.push(self.names.name(role).to_owned());
            match from {
                Some(f) => i = f,
                None => break,
            }
        }
        chain.reverse();
        chain
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_in { "in" } else { "out of" };
        write!(f, "{} {} {}: ", self.resource_id, verdict, self.set)?;
        match &self.reason {
            Reason::NoSuchSet => write!(f, "no such replica set"),
            Reason::BadId => write!(f, "not an account:kind:identifier id, forwarded nowhere"),
            Reason::NotFiltered { kind } => {
                write!(f, "kind {kind} is not filtered, forwarded to every set")
            }
            Reason::AlwaysPattern { pattern } => write!(f, "matches always pattern {pattern}"),
            Reason::UnknownVariable => {
                write!(f, "no resources row for this resource (fail closed)")
            }
            Reason::Granted { chain, privilege } => {
                for (n, role) in chain.iter().enumerate() {
                    if n == 0 {
                        write!(f, "data group {role}")?;
                    } else {
                        write!(f, " → member of {role}")?;
                    }
                }
                match privilege {
                    None => write!(f, " → owns {}", self.resource_id),
                    Some(p) => write!(f, " → {p} on {}", self.resource_id),
                }
            }
            Reason::NotGranted {
                data_group,
                closure_size,
                rule,
                owner,
                held,
            } => {
                let what = match rule {
                    Rule::Execute => "holds execute on it",
                    Rule::Any => "holds any privilege on it",
                };
                write!(
                    f,
                    "no role in the closure of {data_group} ({closure_size} roles) owns it or {what}; owner is {owner}"
                )?;
                if !held.is_empty() {
                    write!(f, "; the closure holds only")?;
                    for (n, (role, p)) in held.iter().enumerate() {
                        let sep = if n == 0 { " " } else { ", " };
                        write!(f, "{sep}{p} (by {role})")?;
                    }
                }
                Ok(())
            }
        }
    }
}
