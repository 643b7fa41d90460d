//! Interning of role and resource ids into dense `u32` handles.
//!
//! Names live back to back in one arena string (no allocation per name); the table maps a
//! name's hash to its handle and compares against the arena, so a lookup by borrowed
//! `&[u8]` never allocates. Handles are never reused: a model rebuilt at restart drops
//! the names of deleted roles and resources.

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use std::hash::Hasher;

/// Dense handle of an interned id.
pub(crate) type Sym = u32;

/// Placeholder for "no role" (e.g. a variable without a `resources` row).
pub(crate) const NO_SYM: Sym = u32::MAX;

/// Arena-backed string interner.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    arena: String,
    /// `ends[s]` is where name `s` ends in the arena; it starts where `s - 1` ends.
    ends: Vec<usize>,
    table: HashTable<Sym>,
}

/// The hash of a name; keys come from the leader, so a fast non-keyed hash is fine.
#[inline]
pub(crate) fn hash_name(name: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(name);
    h.finish()
}

impl Interner {
    /// The handle of `name`, if it was interned.
    #[inline]
    pub(crate) fn get(&self, name: &[u8]) -> Option<Sym> {
        let hash = hash_name(name);
        self.table.find(hash, |&s| self.bytes(s) == name).copied()
    }

    /// The handle of `name`, interning it if new; the flag is true when it was new.
    pub(crate) fn intern(&mut self, name: &str) -> (Sym, bool) {
        if let Some(s) = self.get(name.as_bytes()) {
            return (s, false);
        }
        // More than 4 G names cannot happen before memory runs out; saturate rather than panic.
        let sym = Sym::try_from(self.ends.len()).unwrap_or(NO_SYM - 1);
        self.arena.push_str(name);
        self.ends.push(self.arena.len());
        let Interner {
            arena, ends, table, ..
        } = self;
        table.insert_unique(hash_name(name.as_bytes()), sym, |&s| {
            hash_name(name_in(arena, ends, s).as_bytes())
        });
        (sym, true)
    }

    /// The name of a handle this interner returned.
    #[inline]
    pub(crate) fn name(&self, sym: Sym) -> &str {
        name_in(&self.arena, &self.ends, sym)
    }

    #[inline]
    fn bytes(&self, sym: Sym) -> &[u8] {
        self.name(sym).as_bytes()
    }

    /// Number of interned names (handles are `0..len`).
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes held by the arena, the index and the table (for memory reports).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.table.capacity() * (std::mem::size_of::<Sym>() + 1)
    }
}

fn name_in<'a>(arena: &'a str, ends: &[usize], sym: Sym) -> &'a str {
    let i = sym as usize;
    let end = ends.get(i).copied().unwrap_or(0);
    let start = match i.checked_sub(1) {
        Some(prev) => ends.get(prev).copied().unwrap_or(0),
        None => 0,
    };
    arena.get(start..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_finds_by_bytes() {
        let mut i = Interner::default();
        let (a, new_a) = i.intern("acct:variable:a");
        let (b, new_b) = i.intern("acct:variable:b");
        let (a2, new_a2) = i.intern("acct:variable:a");
        assert!(new_a && new_b && !new_a2);
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(i.get(b"acct:variable:b"), Some(b));
        assert_eq!(i.get(b"acct:variable:c"), None);
        assert_eq!(i.name(a), "acct:variable:a");
        assert_eq!(i.name(b), "acct:variable:b");
        for n in 0..10_000 {
            i.intern(&format!("x:{n}"));
        }
        assert_eq!(i.get(b"acct:variable:b"), Some(b));
        assert_eq!(i.name(i.get(b"x:9999").expect("interned")), "x:9999");
    }
}
