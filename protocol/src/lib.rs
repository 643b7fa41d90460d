//! pgoutput and streaming-replication codec for pgsieve.
//!
//! Bytes in, typed messages out, and back; no I/O.
//!
//! - [`frame`]: the CopyData wrappers ([`ReplicationMessage`] = XLogData or
//!   Primary Keepalive from the leader; [`StandbyStatusUpdate`] to it).
//! - [`pgoutput`]: every pgoutput message of protocol versions 1–4, decoded
//!   zero-copy from the XLogData `data` by [`PgOutputDecoder`].
//! - [`encode`]: the inverse of both, the single source of synthetic frames
//!   for tests, fuzzing and benches.
//!
//! Owns: [`Lsn`], [`PgTimestamp`], the wrappers and every pgoutput message.
//! Never does: I/O, allocation per column, panics on bad input (every
//! malformed input is a [`DecodeError`]).
//!
//! Assumes the session's `client_encoding` is UTF-8 (names and text values
//! are UTF-8; text column values are handed out as bytes and not checked).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)
)]

mod cursor;
pub mod encode;
pub mod error;
pub mod frame;
pub mod lsn;
pub mod pgoutput;
pub mod timestamp;

pub use encode::TupleBuilder;
pub use error::{DecodeError, DecodeErrorKind};
pub use frame::{PrimaryKeepalive, ReplicationMessage, StandbyStatusUpdate, XLogData};
pub use lsn::Lsn;
pub use pgoutput::{
    Begin, Column, ColumnValue, Commit, Delete, Insert, LogicalMessage, OldTuple, ParseContext,
    PgOutputDecoder, Relation, RelationCache, RelationColumn, ReplicaIdentity, StreamAbort,
    StreamCommit, StreamStart, Truncate, TupleData, Update,
};
pub use timestamp::PgTimestamp;
