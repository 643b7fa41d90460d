//! The metrics of diff resyncs (session start, `pgsieve resync`): named
//! and described here with every other metric, recorded by `diff`.

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Counter `{follower, reason}`: diff resyncs committed on a follower.
pub const RESYNCS: &str = "pgsieve_resyncs_total";
/// Counter `{follower}`: follower rows written by diff resyncs (inserted,
/// updated or deleted).
pub const RESYNC_ROWS_CHANGED: &str = "pgsieve_resync_rows_changed_total";
/// Histogram `{follower}`: seconds a diff resync took, snapshot to commit.
pub const RESYNC_DURATION: &str = "pgsieve_resync_duration_seconds";

/// Describes the resync metrics (call once with the other descriptions).
pub fn describe() {
    describe_counter!(
        RESYNCS,
        Unit::Count,
        "Diff resyncs committed on a follower, by reason (gap, failover, forced, ...)."
    );
    describe_counter!(
        RESYNC_ROWS_CHANGED,
        Unit::Count,
        "Follower rows inserted, updated or deleted by diff resyncs."
    );
    describe_histogram!(
        RESYNC_DURATION,
        Unit::Seconds,
        "Duration of a diff resync, from the leader snapshot to the follower commit."
    );
}

/// Records one committed resync.
pub fn record_resync(follower: &str, reason: &str, rows_changed: u64, elapsed: Duration) {
    counter!(RESYNCS, "follower" => follower.to_owned(), "reason" => reason.to_owned())
        .increment(1);
    counter!(RESYNC_ROWS_CHANGED, "follower" => follower.to_owned()).increment(rows_changed);
    histogram!(RESYNC_DURATION, "follower" => follower.to_owned()).record(elapsed.as_secs_f64());
}
