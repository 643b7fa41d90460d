/*!
`pgsieve resync --follower F`: a forced online diff resync of one follower.

A new leader snapshot is taken at a temporary slot's consistent point C
(model built in it), the follower is brought to it by [`crate::diff`] —
only differences written, in one follower transaction — and its origin is
moved to C in that transaction; `run` then streams from C.

**Safe against a running `run`.** The follower's replication origin can be
bound by one session at a time: this command binds it first, and
`pg_replication_origin_session_setup` fails with 55006 (`object_in_use`)
while a `run` applies to that follower, so the command refuses; a `run`
started meanwhile cannot bind the origin until the resync has committed. The
permanent slot is not touched: if it was confirmed beyond C (a hub whose
other followers went on), the stream cannot serve C and `run` must treat the
follower as a gap.
*/

use tokio_postgres::error::SqlState;

use crate::config::Config;
use crate::conn::{ConnectError, connect_sql};
use crate::diff::progress::TableProgress;
use crate::diff::snapshot::{LeaderSnapshot, SnapshotError};
use crate::diff::{DiffError, DiffReport, DiffSpec, Mode, Reporter, diff_follower};
use crate::sink::origin::setup_apply_session;

/// Why the resync did not happen (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// No follower of that name.
    #[error("no [[follower]] named {0:?} in the configuration")]
    UnknownFollower(String),
    /// `run` (or another resync) holds the follower's origin.
    #[error(
        "follower {follower}: replication origin {origin} is in use by another session \
         (a running `pgsieve run` for this follower?): stop it, or let it resync by itself"
    )]
    Busy {
        /// Follower name.
        follower: String,
        /// Origin name.
        origin: String,
    },
    /// Connecting failed.
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// Binding the origin failed otherwise.
    #[error("follower {follower}: setting up the apply session: {source}")]
    Session {
        /// Follower name.
        follower: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// The leader snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The diff failed (rolled back).
    #[error(transparent)]
    Diff(#[from] DiffError),
}

/// Resyncs follower `name` of `config`; `progress` shows a spinner on a terminal.
pub async fn resync(
    config: &Config,
    name: &str,
    progress: bool,
) -> Result<DiffReport, ResyncError> {
    let (_, set_bits) = config.replica_sets();
    let (f, set_bit) = config
        .followers
        .iter()
        .zip(set_bits)
        .find(|(f, _)| f.name == name)
        .ok_or_else(|| ResyncError::UnknownFollower(name.to_owned()))?;
    let origin = config.origin_name();
    let follower = connect_sql(&f.pg, &format!("follower {}", f.name))
        .await
        .map_err(|e| ResyncError::Connect(Box::new(e)))?;
    let before = setup_apply_session(&follower, &origin)
        .await
        .map_err(|source| {
            if source.code() == Some(&SqlState::OBJECT_IN_USE) {
                ResyncError::Busy {
                    follower: f.name.clone(),
                    origin: origin.clone(),
                }
            } else {
                ResyncError::Session {
                    follower: f.name.clone(),
                    source,
                }
            }
        })?;
    let snapshot = LeaderSnapshot::open(config, "resync").await?;
    tracing::info!(follower = %f.name, origin_before = %before, snapshot = %snapshot.consistent_point, "Diff resync starting.");
    let mut spec = DiffSpec::new(
        &f.name,
        &snapshot.tables,
        &snapshot.model,
        set_bit,
        Mode::Apply {
            target: snapshot.consistent_point,
        },
    );
    spec.reason = "forced";
    let mut reporter = progress.then(|| Reporter::new(&f.name, "resyncing"));
    let mut show = |p: &TableProgress| {
        if let Some(r) = reporter.as_mut() {
            r.update(p);
        }
    };
    let report = diff_follower(&snapshot.leader, &follower, &spec, &mut show).await?;
    drop(reporter);
    snapshot.close().await?;
    Ok(report)
}

/// The report for people: one line per table that changed, then the total.
pub fn render_text(follower: &str, report: &DiffReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for t in &report.tables {
        let p = &t.progress;
        if p.differs() {
            let _ = writeln!(
                out,
                "  {}: {} compared, {} missing, {} extra ({} outside the set), {} different, {} rows written",
                p.table, p.compared, p.missing, p.extra, p.out_of_set, p.different, p.changed
            );
        }
    }
    let _ = writeln!(
        out,
        "follower {follower}: resynced to {} in {:.2}s, {} rows written",
        report
            .target
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into()),
        report.elapsed.as_secs_f64(),
        report.rows_changed()
    );
    out
}
