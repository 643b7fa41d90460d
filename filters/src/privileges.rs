//! Owners and permissions of variables, remembered because a `DELETE` or an owner-changing
//! `UPDATE` on the leader carries only the key.

use crate::intern::{NO_SYM, Sym};
use crate::model::Model;
use rustc_hash::FxHashMap;

/// Interned privilege name; [`EXECUTE`] is always 0.
pub(crate) type PrivId = u32;

/// The privilege that puts a variable's values in a set under [`crate::Rule::Execute`].
pub(crate) const EXECUTE: PrivId = 0;

/// One `permissions` row on a variable: `role` holds `privilege`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perm {
    pub(crate) role: Sym,
    pub(crate) privilege: PrivId,
}

/// Privilege names are free-form text in Conjur; in practice a handful.
#[derive(Debug, Clone)]
pub(crate) struct Privileges {
    names: Vec<String>,
    ids: FxHashMap<String, PrivId>,
}

impl Default for Privileges {
    fn default() -> Self {
        let mut p = Privileges {
            names: Vec::new(),
            ids: FxHashMap::default(),
        };
        p.intern("execute");
        p
    }
}

impl Privileges {
    pub(crate) fn intern(&mut self, name: &str) -> PrivId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = PrivId::try_from(self.names.len()).unwrap_or(PrivId::MAX);
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub(crate) fn get(&self, name: &str) -> Option<PrivId> {
        self.ids.get(name).copied()
    }

    pub(crate) fn name(&self, id: PrivId) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }
}

impl Model {
    /// Records a `permissions` row; false if it was already there.
    pub(crate) fn add_permission_row(&mut self, var: Sym, role: Sym, privilege: PrivId) -> bool {
        let perm = Perm { role, privilege };
        let Some(list) = self.perms.get_mut(var as usize) else {
            return false;
        };
        if list.contains(&perm) {
            return false;
        }
        let mut v = std::mem::take(list).into_vec();
        v.push(perm);
        *list = v.into_boxed_slice();
        *self
            .roles
            .entry(role)
            .or_default()
            .grants
            .entry(var)
            .or_insert(0) += 1;
        true
    }

    /// Forgets a `permissions` row; false if it was not there.
    pub(crate) fn remove_permission_row(&mut self, var: Sym, role: Sym, privilege: PrivId) -> bool {
        let perm = Perm { role, privilege };
        let Some(list) = self.perms.get_mut(var as usize) else {
            return false;
        };
        if !list.contains(&perm) {
            return false;
        }
        let mut v = std::mem::take(list).into_vec();
        v.retain(|p| *p != perm);
        *list = v.into_boxed_slice();
        if let Some(adj) = self.roles.get_mut(&role)
            && let Some(n) = adj.grants.get_mut(&var)
        {
            *n -= 1;
            if *n == 0 {
                adj.grants.remove(&var);
            }
        }
        true
    }

    /// Sets (or with `NO_SYM` clears) a variable's owner; false if unchanged.
    pub(crate) fn set_owner(&mut self, var: Sym, owner: Sym) -> bool {
        let Some(slot) = self.owner.get_mut(var as usize) else {
            return false;
        };
        let old = *slot;
        if old == owner {
            return false;
        }
        *slot = owner;
        if old != NO_SYM
            && let Some(adj) = self.roles.get_mut(&old)
        {
            adj.owned.remove(&var);
        }
        if owner != NO_SYM {
            self.roles.entry(owner).or_default().owned.insert(var);
        }
        true
    }
}
