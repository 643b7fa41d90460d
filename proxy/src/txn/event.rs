//! What the assembler hands to the filter and the sinks.

use std::sync::Arc;

use pgsieve_filters::{Effects, SetMask};
use pgsieve_protocol::pgoutput::{Delete, Insert, Relation, Truncate, Update};
use pgsieve_protocol::{Lsn, PgTimestamp};

/// One step of the ordered stream of leader transactions.
///
/// Cheap to clone: tuples are slices of the received frames, relations and
/// effects are shared, so a hub can hand the same event to every follower.
#[derive(Debug, Clone)]
pub enum TxnEvent {
    /// A relation definition, sent before the first change that uses it and
    /// again whenever it changed; sinks (re)build their statements from it.
    Relation(Arc<Relation>),
    /// A leader transaction starts.
    Begin(TxnBegin),
    /// A row change of the open transaction, with the replica sets that may
    /// receive it.
    Change(RowChange),
    /// TRUNCATE of one or more relations inside the open transaction.
    Truncate(Truncate),
    /// The open leader transaction committed; carries the grant effects the
    /// filter computed for it.
    Commit(TxnCommit),
    /// The speculative transaction in progress (a [`TxnBegin`] with
    /// `speculative`) is given up: sinks roll back what they applied of it;
    /// it comes again, whole, at its commit.
    Abandon {
        /// Top-level transaction id.
        xid: u32,
    },
    /// Nothing is in flight: every transaction that committed before
    /// `wal_end` has been delivered, so a follower may record `wal_end` as
    /// its progress (keeps the slot moving while idle or fully filtered).
    Idle {
        /// The walsender's WAL end from a keepalive.
        wal_end: Lsn,
    },
}

/// Start of a leader transaction.
#[derive(Debug, Clone, Copy)]
pub struct TxnBegin {
    /// Top-level transaction id.
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// Commit time on the leader.
    pub commit_time: PgTimestamp,
    /// Whether the transaction arrived streamed (in chunks before its commit).
    pub streamed: bool,
    /// Whether its changes follow as they are streamed, before the leader
    /// committed it: `commit_lsn` is then only a lower bound, and the
    /// transaction ends with a Commit or an [`TxnEvent::Abandon`].
    pub speculative: bool,
}

/// End of a leader transaction.
#[derive(Debug, Clone)]
pub struct TxnCommit {
    /// Top-level transaction id.
    pub xid: u32,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// First byte after the commit record: the resume point once applied.
    pub end_lsn: Lsn,
    /// Commit time on the leader.
    pub commit_time: PgTimestamp,
    /// Replica-set flips caused by this transaction (empty without filtering).
    pub effects: Arc<Effects>,
}

/// The effects of a transaction that flipped nothing (nearly all of them),
/// shared: a commit costs a reference count, not an allocation.
pub fn no_effects() -> Arc<Effects> {
    static NO_EFFECTS: std::sync::LazyLock<Arc<Effects>> =
        std::sync::LazyLock::new(|| Arc::new(Effects::default()));
    NO_EFFECTS.clone()
}

/// A decoded DML change and the sets it is forwarded to.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// The relation definition the change was decoded against.
    pub relation: Arc<Relation>,
    /// The change itself.
    pub op: RowOp,
    /// Replica sets allowed to receive the row (`SetMask::ALL` for
    /// unfiltered tables).
    pub mask: SetMask,
}

/// The three DML kinds.
#[derive(Debug, Clone)]
pub enum RowOp {
    /// INSERT.
    Insert(Insert),
    /// UPDATE.
    Update(Update),
    /// DELETE.
    Delete(Delete),
}

impl RowOp {
    /// Lower-case name for logs, metrics and the tap.
    pub fn as_str(&self) -> &'static str {
        match self {
            RowOp::Insert(_) => "insert",
            RowOp::Update(_) => "update",
            RowOp::Delete(_) => "delete",
        }
    }
}
