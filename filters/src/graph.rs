//! The role graph: `role_memberships` rows as upward edges `member → role`, plus, per role,
//! the variables it owns and the variables it holds permissions on (the reverse indexes a
//! closure change walks).

use crate::intern::Sym;
use crate::model::Model;
use rustc_hash::{FxHashMap, FxHashSet};

/// Edge flag: a row with `ownership = false`.
const PLAIN: u8 = 1;
/// Edge flag: a row with `ownership = true` (primary key includes the flag, so both may exist).
const OWNERSHIP: u8 = 2;

/// Everything the model keeps about one role.
#[derive(Debug, Default, Clone)]
pub(crate) struct RoleAdj {
    /// Roles this role is a direct member of, with the flags of the rows that say so.
    pub(crate) parents: FxHashMap<Sym, u8>,
    /// Variables whose `owner_id` is this role.
    pub(crate) owned: FxHashSet<Sym>,
    /// Variables on which this role holds permissions, with the number of rows.
    pub(crate) grants: FxHashMap<Sym, u32>,
}

/// What a membership row did to the edge between two roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeChange {
    /// The edge already existed (or still exists through the other row), or never did.
    Unchanged,
    /// `member → role` now exists and did not before.
    Added,
    /// `member → role` existed and no longer does.
    Removed,
}

fn flag(ownership: bool) -> u8 {
    if ownership { OWNERSHIP } else { PLAIN }
}

impl Model {
    /// Records (`present`) or forgets one `role_memberships` row; idempotent.
    pub(crate) fn set_membership_row(
        &mut self,
        role: Sym,
        member: Sym,
        ownership: bool,
        present: bool,
    ) -> EdgeChange {
        let f = flag(ownership);
        if present {
            let flags = self
                .roles
                .entry(member)
                .or_default()
                .parents
                .entry(role)
                .or_insert(0);
            let before = *flags;
            *flags |= f;
            if before == 0 {
                EdgeChange::Added
            } else {
                EdgeChange::Unchanged
            }
        } else {
            let Some(adj) = self.roles.get_mut(&member) else {
                return EdgeChange::Unchanged;
            };
            let Some(flags) = adj.parents.get_mut(&role) else {
                return EdgeChange::Unchanged;
            };
            *flags &= !f;
            if *flags == 0 {
                adj.parents.remove(&role);
                EdgeChange::Removed
            } else {
                EdgeChange::Unchanged
            }
        }
    }

    /// Direct parents of a role (roles it is a member of).
    pub(crate) fn parents_of(&self, role: Sym) -> impl Iterator<Item = Sym> + '_ {
        self.roles
            .get(&role)
            .into_iter()
            .flat_map(|a| a.parents.keys().copied())
    }

    /// Variables owned by, or granted to, `role`: the only ones a change of its closure
    /// bits can move.
    pub(crate) fn variables_reachable_from(&self, role: Sym, out: &mut Vec<Sym>) {
        if let Some(adj) = self.roles.get(&role) {
            out.extend(adj.owned.iter().copied());
            out.extend(adj.grants.keys().copied());
        }
    }
}
