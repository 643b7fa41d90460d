//! pgoutput, protocol versions 1–4: the payload of each XLogData.
//!
//! Use [`PgOutputDecoder::decode`] on each XLogData's `data`; it tracks the
//! stream-block state that decides whether changes carry an xid. Keep a
//! [`RelationCache`] fed with every [`Relation`] to interpret `rel_id`s.
//! Row values are read through [`TupleData::columns`], borrowing the frame.

mod change;
mod decoder;
mod logical_message;
mod message;
mod pg_string;
mod pg_type;
mod relation;
mod relation_cache;
mod stream;
mod tuple;
mod two_phase;
mod txn;
mod walk;

pub use change::{
    Delete, Insert, OldTuple, TUPLE_KEY, TUPLE_NEW, TUPLE_OLD, Truncate, TruncateOptions, Update,
};
pub use decoder::PgOutputDecoder;
pub use logical_message::{MESSAGE_TRANSACTIONAL, Message};
pub use message::*;
pub use pg_string::PgString;
pub use pg_type::Type;
pub use relation::{Relation, RelationColumn, ReplicaIdentity};
pub use relation_cache::RelationCache;
pub use stream::{StreamAbort, StreamCommit, StreamStart};
pub use tuple::{
    COLUMN_BINARY, COLUMN_NULL, COLUMN_TEXT, COLUMN_UNCHANGED_TOAST, Column, ColumnValue, Columns,
    TupleData,
};
pub use two_phase::{BeginPrepare, CommitPrepared, Prepare, RollbackPrepared, StreamPrepare};
pub use txn::{Begin, Commit, Origin};
pub use walk::{WalkSummary, walk};

#[cfg(test)]
mod tests;
