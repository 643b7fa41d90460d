//! `RelationCache`: the client side of pgoutput's "send Relation once"
//! contract. DML messages carry only a relation OID; this maps it back to
//! the last Relation message seen for it on this connection.

use std::collections::HashMap;

use crate::pgoutput::relation::Relation;

/// Relations by OID; replace on every Relation message, clear on reconnect.
#[derive(Clone, Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, Relation>,
}

impl RelationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `relation`, replacing (and returning) any earlier definition.
    pub fn insert(&mut self, relation: Relation) -> Option<Relation> {
        self.relations.insert(relation.oid, relation)
    }

    /// The current definition of relation `oid`.
    pub fn get(&self, oid: u32) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// Forgets relation `oid`.
    pub fn remove(&mut self, oid: u32) -> Option<Relation> {
        self.relations.remove(&oid)
    }

    /// Forgets everything (a new walsender session resends all Relations).
    pub fn clear(&mut self) {
        self.relations.clear();
    }

    /// Number of known relations.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// Whether no relation is known.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// All known relations, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Relation> {
        self.relations.values()
    }
}
