//! Row changes of `role_memberships`, `permissions` and `resources` → model update → flips.
//!
//! Transaction scope: [`Model::begin`] clears the pending flips, every [`Model::feed`] adds
//! the (set, variable) pairs whose membership flipped, [`Model::end`] returns them with their
//! final state. Feeds outside a `begin`/`end` bracket accumulate until the next `end` (which
//! returns them) or `begin` (which discards them); bulk loads should use
//! [`Model::builder`] instead, which records nothing.
//!
//! Rows are upserts and deletes by primary key, applied idempotently (a replayed insert
//! or a delete of an absent row changes nothing). Rows that name roles the model has never
//! seen simply create them: the model has no `roles` table, because the WAL carries an
//! explicit DELETE for every membership, permission and owned resource of a deleted role.
//! Permissions and resources of `public_key`s are ignored (their secrets go everywhere).

use crate::graph::EdgeChange;
use crate::ids::ResourceId;
use crate::intern::{NO_SYM, Sym};
use crate::model::Model;
use crate::{Effects, FilterError};

/// The tables whose rows the model follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelTable {
    /// `role_memberships`
    RoleMemberships,
    /// `permissions`
    Permissions,
    /// `resources`
    Resources,
}

/// One row change, borrowed from the decoded message (text columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// INSERT (or replayed INSERT) of `role_memberships(role_id, member_id, ownership)`:
    /// `member_id` becomes a member of `role_id`.
    MembershipUpsert {
        /// The parent role (group, layer, policy, …).
        role_id: &'a str,
        /// The member, which inherits the parent's rights.
        member_id: &'a str,
        /// Part of the primary key: ownership rows are separate rows.
        ownership: bool,
    },
    /// DELETE of a `role_memberships` row, by its key.
    MembershipDelete {
        /// The parent role.
        role_id: &'a str,
        /// The member.
        member_id: &'a str,
        /// Part of the primary key.
        ownership: bool,
    },
    /// INSERT of a `permissions` row.
    PermissionUpsert {
        /// The resource the privilege is on.
        resource_id: &'a str,
        /// The role holding it.
        role_id: &'a str,
        /// Free-form privilege (`read`, `execute`, …).
        privilege: &'a str,
    },
    /// DELETE of a `permissions` row, by its key.
    PermissionDelete {
        /// The resource.
        resource_id: &'a str,
        /// The role.
        role_id: &'a str,
        /// The privilege.
        privilege: &'a str,
    },
    /// INSERT of a `resources` row, or an UPDATE (possibly changing `owner_id`).
    ResourceUpsert {
        /// The resource.
        resource_id: &'a str,
        /// Its owner after the change.
        owner_id: &'a str,
    },
    /// DELETE of a `resources` row: key only, the model remembers the owner.
    ResourceDelete {
        /// The resource.
        resource_id: &'a str,
    },
    /// TRUNCATE of one followed table (a TRUNCATE message lists each table).
    Truncate(ModelTable),
}

impl Model {
    /// Starts a leader transaction: discards flips recorded since the last [`Model::end`].
    pub fn begin(&mut self) {
        self.pending.clear();
    }

    /// Ends a leader transaction: every (set, variable) whose membership flipped at any
    /// moment since [`Model::begin`], with its final state.
    pub fn end(&mut self) -> Effects {
        self.take_effects()
    }

    /// Applies one row change, updating decisions at once (later `decide` calls in the same
    /// transaction see it). Errors only on malformed ids; the model is then unchanged.
    pub fn feed(&mut self, change: Change<'_>) -> Result<(), FilterError> {
        match change {
            Change::MembershipUpsert {
                role_id,
                member_id,
                ownership,
            } => {
                ResourceId::parse_str(role_id)?;
                ResourceId::parse_str(member_id)?;
                let role = self.intern_id(role_id)?;
                let member = self.intern_id(member_id)?;
                if self.set_membership_row(role, member, ownership, true) == EdgeChange::Added {
                    let bits = self.bits_of(member) & !self.bits_of(role);
                    if bits != 0 {
                        let mut touched = Vec::new();
                        self.spread_closure(role, bits, &mut touched);
                        self.refresh_reachable(&touched);
                    }
                }
            }
            Change::MembershipDelete {
                role_id,
                member_id,
                ownership,
            } => {
                ResourceId::parse_str(role_id)?;
                ResourceId::parse_str(member_id)?;
                if let (Some(role), Some(member)) = (self.lookup(role_id), self.lookup(member_id))
                    && self.set_membership_row(role, member, ownership, false)
                        == EdgeChange::Removed
                {
                    // Every set whose closure held the member held the parent through this edge.
                    let bits = self.bits_of(member);
                    if bits != 0 {
                        let mut touched = Vec::new();
                        self.recompute_closures(bits, &mut touched);
                        self.refresh_reachable(&touched);
                    }
                }
            }
            Change::PermissionUpsert {
                resource_id,
                role_id,
                privilege,
            } => {
                let filtered = ResourceId::parse_str(resource_id)?.is_filtered();
                ResourceId::parse_str(role_id)?;
                if filtered {
                    let var = self.intern_id(resource_id)?;
                    let role = self.intern_id(role_id)?;
                    let p = self.privileges.intern(privilege);
                    if self.add_permission_row(var, role, p) {
                        self.refresh(var);
                    }
                }
            }
            Change::PermissionDelete {
                resource_id,
                role_id,
                privilege,
            } => {
                let filtered = ResourceId::parse_str(resource_id)?.is_filtered();
                ResourceId::parse_str(role_id)?;
                if filtered
                    && let (Some(var), Some(role), Some(p)) = (
                        self.lookup(resource_id),
                        self.lookup(role_id),
                        self.privileges.get(privilege),
                    )
                    && self.remove_permission_row(var, role, p)
                {
                    self.refresh(var);
                }
            }
            Change::ResourceUpsert {
                resource_id,
                owner_id,
            } => {
                let filtered = ResourceId::parse_str(resource_id)?.is_filtered();
                ResourceId::parse_str(owner_id)?;
                if filtered {
                    let var = self.intern_id(resource_id)?;
                    let owner = self.intern_id(owner_id)?;
                    if self.set_owner(var, owner) {
                        self.refresh(var);
                    }
                }
            }
            Change::ResourceDelete { resource_id } => {
                let filtered = ResourceId::parse_str(resource_id)?.is_filtered();
                if filtered
                    && let Some(var) = self.lookup(resource_id)
                    && self.set_owner(var, NO_SYM)
                {
                    self.refresh(var);
                }
            }
            Change::Truncate(table) => self.truncate(table),
        }
        Ok(())
    }

    fn truncate(&mut self, table: ModelTable) {
        match table {
            ModelTable::RoleMemberships => {
                for adj in self.roles.values_mut() {
                    adj.parents.clear();
                }
                let mut touched = Vec::new();
                self.recompute_closures(self.all, &mut touched);
                self.refresh_reachable(&touched);
            }
            ModelTable::Permissions => {
                let vars: Vec<Sym> = (0..self.perms.len())
                    .filter(|&i| self.perms.get(i).is_some_and(|p| !p.is_empty()))
                    .filter_map(|i| Sym::try_from(i).ok())
                    .collect();
                for p in &mut self.perms {
                    *p = Box::default();
                }
                for adj in self.roles.values_mut() {
                    adj.grants.clear();
                }
                for v in vars {
                    self.refresh(v);
                }
            }
            ModelTable::Resources => {
                let vars: Vec<Sym> = (0..self.owner.len())
                    .filter(|&i| self.owner.get(i).is_some_and(|&o| o != NO_SYM))
                    .filter_map(|i| Sym::try_from(i).ok())
                    .collect();
                for v in vars {
                    self.set_owner(v, NO_SYM);
                    self.refresh(v);
                }
            }
        }
    }
}
