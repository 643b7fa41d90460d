//! Replica sets as configured (`ReplicaSetSpec`, `Rule`), the bitmask that names a group of
//! them (`SetMask`), and the `always` glob patterns.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, BitXor, Not};

/// Most replica sets one model serves: one bit each in a [`SetMask`].
pub const MAX_SETS: usize = 64;

/// Which replica sets a row goes to: bit `i` is replica set `i` in configuration order.
/// A `u64` so a per-row decision is a copy, never an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SetMask(pub u64);

impl SetMask {
    /// Every bit, whatever the number of configured sets; intersect with
    /// [`crate::Model::all_sets`] for the configured ones.
    pub const ALL: SetMask = SetMask(u64::MAX);
    /// No set.
    pub const NONE: SetMask = SetMask(0);

    /// The mask holding only set `i` (empty when `i` ≥ 64).
    pub fn single(i: usize) -> SetMask {
        SetMask(bit(i))
    }

    /// The mask of the first `n` sets (all 64 when `n` ≥ 64).
    pub fn first(n: usize) -> SetMask {
        if n >= MAX_SETS {
            SetMask::ALL
        } else {
            SetMask((1u64 << n) - 1)
        }
    }

    /// Whether set `i` is in the mask.
    pub fn contains(self, i: usize) -> bool {
        self.0 & bit(i) != 0
    }

    /// The mask with set `i` added.
    pub fn with(self, i: usize) -> SetMask {
        SetMask(self.0 | bit(i))
    }

    /// True when no set is in the mask.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many sets are in the mask.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// The set indices in the mask, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(i)
        })
    }
}

fn bit(i: usize) -> u64 {
    if i < MAX_SETS { 1u64 << i } else { 0 }
}

impl BitOr for SetMask {
    type Output = SetMask;
    fn bitor(self, rhs: SetMask) -> SetMask {
        SetMask(self.0 | rhs.0)
    }
}
impl BitOrAssign for SetMask {
    fn bitor_assign(&mut self, rhs: SetMask) {
        self.0 |= rhs.0;
    }
}
impl BitAnd for SetMask {
    type Output = SetMask;
    fn bitand(self, rhs: SetMask) -> SetMask {
        SetMask(self.0 & rhs.0)
    }
}
impl BitAndAssign for SetMask {
    fn bitand_assign(&mut self, rhs: SetMask) {
        self.0 &= rhs.0;
    }
}
impl BitXor for SetMask {
    type Output = SetMask;
    fn bitxor(self, rhs: SetMask) -> SetMask {
        SetMask(self.0 ^ rhs.0)
    }
}
impl Not for SetMask {
    type Output = SetMask;
    fn not(self) -> SetMask {
        SetMask(!self.0)
    }
}

impl fmt::Display for SetMask {
    /// `{0,3}` style, for logs and the tap.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (n, i) in self.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{i}")?;
        }
        f.write_str("}")
    }
}

/// Which grants put a variable in a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rule {
    /// Conjur's `is_role_allowed_to(G, 'execute', V)`: owner, or holder of `execute`.
    /// The Enterprise convention: `execute` replicates the value.
    #[default]
    Execute,
    /// The seed's pglogical filter, `is_resource_visible(V, G)`: owner, or holder of any privilege.
    Any,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Execute => "execute",
            Rule::Any => "any",
        })
    }
}

/// One replica set as the model needs it: config resolution (short names, accounts) happens
/// before, in the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetSpec {
    /// Name used in effects, logs and the tap (e.g. the follower's name).
    pub name: String,
    /// Full role id of the set's data group, e.g.
    /// `system:group:conjur/replication-sets/us-east/replicated-data`.
    pub data_group: String,
    /// Which privileges count.
    pub rule: Rule,
    /// Variable ids whose secrets this set always gets; `*` matches any run of characters.
    pub always: Vec<String>,
}

/// Matches `pattern` (where `*` is any run of bytes, possibly empty) against `text`
/// in O(|pattern|·|text|) worst case, without allocating.
pub(crate) fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Position after the last `*` seen, and the text position it currently stands for.
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                retry = Some((p + 1, t));
                p += 1;
            }
            (Some(pc), Some(tc)) if pc == tc => {
                p += 1;
                t += 1;
            }
            _ => match retry {
                Some((rp, rt)) => {
                    p = rp;
                    t = rt + 1;
                    retry = Some((rp, rt + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_ops() {
        let m = SetMask::single(0).with(3).with(63);
        assert!(m.contains(3) && m.contains(63) && !m.contains(1));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 3, 63]);
        assert_eq!(m.count(), 3);
        assert_eq!(SetMask::first(3), SetMask(0b111));
        assert_eq!(SetMask::first(64), SetMask::ALL);
        assert_eq!(SetMask::single(64), SetMask::NONE);
        assert_eq!(m.to_string(), "{0,3,63}");
        assert_eq!(
            (m & SetMask::first(4)) | SetMask::single(1),
            SetMask(0b1011)
        );
    }

    #[test]
    fn glob() {
        let p = b"*:variable:conjur/shared/*";
        assert!(glob_matches(p, b"acct:variable:conjur/shared/x"));
        assert!(glob_matches(p, b"a:b:variable:conjur/shared/"));
        assert!(!glob_matches(p, b"acct:variable:conjur/sharedx"));
        assert!(!glob_matches(p, b"acct:host:conjur/shared/x"));
        assert!(glob_matches(b"*", b""));
        assert!(glob_matches(b"a*b*c", b"aXbYbc"));
        assert!(!glob_matches(b"a*b*c", b"aXbYbcd"));
        assert!(glob_matches(b"exact", b"exact"));
        assert!(!glob_matches(b"exact", b"exac"));
        assert!(glob_matches(b"**x", b"yyx"));
    }
}
