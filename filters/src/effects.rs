//! Effects of a transaction: which variables must be re-synced (now in) or purged (now out)
//! on which replica set. The proxy turns each flip into a backfill or a delete on the follower.

use crate::intern::Sym;
use crate::model::Model;
use crate::replica_set::SetMask;

/// One variable whose membership in one set flipped at some point in the transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flip {
    /// Index of the replica set (bit in [`SetMask`]).
    pub set: usize,
    /// The variable's id.
    pub resource_id: String,
    /// Membership at the end of the transaction: `true` → copy its secrets from the leader,
    /// `false` → delete them on the follower. A variable that left and came back inside one
    /// transaction is reported with `true`, since its rows may have changed meanwhile.
    pub now_in: bool,
}

/// All flips of one transaction, sorted by set, then id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// The flips, sorted by (set, resource_id).
    pub flips: Vec<Flip>,
}

impl Effects {
    /// The flips of one replica set.
    pub fn for_set(&self, set: usize) -> impl Iterator<Item = &Flip> {
        self.flips.iter().filter(move |f| f.set == set)
    }

    /// True when no variable changed membership anywhere.
    pub fn is_empty(&self) -> bool {
        self.flips.is_empty()
    }

    /// Number of (set, variable) flips.
    pub fn len(&self) -> usize {
        self.flips.len()
    }
}

impl Model {
    /// Turns the pending flips into effects and clears them.
    pub(crate) fn take_effects(&mut self) -> Effects {
        let pending = std::mem::take(&mut self.pending);
        let mut flips = Vec::new();
        for (var, flipped) in pending {
            let mask = self.names.payload(var);
            for set in SetMask(flipped).iter() {
                flips.push(Flip {
                    set,
                    resource_id: self.names.name(var as Sym).to_owned(),
                    now_in: SetMask(mask).contains(set),
                });
            }
        }
        flips.sort_unstable();
        Effects { flips }
    }
}
