//! Closures of the data groups: for set `s`, every role its data group `G_s` reaches by
//! following `member → role` edges (G_s itself included). Kept both as a per-set role set
//! and as per-role bits (`closure_bits`), which is what a variable's mask is computed from.
//!
//! * Edge added `M → P`: the sets in `bits(M) \ bits(P)` spread from `P` upward; each role
//!   gains each bit at most once, so the cost is the number of roles that entered.
//! * Edge removed `M → P`: every set in `bits(M)` may lose roles (a cycle or a second path can
//!   keep them), so those sets' closures are recomputed by BFS from their data groups and
//!   diffed with the old ones: cost O(Σ size of the affected closures).

use crate::intern::Sym;
use crate::model::Model;
use crate::replica_set::SetMask;
use rustc_hash::FxHashSet;

impl Model {
    /// Spreads `bits` from `start` upward; roles whose bits changed are pushed to `touched`.
    pub(crate) fn spread_closure(&mut self, start: Sym, bits: u64, touched: &mut Vec<Sym>) {
        let mut stack = vec![(start, bits)];
        while let Some((role, bits)) = stack.pop() {
            let Some(slot) = self.closure_bits.get_mut(role as usize) else {
                continue;
            };
            let new = bits & !*slot;
            if new == 0 {
                continue;
            }
            *slot |= new;
            for s in SetMask(new).iter() {
                if let Some(c) = self.closures.get_mut(s) {
                    c.insert(role);
                }
            }
            touched.push(role);
            stack.extend(self.parents_of(role).map(|p| (p, new)));
        }
    }

    /// Recomputes the closures of the sets in `sets` from scratch; roles that entered or
    /// left any of them are pushed to `touched`.
    pub(crate) fn recompute_closures(&mut self, sets: u64, touched: &mut Vec<Sym>) {
        for s in SetMask(sets & self.all).iter() {
            let Some(&group) = self.groups.get(s) else {
                continue;
            };
            let fresh = self.reachable_from(group);
            let old = std::mem::take(
                self.closures
                    .get_mut(s)
                    .unwrap_or(&mut FxHashSet::default()),
            );
            let bit = SetMask::single(s).0;
            for &r in old.difference(&fresh) {
                if let Some(b) = self.closure_bits.get_mut(r as usize) {
                    *b &= !bit;
                }
                touched.push(r);
            }
            for &r in fresh.difference(&old) {
                if let Some(b) = self.closure_bits.get_mut(r as usize) {
                    *b |= bit;
                }
                touched.push(r);
            }
            if let Some(c) = self.closures.get_mut(s) {
                *c = fresh;
            }
        }
    }

    /// Every role reachable upward from `start`, `start` included.
    pub(crate) fn reachable_from(&self, start: Sym) -> FxHashSet<Sym> {
        let mut seen = FxHashSet::default();
        seen.insert(start);
        let mut stack = vec![start];
        while let Some(r) = stack.pop() {
            for p in self.parents_of(r) {
                if seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        seen
    }

    /// BFS tree upward from `start`: roles in breadth-first order with the index of the
    /// role they were reached from (for shortest explanations).
    pub(crate) fn closure_tree(&self, start: Sym) -> Vec<(Sym, Option<usize>)> {
        let mut seen = FxHashSet::default();
        seen.insert(start);
        let mut order = vec![(start, None)];
        let mut i = 0;
        while let Some(&(r, _)) = order.get(i) {
            let mut next: Vec<Sym> = self.parents_of(r).filter(|p| !seen.contains(p)).collect();
            // Deterministic output whatever the hash order.
            next.sort_by(|a, b| self.names.name(*a).cmp(self.names.name(*b)));
            for p in next {
                seen.insert(p);
                order.push((p, Some(i)));
            }
            i += 1;
        }
        order
    }
}
