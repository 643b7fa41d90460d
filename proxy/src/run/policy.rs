//! What every error of the pipeline means for the run: the one place that
//! decides. The run loop, the reader and the hub's roster ask here; the
//! error types only state facts (which follower, which statement, whether a
//! connection was lost or a row already there). A new error class is a
//! change to this file.
//!
//! | error | sidecar | hub |
//! |---|---|---|
//! | leader, follower or SQL connection lost or refused, server shutting down or out of connections | retry the session from the origins | the follower: detach as lost (rejoins when it answers); at start, as unreachable |
//! | a plain INSERT met a row the follower already held | upsert through what was received, retry | the same, as a lost follower |
//! | a follower change that cannot apply (schema, constraint, permission) | stop | detach as failed (until pgsieve restarts) |
//! | bad input, a publication that cannot carry the decisions, a gap with `on_gap = "stop"`, configuration | stop | stop |
//!
//! "Retry" is bounded before streaming first began (`STARTUP_RETRY`): at
//! start an unreachable database is more often a configuration mistake.

use pgsieve_protocol::Lsn;

use super::RunError;
use crate::bootstrap::SnapshotError;
use crate::conn::is_transient_sql_error;
use crate::copy::CopyError;
use crate::reconcile::ReconcileError;
use crate::sink::ApplyError;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Restart the session from the followers' origins, after a backoff.
    Retry,
    /// The follower must re-apply with upserts through this position (then
    /// it goes on as [`Directive::Retry`] in a sidecar, as
    /// [`Directive::DetachLost`] in a hub).
    UpsertThrough(Lsn),
    /// Hub: start the session without the follower; probe it.
    DetachUnreachable,
    /// Hub: detach the follower; it rejoins when it answers again.
    DetachLost,
    /// Hub: detach the follower until pgsieve restarts.
    DetachFailed,
    /// End `pgsieve run` with the error (exit 1).
    Stop,
}

/// A session that failed as a whole.
pub fn session_error(error: &RunError) -> Directive {
    if transient(error) {
        Directive::Retry
    } else {
        Directive::Stop
    }
}

/// A follower that could not be connected (or prepared) as a session
/// starts.
pub fn follower_unavailable(hub: bool, error: &RunError) -> Directive {
    match (hub, transient(error)) {
        (true, true) => Directive::DetachUnreachable,
        _ => Directive::Stop,
    }
}

/// A follower's sink that stopped with `error`, the reader having received
/// the stream through `received`.
pub fn sink_error(hub: bool, error: &ApplyError, received: Lsn) -> Directive {
    if let Some(at) = error.duplicate_key_at() {
        // Through everything received, not just the failing transaction:
        // one restart, not one per row.
        return Directive::UpsertThrough(received.max(Lsn(at.0 + 1)));
    }
    match (hub, error.connection_lost()) {
        (true, true) => Directive::DetachLost,
        (true, false) => Directive::DetachFailed,
        (false, true) => Directive::Retry,
        (false, false) => Directive::Stop,
    }
}

/// Whether restarting from the followers' origins may help.
fn transient(error: &RunError) -> bool {
    match error {
        RunError::Source(e) => e.is_transient(),
        RunError::Connect(e) => e.is_transient(),
        RunError::Sql { source, .. } | RunError::Copy(CopyError::Sql { source, .. }) => {
            is_transient_sql_error(source)
        }
        RunError::Apply(e) => e.duplicate_key_at().is_some() || e.connection_lost(),
        RunError::Snapshot(SnapshotError::Source(e)) => e.is_transient(),
        RunError::Snapshot(SnapshotError::Sql(source))
        | RunError::Reconcile(ReconcileError { source, .. }) => is_transient_sql_error(source),
        RunError::Resync { source, .. } => source.is_transient(),
        RunError::Snapshot(SnapshotError::NoSnapshot(_))
        | RunError::Assemble(_)
        | RunError::Filter(_)
        | RunError::Copy(_)
        | RunError::Bootstrap(_)
        | RunError::Publication(_)
        | RunError::Gap { .. }
        | RunError::Frame { .. }
        | RunError::Setup(_)
        | RunError::Metrics(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_and_configuration_stop() {
        assert_eq!(session_error(&RunError::Setup("x".into())), Directive::Stop);
        assert_eq!(
            follower_unavailable(true, &RunError::Publication("p".into())),
            Directive::Stop
        );
    }

    #[test]
    fn a_follower_change_that_cannot_apply_stops_or_fails_the_follower() {
        let invalid = ApplyError::invalid("f", Lsn(1), "commit without begin");
        assert_eq!(sink_error(false, &invalid, Lsn(9)), Directive::Stop);
        assert_eq!(sink_error(true, &invalid, Lsn(9)), Directive::DetachFailed);
    }
}
