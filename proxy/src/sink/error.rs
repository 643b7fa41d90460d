//! What can go wrong applying to a follower, and the facts the run policy
//! reads from it (`run::policy`): which follower, which leader transaction,
//! which statement, and whether the connection was lost or a row was
//! already there.

use std::sync::Arc;

use pgsieve_protocol::Lsn;
use tokio_postgres::error::SqlState;

use super::catalog::SchemaMismatch;

/// The statement a sink was running when the follower answered with an
/// error. A closed set, so deciding what an error means never matches text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Preparing the session's control statements.
    PrepareSession,
    /// Preparing a table's statement of this kind.
    Prepare(Statement),
    /// Reading the follower's catalog for a new relation.
    ReadCatalog,
    /// A row change of the leader.
    Insert,
    /// A row change of the leader.
    Update,
    /// A row change of the leader.
    Delete,
    /// A leader TRUNCATE.
    Truncate,
    /// `BEGIN` of a follower transaction.
    Begin,
    /// Giving a follower transaction an xid (progress-only commits).
    ForceXid,
    /// Recording the origin's progress in the follower transaction.
    OriginProgress,
    /// `COMMIT` of a follower transaction.
    Commit,
    /// `ROLLBACK` of a speculative follower transaction given up.
    Rollback,
    /// A grant or revoke: deleting a variable that left the set.
    ResyncPurge,
    /// A grant: clearing a variable that entered the set before copying it.
    ResyncClear,
    /// A grant: waiting until the leader shows the granting transaction.
    ResyncWait,
    /// A grant: reading the variable's rows on the leader.
    ResyncRead,
    /// A grant: writing them on the follower.
    ResyncCopy,
}

/// The kinds of statements a sink prepares per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// Single- and multi-row INSERT (plain or upsert).
    Insert,
    /// `COPY … FROM STDIN`.
    Copy,
    /// UPDATE of a set of columns.
    Update,
    /// DELETE by key.
    Delete,
    /// The `secrets` statements of grant re-syncs.
    Resync,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Operation::PrepareSession => "prepare session",
            Operation::Prepare(Statement::Insert) => "prepare insert",
            Operation::Prepare(Statement::Copy) => "prepare copy",
            Operation::Prepare(Statement::Update) => "prepare update",
            Operation::Prepare(Statement::Delete) => "prepare delete",
            Operation::Prepare(Statement::Resync) => "prepare resync",
            Operation::ReadCatalog => "read catalog",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
            Operation::Begin => "begin",
            Operation::ForceXid | Operation::OriginProgress => "origin progress",
            Operation::Commit => "commit",
            Operation::Rollback => "rollback of a speculative transaction",
            Operation::ResyncPurge => "resync purge",
            Operation::ResyncClear => "resync clear",
            Operation::ResyncWait => "resync wait for the leader commit",
            Operation::ResyncRead => "resync read from leader",
            Operation::ResyncCopy => "resync copy",
        };
        f.write_str(text)
    }
}

/// Where an apply failure happened.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// Commit LSN of the leader transaction being applied.
    pub commit_lsn: Lsn,
    /// Qualified table name, or `(transaction)` for control statements.
    pub table: Arc<str>,
    /// The statement.
    pub op: Operation,
}

impl ApplyContext {
    /// A control statement of the follower transaction applying `commit_lsn`.
    pub fn control(commit_lsn: Lsn, op: Operation) -> Self {
        Self {
            commit_lsn,
            table: Arc::from("(transaction)"),
            op,
        }
    }
}

/// A failure of the follower sink.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A statement failed on the follower (or, for a grant, on the leader).
    #[error(
        "follower {follower}: {op} on {table} of the leader transaction committed at {commit_lsn} failed: {source}"
    )]
    Statement {
        /// Follower name.
        follower: String,
        /// Leader commit LSN.
        commit_lsn: Lsn,
        /// Table.
        table: Arc<str>,
        /// Operation.
        op: Operation,
        /// The database error (connection loss included).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The follower's table does not match the leader's relation.
    #[error("follower {follower}: {source}")]
    Schema {
        /// Follower name.
        follower: String,
        /// The mismatch.
        #[source]
        source: SchemaMismatch,
    },
    /// A change refers to a relation the sink was never told about, or has a
    /// shape that cannot be applied.
    #[error("follower {follower}: {what} (leader transaction committed at {commit_lsn})")]
    Invalid {
        /// Follower name.
        follower: String,
        /// Leader commit LSN.
        commit_lsn: Lsn,
        /// What is wrong.
        what: String,
    },
}

impl ApplyError {
    /// The one constructor of statement failures.
    pub fn statement(follower: &str, context: ApplyContext, source: tokio_postgres::Error) -> Self {
        ApplyError::Statement {
            follower: follower.to_owned(),
            commit_lsn: context.commit_lsn,
            table: context.table,
            op: context.op,
            source,
        }
    }

    /// A change the sink cannot apply as it stands.
    pub fn invalid(follower: &str, commit_lsn: Lsn, what: impl Into<String>) -> Self {
        ApplyError::Invalid {
            follower: follower.to_owned(),
            commit_lsn,
            what: what.into(),
        }
    }

    /// The follower that failed (metrics label, status).
    pub fn follower(&self) -> &str {
        match self {
            ApplyError::Statement { follower, .. }
            | ApplyError::Schema { follower, .. }
            | ApplyError::Invalid { follower, .. } => follower,
        }
    }

    /// The leader transaction whose plain INSERT hit a row the follower
    /// already held.
    pub fn duplicate_key_at(&self) -> Option<Lsn> {
        match self {
            ApplyError::Statement {
                commit_lsn,
                op: Operation::Insert,
                source,
                ..
            } if source.code() == Some(&SqlState::UNIQUE_VIOLATION) => Some(*commit_lsn),
            _ => None,
        }
    }

    /// Whether the connection behind it was lost or refused (rather than a
    /// change being unappliable).
    pub fn connection_lost(&self) -> bool {
        self.sql_error()
            .is_some_and(crate::conn::is_transient_sql_error)
    }

    /// The database error behind this failure, if there is one.
    pub fn sql_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ApplyError::Statement { source, .. }
            | ApplyError::Schema {
                source: SchemaMismatch::Query { source, .. },
                ..
            } => Some(source),
            _ => None,
        }
    }
}
