//! Errors of the filter model: a bad id or an impossible configuration. Rows that
//! merely refer to unknown roles or resources are not errors (see `feed`).

/// Why the model refused a configuration or a row.
///
/// A `BadId` from [`crate::Model::feed`] means the leader sent an id that violates Conjur's
/// `has_account`/`has_kind` checks: the caller should stop rather than guess a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An id that is not of the form `account:kind:identifier` (or not UTF-8).
    #[error("bad Conjur id {id:?}: expected account:kind:identifier")]
    BadId {
        /// The offending id (lossily decoded if it was not UTF-8).
        id: String,
    },
    /// More replica sets than fit in a [`crate::SetMask`].
    #[error("{count} replica sets configured; at most 64 are supported")]
    TooManySets {
        /// How many were configured.
        count: usize,
    },
    /// Two replica sets with the same name: decisions and effects would be ambiguous.
    #[error("replica set {name:?} is configured twice")]
    DuplicateSet {
        /// The repeated name.
        name: String,
    },
}

impl FilterError {
    pub(crate) fn bad_id(id: &[u8]) -> Self {
        FilterError::BadId {
            id: String::from_utf8_lossy(id).into_owned(),
        }
    }
}
