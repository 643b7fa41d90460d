//! Conjur ids (`account:kind:identifier`), split without copying.
//!
//! Conjur's `account()`/`kind()` SQL functions take the first and second `:`-fields; the
//! identifier is everything after the second `:` and may itself contain `:`.

use crate::FilterError;
use std::fmt;

/// Conjur's kind for variables, the usual holders of secrets.
pub const VARIABLE_KIND: &str = "variable";

/// The one kind whose `secrets` rows go to every follower: public keys are public in
/// Conjur's API. Secrets of every other kind (variables, webservices, hosts, …; kinds
/// compared case-sensitively) follow the replica-set rule.
pub const PUBLIC_KEY_KIND: &str = "public_key";

/// A borrowed view of a Conjur role or resource id, so hot paths never allocate to read a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceId<'a> {
    /// First field; Conjur forbids `:` in account names.
    pub account: &'a str,
    /// Second field (`variable`, `group`, `layer`, `public_key`, …).
    pub kind: &'a str,
    /// Everything after the second `:` (may contain `:` and `/`).
    pub identifier: &'a str,
}

impl<'a> ResourceId<'a> {
    /// Splits raw id bytes as they arrive from the wire (text format, UTF-8).
    pub fn parse(id: &'a [u8]) -> Result<Self, FilterError> {
        let text = std::str::from_utf8(id).map_err(|_| FilterError::bad_id(id))?;
        Self::parse_str(text)
    }

    /// Splits an id already known to be text. Account and kind must be non-empty, as
    /// Conjur's `has_account`/`has_kind` checks demand; the identifier may be empty.
    pub fn parse_str(id: &'a str) -> Result<Self, FilterError> {
        let bad = || FilterError::bad_id(id.as_bytes());
        let (account, rest) = id.split_once(':').ok_or_else(bad)?;
        let (kind, identifier) = rest.split_once(':').ok_or_else(bad)?;
        if account.is_empty() || kind.is_empty() {
            return Err(bad());
        }
        Ok(ResourceId {
            account,
            kind,
            identifier,
        })
    }

    /// True for kind `variable` (exactly; `Variable` is another kind).
    pub fn is_variable(&self) -> bool {
        self.kind == VARIABLE_KIND
    }

    /// True when this resource's secrets follow the replica-set rule: every kind but
    /// [`PUBLIC_KEY_KIND`].
    pub fn is_filtered(&self) -> bool {
        self.kind != PUBLIC_KEY_KIND
    }
}

impl fmt::Display for ResourceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.account, self.kind, self.identifier)
    }
}

/// The kind field of raw id bytes, without UTF-8 validation (decide's slow path).
pub(crate) fn kind_of(id: &[u8]) -> Option<&[u8]> {
    let first = id.iter().position(|&b| b == b':')?;
    let rest = id.get(first + 1..)?;
    let second = rest.iter().position(|&b| b == b':')?;
    let kind = rest.get(..second)?;
    if first == 0 || kind.is_empty() {
        return None;
    }
    Some(kind)
}

/// The data group of replica set `<set_path>` in `account`, e.g.
/// `system:group:conjur/replication-sets/us-east/replicated-data` for
/// (`system`, `conjur/replication-sets/us-east`); config code resolves short names with it.
pub fn data_group_id(account: &str, set_path: &str) -> String {
    format!("{account}:group:{set_path}/replicated-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_keeps_colons() {
        let id = ResourceId::parse(b"acct:variable:a/b:c:d").expect("valid id");
        assert_eq!(id.account, "acct");
        assert_eq!(id.kind, "variable");
        assert_eq!(id.identifier, "a/b:c:d");
        assert!(id.is_variable());
        assert_eq!(id.to_string(), "acct:variable:a/b:c:d");
    }

    #[test]
    fn rejects_missing_fields() {
        for bad in [
            &b"acct"[..],
            b"acct:variable",
            b":variable:x",
            b"acct::x",
            b"\xff:v:x",
        ] {
            assert!(ResourceId::parse(bad).is_err(), "{bad:?}");
            if bad != b"\xff:v:x" {
                assert_eq!(kind_of(bad), None, "{bad:?}");
            }
        }
        assert!(ResourceId::parse(b"!:!:root").is_ok());
        assert!(ResourceId::parse(b"a:k:").is_ok());
    }

    #[test]
    fn kind_of_agrees_with_parse() {
        assert_eq!(kind_of(b"a:public_key:user/x"), Some(&b"public_key"[..]));
        assert_eq!(kind_of(b"system:group:x:y"), Some(&b"group"[..]));
    }
}
