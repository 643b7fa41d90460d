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
//! ```
//! use pgsieve_protocol::{
//!     Column, Insert, LogicalMessage, Lsn, PgOutputDecoder, PgTimestamp, ReplicationMessage,
//!     TupleBuilder,
//! };
//!
//! // A frame as the walsender would send it (made with our encoder).
//! let row = TupleBuilder::new().text("acct:variable:prod/db-password").int(1).finish();
//! let insert = LogicalMessage::Insert(Insert { xid: None, rel_id: 16_400, new: row });
//! let payload = insert.to_xlog_data(Lsn(1), Lsn(2), PgTimestamp::now());
//!
//! let mut decoder = PgOutputDecoder::new();
//! let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(payload)? else { unreachable!() };
//! if let LogicalMessage::Insert(insert) = decoder.decode(x.data)? {
//!     let id = insert.new.get(0).and_then(|c| c.as_text());
//!     assert_eq!(id, Some(&b"acct:variable:prod/db-password"[..]));
//!     assert!(insert.new.columns().all(|c| !matches!(c, Column::Null)));
//! }
//! # Ok::<(), pgsieve_protocol::DecodeError>(())
//! ```
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
