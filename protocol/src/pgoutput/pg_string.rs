//! `PgString`: a NUL-terminated wire string kept as a slice of the frame.
//!
//! Messages that may be frequent (Origin, logical decoding Message, the GID
//! of two-phase messages) keep their strings as `Bytes` so that decoding
//! them allocates nothing; UTF-8 is checked once at decode time.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// A UTF-8 string without NUL bytes, sharing the received frame.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PgString(Bytes);

impl PgString {
    /// Wraps `bytes` if they are UTF-8 without NUL (which the wire cannot carry).
    pub fn from_bytes(bytes: Bytes) -> Option<PgString> {
        (std::str::from_utf8(&bytes).is_ok() && !bytes.contains(&0)).then_some(PgString(bytes))
    }

    /// A string from a literal, without copying.
    ///
    /// A NUL inside `s` would be cut at encode time; literals should not have one.
    pub const fn from_static(s: &'static str) -> PgString {
        PgString(Bytes::from_static(s.as_bytes()))
    }

    /// Bytes already checked by the cursor (UTF-8, no NUL).
    pub(crate) fn from_checked(bytes: Bytes) -> PgString {
        PgString(bytes)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The raw bytes (without the NUL terminator).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<&str> for PgString {
    fn from(s: &str) -> Self {
        PgString(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for PgString {
    fn from(s: String) -> Self {
        PgString(Bytes::from(s))
    }
}

impl Deref for PgString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for PgString {
    fn eq(&self, other: &str) -> bool {
        self.0.as_ref() == other.as_bytes()
    }
}

impl PartialEq<&str> for PgString {
    fn eq(&self, other: &&str) -> bool {
        self.0.as_ref() == other.as_bytes()
    }
}

impl fmt::Debug for PgString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PgString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
