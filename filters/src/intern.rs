//! Interning of role and resource ids into dense `u32` handles, each with a `u64` payload
//! (the id's set mask).
//!
//! Records live back to back in one arena: `[payload: u64][len: u32][sym: u32][name]`. The
//! hash table holds record offsets, so a lookup by borrowed `&[u8]` touches three places: the
//! table's control bytes, its slot, and one record (whose name and payload share a cache
//! line) — no allocation, no second index. Handles are never reused: a model rebuilt at
//! restart drops the names of deleted roles and resources.

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use std::hash::Hasher;

/// Dense handle of an interned id.
pub(crate) type Sym = u32;

/// Placeholder for "no role" (e.g. a variable without a `resources` row).
pub(crate) const NO_SYM: Sym = u32::MAX;

const HEADER: usize = 16;

/// Arena-backed string interner with a mutable `u64` per name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    arena: Vec<u8>,
    /// Record offset of each handle.
    offsets: Vec<usize>,
    table: HashTable<usize>,
}

/// The hash of a name; keys come from the leader, so a fast non-keyed hash is fine.
#[inline]
pub(crate) fn hash_name(name: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(name);
    h.finish()
}

#[inline]
fn read_u64(arena: &[u8], at: usize) -> u64 {
    arena
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[inline]
fn read_u32(arena: &[u8], at: usize) -> u32 {
    arena
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

#[inline]
fn record_name(arena: &[u8], off: usize) -> &[u8] {
    let len = read_u32(arena, off + 8) as usize;
    arena.get(off + HEADER..off + HEADER + len).unwrap_or(&[])
}

impl Interner {
    /// The handle and payload of `name`, if it was interned (the hot path).
    #[inline]
    pub(crate) fn get(&self, name: &[u8]) -> Option<(Sym, u64)> {
        let arena = &self.arena;
        let &off = self
            .table
            .find(hash_name(name), |&off| record_name(arena, off) == name)?;
        Some((read_u32(arena, off + 12), read_u64(arena, off)))
    }

    /// The handle of `name`, interning it with `payload` if new; the flag is true when new.
    pub(crate) fn intern(&mut self, name: &str, payload: u64) -> (Sym, bool) {
        if let Some((s, _)) = self.get(name.as_bytes()) {
            return (s, false);
        }
        // More than 4 G names cannot happen before memory runs out; saturate rather than panic.
        let sym = Sym::try_from(self.offsets.len()).unwrap_or(NO_SYM - 1);
        let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
        let off = self.arena.len();
        self.arena.extend_from_slice(&payload.to_le_bytes());
        self.arena.extend_from_slice(&len.to_le_bytes());
        self.arena.extend_from_slice(&sym.to_le_bytes());
        self.arena.extend_from_slice(name.as_bytes());
        self.offsets.push(off);
        let arena = &self.arena;
        self.table
            .insert_unique(hash_name(name.as_bytes()), off, |&o| {
                hash_name(record_name(arena, o))
            });
        (sym, true)
    }

    /// The name of a handle this interner returned.
    pub(crate) fn name(&self, sym: Sym) -> &str {
        let bytes = self
            .offsets
            .get(sym as usize)
            .map_or(&[][..], |&off| record_name(&self.arena, off));
        // Only `&str`s are interned, and records are never split.
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// The payload of a handle.
    #[inline]
    pub(crate) fn payload(&self, sym: Sym) -> u64 {
        self.offsets
            .get(sym as usize)
            .map_or(0, |&off| read_u64(&self.arena, off))
    }

    /// Replaces the payload of a handle.
    pub(crate) fn set_payload(&mut self, sym: Sym, payload: u64) {
        if let Some(&off) = self.offsets.get(sym as usize)
            && let Some(slot) = self.arena.get_mut(off..off + 8)
        {
            slot.copy_from_slice(&payload.to_le_bytes());
        }
    }

    /// Number of interned names (handles are `0..len`).
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Bytes held by the arena, the offsets and the table (for memory reports).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.offsets.capacity() * std::mem::size_of::<usize>()
            + self.table.capacity() * (std::mem::size_of::<usize>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_finds_by_bytes() {
        let mut i = Interner::default();
        let (a, new_a) = i.intern("acct:variable:a", 7);
        let (b, new_b) = i.intern("acct:variable:b", 9);
        let (a2, new_a2) = i.intern("acct:variable:a", 1);
        assert!(new_a && new_b && !new_a2);
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_eq!(i.get(b"acct:variable:b"), Some((b, 9)));
        assert_eq!(
            i.get(b"acct:variable:a"),
            Some((a, 7)),
            "re-interning keeps the payload"
        );
        assert_eq!(i.get(b"acct:variable:c"), None);
        assert_eq!(i.get(b"acct:variable:"), None);
        assert_eq!(i.name(a), "acct:variable:a");
        assert_eq!(i.name(b), "acct:variable:b");
        i.set_payload(b, u64::MAX);
        assert_eq!(i.payload(b), u64::MAX);
        assert_eq!(i.payload(a), 7);
        for n in 0..10_000 {
            i.intern(&format!("x:{n}"), n);
        }
        assert_eq!(i.get(b"acct:variable:b"), Some((b, u64::MAX)));
        let (s, p) = i.get(b"x:9999").expect("interned");
        assert_eq!((i.name(s), p), ("x:9999", 9999));
        assert_eq!(i.len(), 10_002);
    }
}
