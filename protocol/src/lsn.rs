//! Log sequence numbers: the one coordinate every part of pgsieve agrees on.
//!
//! PostgreSQL prints an LSN as two hexadecimal halves, `X/XXXXXXXX`; on the
//! wire it is a big-endian `u64`. `Lsn` keeps the number and gives it the
//! textual form, ordering and the byte arithmetic lag reports need.

use std::fmt;
use std::str::FromStr;

/// A position in the leader's write-ahead log.
///
/// `Lsn::ZERO` is PostgreSQL's `InvalidXLogRecPtr`: "no position".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position `0/0`.
    pub const ZERO: Lsn = Lsn(0);

    /// Whether this is the invalid position `0/0`.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Bytes of WAL from `earlier` to `self`, zero when `earlier` is ahead.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// This position moved forward by `bytes`, saturating at the top.
    pub fn advanced_by(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a string is not an LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLsnError;

impl fmt::Display for ParseLsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid LSN: expected two hexadecimal halves like 0/16B3748")
    }
}

impl std::error::Error for ParseLsnError {}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (high, low) = s.split_once('/').ok_or(ParseLsnError)?;
        let valid = |half: &str| !half.is_empty() && half.len() <= 8;
        if !valid(high) || !valid(low) {
            return Err(ParseLsnError);
        }
        let high = u32::from_str_radix(high, 16).map_err(|_| ParseLsnError)?;
        let low = u32::from_str_radix(low, 16).map_err(|_| ParseLsnError)?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(value: Lsn) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_postgres() {
        assert_eq!(Lsn(0x0150_A798).to_string(), "0/150A798");
        assert_eq!(Lsn(0x0000_0003_0000_00FF).to_string(), "3/FF");
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
    }

    #[test]
    fn parses_what_it_prints() {
        for value in [0, 1, 0x150A798, u64::from(u32::MAX) + 7, u64::MAX] {
            let lsn = Lsn(value);
            assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "0", "/1", "1/", "0/1/2", "g/1", "123456789/0", " 0/1"] {
            assert_eq!(bad.parse::<Lsn>(), Err(ParseLsnError), "{bad:?}");
        }
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Lsn(10).bytes_since(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_since(Lsn(10)), 0);
        assert_eq!(Lsn(u64::MAX).advanced_by(1), Lsn(u64::MAX));
    }
}
