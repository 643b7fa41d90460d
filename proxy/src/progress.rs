//! Durable progress of one follower: written by its sink, read by the
//! feedback (status updates to the leader), metrics and the run loop. It
//! sits below every stage that shares it so none imports another for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use pgsieve_protocol::{Lsn, PgTimestamp};

/// Durable progress of one follower, shared with the feedback task.
#[derive(Debug, Default)]
pub struct Progress {
    committed_end: AtomicU64,
    last_apply_micros: AtomicU64,
    /// Leader commit time (µs since 2000) of the last applied transaction, 0 if none.
    last_commit_time: AtomicI64,
    /// Newest leader commit time (µs since 2000) among the leader
    /// transactions durably committed on the follower (heartbeats
    /// included), 0 if none; progress-only commits never set it.
    newest_leader_commit: AtomicI64,
    /// Statements the follower has taken into the pipeline: moves while a
    /// long leader transaction applies, before its commit moves the LSN
    /// (the stall detector's sign of work).
    statements: AtomicU64,
    /// Unique per `Progress` in this process (one per streaming session).
    session: u64,
}

impl Progress {
    /// A progress starting at `lsn` (the origin's value at start).
    pub fn starting_at(lsn: Lsn) -> Arc<Self> {
        static SESSIONS: AtomicU64 = AtomicU64::new(1);
        let p = Self {
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            ..Self::default()
        };
        p.committed_end.store(lsn.0, Ordering::Release);
        Arc::new(p)
    }

    /// End LSN of the last leader transaction durably committed on the follower.
    pub fn committed_end(&self) -> Lsn {
        Lsn(self.committed_end.load(Ordering::Acquire))
    }

    pub(crate) fn record(&self, lsn: Lsn, commit_time: PgTimestamp) {
        self.committed_end.fetch_max(lsn.0, Ordering::AcqRel);
        self.last_commit_time
            .store(commit_time.0, Ordering::Release);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_apply_micros.store(now, Ordering::Release);
    }

    /// Unix time (µs) of the last follower commit, 0 if none.
    pub fn last_apply_micros(&self) -> u64 {
        self.last_apply_micros.load(Ordering::Acquire)
    }

    /// The newest leader commit time durably applied (a real leader
    /// transaction, never a progress-only commit): the lag in seconds is
    /// its age. `None` before the first one of this session.
    pub fn newest_leader_commit(&self) -> Option<PgTimestamp> {
        match self.newest_leader_commit.load(Ordering::Acquire) {
            0 => None,
            t => Some(PgTimestamp(t)),
        }
    }

    /// `(session, statements)`: which session this progress belongs to
    /// (unique in the process) and how many statements the follower has
    /// taken in it so far.
    pub fn statements(&self) -> (u64, u64) {
        (self.session, self.statements.load(Ordering::Acquire))
    }

    pub(crate) fn worked(&self) {
        self.statements.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn record_leader_commits(&self, commit_times: &[PgTimestamp]) {
        if let Some(newest) = commit_times.iter().map(|t| t.0).max() {
            self.newest_leader_commit
                .fetch_max(newest, Ordering::AcqRel);
        }
    }

    /// Leader commit time of the last transaction committed on the
    /// follower (for lag in seconds), `None` before the first commit.
    pub fn last_commit_time(&self) -> Option<PgTimestamp> {
        match self.last_commit_time.load(Ordering::Acquire) {
            0 => None,
            t => Some(PgTimestamp(t)),
        }
    }
}
