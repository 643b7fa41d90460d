//! What the running process remembers of each follower beyond counters:
//! its last apply error, its last re-sync, and the stall and lag-in-seconds
//! tracking that must outlive one streaming session (a reconnect builds new
//! sinks and a new [`Progress`](crate::progress::Progress); a stall that spans
//! reconnects is still one stall).
//!
//! Records live in a process-wide registry keyed by follower name, like the
//! Prometheus recorder itself: the sink (which has no handle on
//! [`Telemetry`](super::Telemetry)) writes through
//! [`FollowerMetrics`](super::FollowerMetrics), and `/status` reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime};

use pgsieve_protocol::{Lsn, PgTimestamp};
use serde::{Deserialize, Serialize};

/// Something that happened to a follower, and when (UTC, RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, UTC RFC 3339.
    pub at: String,
    /// What, one line.
    pub what: String,
}

impl Event {
    fn now(what: String) -> Self {
        Self {
            at: rfc3339(SystemTime::now()),
            what: what.replace(['\n', '\r'], " "),
        }
    }
}

/// Stall and lag tracking of one follower (see `Shared::observe`).
#[derive(Debug)]
pub(crate) struct Track {
    /// Highest applied end LSN seen.
    pub applied: Lsn,
    /// The session and its statement count last seen
    /// ([`Progress::statements`](crate::progress::Progress::statements)).
    pub session: (u64, u64),
    /// Since when the follower has been behind the leader without moving.
    pub waiting_since: Option<Instant>,
    /// Reported stalled (a warning was logged).
    pub stalled: bool,
    /// Newest leader commit time durably applied, across sessions.
    pub newest_leader_commit: Option<PgTimestamp>,
    /// When this process started watching the follower (the lag before
    /// any leader commit is known: at least this old).
    pub watching_since: Instant,
}

/// One follower's record.
#[derive(Debug)]
pub struct FollowerRecord {
    last_apply_error: Mutex<Option<Event>>,
    last_resync: Mutex<Option<Event>>,
    track: Mutex<Track>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FollowerRecord {
    fn new() -> Self {
        Self {
            last_apply_error: Mutex::new(None),
            last_resync: Mutex::new(None),
            track: Mutex::new(Track {
                applied: Lsn::ZERO,
                session: (0, 0),
                waiting_since: None,
                stalled: false,
                newest_leader_commit: None,
                watching_since: Instant::now(),
            }),
        }
    }

    /// Remembers an apply error (the sink's, with its cause chain).
    pub fn apply_failed(&self, error: String) {
        *lock(&self.last_apply_error) = Some(Event::now(error));
    }

    /// Remembers a re-sync of variables (backfill or purge).
    pub fn resynced(&self, what: String) {
        *lock(&self.last_resync) = Some(Event::now(what));
    }

    /// The last apply error, if any since the process started.
    pub fn last_apply_error(&self) -> Option<Event> {
        lock(&self.last_apply_error).clone()
    }

    /// The last re-sync, if any since the process started.
    pub fn last_resync(&self) -> Option<Event> {
        lock(&self.last_resync).clone()
    }

    pub(crate) fn track(&self) -> MutexGuard<'_, Track> {
        lock(&self.track)
    }
}

/// The record of `follower`, created on first use.
pub fn record(follower: &str) -> Arc<FollowerRecord> {
    static RECORDS: OnceLock<Mutex<HashMap<String, Arc<FollowerRecord>>>> = OnceLock::new();
    let mut records = lock(RECORDS.get_or_init(Default::default));
    records
        .entry(follower.to_owned())
        .or_insert_with(|| Arc::new(FollowerRecord::new()))
        .clone()
}

/// `t` as UTC RFC 3339 with microseconds (the tap's format).
pub fn rfc3339(t: SystemTime) -> String {
    crate::report::format_timestamp(PgTimestamp::from_system_time(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_shared_by_name() {
        record("records_are_shared_by_name").apply_failed("boom\nline two".into());
        let got = record("records_are_shared_by_name").last_apply_error();
        assert_eq!(got.map(|e| e.what), Some("boom line two".into()));
        assert!(record("someone else").last_apply_error().is_none());
    }
}
