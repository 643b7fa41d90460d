//! The model itself: interned ids, per-id dense state, and the per-row decision.
//!
//! Every id (role or variable) gets a dense [`Sym`]; its set mask is the interner's payload,
//! stored beside its name, so a decision is one hash lookup. Other per-id state sits in
//! parallel vectors indexed by the handle. The mask of
//! filtered resource (any kind but `public_key`) is kept current by `feed` (see
//! `membership.rs`); the mask of a public key is all configured sets, fixed when interned.

use crate::FilterError;
use crate::graph::RoleAdj;
use crate::ids::{ResourceId, kind_of};
use crate::intern::{Interner, NO_SYM, Sym};
use crate::privileges::{Perm, Privileges};
use crate::replica_set::{MAX_SETS, ReplicaSetSpec, Rule, SetMask, glob_matches};
use rustc_hash::{FxHashMap, FxHashSet};

/// The Conjur authorization model restricted to what replica-set membership needs: the
/// role graph, the owner and permissions of every variable, each data group's closure, and
/// the resulting set mask of every variable.
///
/// Built once (from [`Model::builder`] or by feeding rows) and then kept current by
/// [`Model::feed`] inside [`Model::begin`]/[`Model::end`] brackets, one per leader transaction.
#[derive(Debug, Clone)]
pub struct Model {
    pub(crate) sets: Vec<ReplicaSetSpec>,
    /// Data group of each set.
    pub(crate) groups: Vec<Sym>,
    /// Bits of the configured sets.
    pub(crate) all: u64,
    /// Bits of the sets whose rule is [`Rule::Any`].
    pub(crate) any_rule: u64,
    pub(crate) names: Interner,
    /// Per sym: sets whose data-group closure holds this role.
    pub(crate) closure_bits: Vec<u64>,
    /// Per sym: owner of the variable (`NO_SYM` when it has no `resources` row).
    pub(crate) owner: Vec<Sym>,
    /// Per sym: `permissions` rows on the variable.
    pub(crate) perms: Vec<Box<[Perm]>>,
    /// Per sym: whether the id's secrets follow the rule (every kind but `public_key`).
    pub(crate) filtered: Vec<bool>,
    /// Always-pattern bits of the variables that match any (most match none).
    pub(crate) always: FxHashMap<Sym, u64>,
    /// Adjacency of every id that appears as a role.
    pub(crate) roles: FxHashMap<Sym, RoleAdj>,
    /// Per set: the roles of its data group's closure.
    pub(crate) closures: Vec<FxHashSet<Sym>>,
    pub(crate) privileges: Privileges,
    /// Per variable: set bits that flipped since the last `begin`/`end`.
    pub(crate) pending: FxHashMap<Sym, u64>,
}

impl Model {
    /// An empty model (no roles, no variables) serving `sets`, in this order: set `i` is bit `i`.
    pub fn new(sets: Vec<ReplicaSetSpec>) -> Result<Model, FilterError> {
        if sets.len() > MAX_SETS {
            return Err(FilterError::TooManySets { count: sets.len() });
        }
        let mut seen = FxHashSet::default();
        for s in &sets {
            if !seen.insert(s.name.as_str()) {
                return Err(FilterError::DuplicateSet {
                    name: s.name.clone(),
                });
            }
        }
        let all = SetMask::first(sets.len()).0;
        let any_rule = sets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.rule == Rule::Any)
            .fold(0u64, |m, (i, _)| m | SetMask::single(i).0);
        let mut model = Model {
            groups: Vec::with_capacity(sets.len()),
            closures: vec![FxHashSet::default(); sets.len()],
            sets,
            all,
            any_rule,
            names: Interner::default(),
            closure_bits: Vec::new(),
            owner: Vec::new(),
            perms: Vec::new(),
            filtered: Vec::new(),
            always: FxHashMap::default(),
            roles: FxHashMap::default(),
            privileges: Privileges::default(),
            pending: FxHashMap::default(),
        };
        for i in 0..model.sets.len() {
            let group = model
                .sets
                .get(i)
                .map(|s| s.data_group.clone())
                .unwrap_or_default();
            let g = model.intern_id(&group)?;
            model.groups.push(g);
            model.closure_bits[g as usize] |= SetMask::single(i).0;
            if let Some(c) = model.closures.get_mut(i) {
                c.insert(g);
            }
        }
        Ok(model)
    }

    /// The configured sets, in bit order.
    pub fn sets(&self) -> &[ReplicaSetSpec] {
        &self.sets
    }

    /// The mask of every configured set (what `public_key` rows get).
    pub fn all_sets(&self) -> SetMask {
        SetMask(self.all)
    }

    /// The replica sets that may hold `secrets` rows of `resource_id`.
    ///
    /// Hot path: one hash lookup on the borrowed bytes, no allocation. For an id the model
    /// has never seen (fail closed): a `public_key` → every set; any other kind → only the
    /// sets whose `always` patterns match (it has no owner or grants yet); not an id at all →
    /// no set.
    #[inline]
    pub fn decide(&self, resource_id: &[u8]) -> SetMask {
        match self.names.get(resource_id) {
            Some((_, mask)) => SetMask(mask),
            None => self.decide_unknown(resource_id),
        }
    }

    #[cold]
    fn decide_unknown(&self, resource_id: &[u8]) -> SetMask {
        match kind_of(resource_id) {
            None => SetMask::NONE,
            Some(kind) if kind == crate::ids::PUBLIC_KEY_KIND.as_bytes() => SetMask(self.all),
            Some(_) => SetMask(self.always_bits(resource_id)),
        }
    }

    /// Known filtered resources (any kind but `public_key`, with a `resources` row) in set
    /// `set`, in interning order. For reconciling a follower, tests and the tap; walks
    /// every id.
    pub fn resources_in(&self, set: usize) -> impl Iterator<Item = &str> {
        let bit = SetMask::single(set).0;
        (0..self.names.len()).filter_map(move |i| {
            let in_set = self.filtered.get(i).copied().unwrap_or(false)
                && self.owner.get(i).is_some_and(|&o| o != NO_SYM)
                && self.names.payload(i as Sym) & bit != 0;
            // `i < names.len()` fits a Sym: the interner hands out u32 handles.
            in_set.then(|| self.names.name(i as Sym))
        })
    }

    /// Every filtered resource (any kind but `public_key`) the model knows a `resources`
    /// row of, in interning order: what a follower without a replica set may hold secrets
    /// of besides public keys. Walks every id.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        (0..self.names.len()).filter_map(move |i| {
            let known = self.owner.get(i).is_some_and(|&o| o != NO_SYM);
            // `i < names.len()` fits a Sym: the interner hands out u32 handles.
            known.then(|| self.names.name(i as Sym))
        })
    }

    /// Rough heap footprint in bytes (ids, per-id state, role graph), for sizing reports.
    pub fn approx_heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let n = self.names.len();
        let dense = n * (size_of::<u64>() + size_of::<Sym>() + size_of::<Box<[Perm]>>() + 1);
        let perms: usize = self.perms.iter().map(|p| p.len() * size_of::<Perm>()).sum();
        let roles: usize = self
            .roles
            .values()
            .map(|r| {
                size_of::<RoleAdj>()
                    + (r.parents.capacity() + r.grants.capacity()) * (size_of::<(Sym, u32)>() + 1)
                    + r.owned.capacity() * (size_of::<Sym>() + 1)
            })
            .sum();
        self.names.heap_bytes() + dense + perms + roles
    }

    /// Handle of an id, interning it (and its per-id state) when new.
    pub(crate) fn intern_id(&mut self, id: &str) -> Result<Sym, FilterError> {
        if let Some((s, _)) = self.names.get(id.as_bytes()) {
            return Ok(s);
        }
        let filtered = ResourceId::parse_str(id)?.is_filtered();
        let always = if filtered {
            self.always_bits(id.as_bytes())
        } else {
            0
        };
        let (s, _) = self
            .names
            .intern(id, if filtered { always } else { self.all });
        if always != 0 {
            self.always.insert(s, always);
        }
        self.closure_bits.push(0);
        self.owner.push(NO_SYM);
        self.perms.push(Box::default());
        self.filtered.push(filtered);
        Ok(s)
    }

    /// Handle of an id already interned (deletes never intern).
    pub(crate) fn lookup(&self, id: &str) -> Option<Sym> {
        self.names.get(id.as_bytes()).map(|(s, _)| s)
    }

    /// Sets whose `always` patterns match `id`.
    pub(crate) fn always_bits(&self, id: &[u8]) -> u64 {
        self.sets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.always.iter().any(|p| glob_matches(p.as_bytes(), id)))
            .fold(0u64, |m, (i, _)| m | SetMask::single(i).0)
    }

    pub(crate) fn bits_of(&self, role: Sym) -> u64 {
        self.closure_bits.get(role as usize).copied().unwrap_or(0)
    }
}
