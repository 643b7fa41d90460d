//! The leader replication connection (`source` stage).
//!
//! Published tokio-postgres cannot open a `replication=database` session nor
//! handle CopyBoth, so pgsieve owns this one connection on tokio +
//! postgres-protocol: its own 5-byte framing (`framing.rs`), the few backend
//! bodies it needs (`messages.rs`), SCRAM (with channel binding)/MD5/cleartext
//! login (`auth.rs`). Sockets and TLS come from `crate::conn`, shared with
//! every ordinary session (snapshot reads, follower apply: tokio-postgres).
//!
//! Lifecycle:
//! 1. [`ReplicationConnection::connect`] (startup with `replication=database`,
//!    authentication, ReadyForQuery);
//! 2. commands on the idle session: [`ReplicationConnection::identify_system`],
//!    [`ReplicationConnection::create_slot`], [`ReplicationConnection::slot_info`],
//!    [`ReplicationConnection::drop_slot`], [`ReplicationConnection::simple_query`];
//! 3. [`ReplicationConnection::start_replication`] consumes the session and
//!    returns a [`ReplicationStream`] (read CopyData payloads, zero-copy) and a
//!    [`StatusSender`] (write standby status updates, independent of reading).
//!
//! Once streaming, a task reads the socket ahead of the reader, at most 4 MiB
//! (`read_ahead.rs`), so a busy pipeline does not stall the walsender. The
//! reader copies those bytes into one buffer in 128 KiB chunks and every
//! CopyData payload is a zero-copy slice of it: a payload kept alive keeps its
//! chunk alive, so memory is bounded by the read-ahead plus how many payloads
//! the pipeline holds (bounded channels), not by the stream.
//!
//! What the CopyData payloads mean (XLogData, keepalive, status update) is the
//! `protocol` crate's business; this module never looks inside them.

mod auth;
mod commands;
mod connect;
mod error;
mod framing;
mod messages;
mod pacing;
mod read_ahead;
mod stream;

pub use commands::{CreatedSlot, SlotInfo, SnapshotAction, SystemIdentity};
pub use connect::{ReplicationConnection, SourceConfig};
pub use error::SourceError;
pub use stream::{ReplicationStream, StatusSender};
