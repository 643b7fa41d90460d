//! Replica-set membership of each variable, recomputed from the closure bits of its owner
//! and of its permission holders. A recomputation costs O(permissions on the variable); any
//! change of the mask is recorded as a pending flip for the current transaction.

use crate::intern::{NO_SYM, Sym};
use crate::model::Model;
use crate::privileges::EXECUTE;

impl Model {
    /// The mask a resource should have now (for a `public_key`: every set).
    pub(crate) fn compute_mask(&self, var: Sym) -> u64 {
        let i = var as usize;
        if !self.filtered.get(i).copied().unwrap_or(false) {
            return self.all;
        }
        let mut m = self.always.get(&var).copied().unwrap_or(0);
        let owner = self.owner.get(i).copied().unwrap_or(NO_SYM);
        if owner != NO_SYM {
            m |= self.bits_of(owner);
            for p in self.perms.get(i).map(|p| &p[..]).unwrap_or(&[]) {
                let rule = if p.privilege == EXECUTE {
                    self.all
                } else {
                    self.any_rule
                };
                m |= self.bits_of(p.role) & rule;
            }
        }
        m & self.all
    }

    /// Brings one variable's mask up to date, recording a flip if it changed.
    pub(crate) fn refresh(&mut self, var: Sym) {
        let new = self.compute_mask(var);
        let old = self.names.payload(var);
        if new != old {
            self.names.set_payload(var, new);
            *self.pending.entry(var).or_insert(0) |= old ^ new;
        }
    }

    /// Refreshes every variable owned by or granted to any of `roles`.
    pub(crate) fn refresh_reachable(&mut self, roles: &[Sym]) {
        if roles.is_empty() {
            return;
        }
        let mut vars = Vec::new();
        let mut seen_roles = rustc_hash::FxHashSet::default();
        for &r in roles {
            if seen_roles.insert(r) {
                self.variables_reachable_from(r, &mut vars);
            }
        }
        vars.sort_unstable();
        vars.dedup();
        for v in vars {
            self.refresh(v);
        }
    }
}
