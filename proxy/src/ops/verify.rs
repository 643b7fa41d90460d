/*!
`pgsieve verify`: a read-only comparison of each follower with the leader,
every published table, `secrets` against the follower's replica-set
projection. Exit 0 when every follower is equal, 1 otherwise; a follower
`secrets` row outside its set is reported by id and is always fatal.

# A true answer while `run` streams

The leader and the follower are never read at the same stream position:
the follower only ever holds what it has applied, and a leader snapshot is
taken at a slot's consistent point C. verify therefore compares in rounds:

1. Take a leader snapshot at C₁ (a temporary slot's exported snapshot, the
   model built in it), wait (bounded, [`VerifyOptions::catch_up`]; not at
   all when no walsender holds the configured slot) until the follower's
   replication origin has reached C₁ and the transaction that moved it is
   visible, then compare every table at one follower snapshot.
   The follower is now *at or past* C₁: a row the stream changed after C₁
   may differ without anything being wrong.
2. If anything differs, take a new snapshot at C₂, wait for the follower to
   pass it, and re-read only the differing keys on both sides; repeat.
   Differences that were in flight vanish (the follower passed the leader's
   later snapshot, and re-reading a few keys takes milliseconds, so it is
   rarely ahead again on the same rows). A real divergence — a row deleted,
   changed or planted on the follower, a secret outside the set — stays,
   and stays *the same* (same keys, same row hashes on both sides).
3. Stop when nothing differs (equal, exit 0), when two consecutive rounds
   find exactly the same differences (stable: exit 1, reported), or after
   [`VerifyOptions::max_rounds`] (exit 1, reported as still changing).

Rows equal in the first round are not re-read: a follower row could only
look equal while diverged if a planted value coincided with the leader's
value at C₁. When the follower does not reach C₁ in time (no `run`
streaming, or a lagging one), the first round's differences are reported
as they are, with the follower's position: the follower is then not equal
to the leader now, whatever the reason. Out-of-set secrets are re-checked
like every difference, each round against the model at that round's
snapshot (a grant the follower applied after C₁ is not a leak).
*/

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgsieve_protocol::Lsn;
use tokio_postgres::Client;

use crate::config::{Config, FollowerConfig};
use crate::conn::{ConnectError, connect_sql};
use crate::diff::compare::{DiffKind, Difference, Key};
use crate::diff::progress::TableProgress;
use crate::diff::snapshot::{LeaderSnapshot, SnapshotError};
use crate::diff::{DiffError, DiffReport, DiffSpec, Mode, Reporter, diff_follower};

/// Options of `pgsieve verify`.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only this follower (default: every one).
    pub follower: Option<String>,
    /// Rounds at most (the first, whole-table one included).
    pub max_rounds: usize,
    /// How long a round waits for the follower to reach the leader snapshot.
    pub catch_up: Duration,
    /// Differences named per table in the output.
    pub samples: usize,
    /// Spinner on a terminal.
    pub progress: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            follower: None,
            max_rounds: 10,
            catch_up: Duration::from_secs(30),
            samples: 20,
            progress: true,
        }
    }
}

/// Why verify could not answer (exit 1, like a difference).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No follower of that name.
    #[error("no [[follower]] named {0:?} in the configuration")]
    UnknownFollower(String),
    /// Connecting failed.
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// The leader snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The comparison failed.
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// Reading the follower's origin failed.
    #[error("follower {follower}: reading replication origin {origin}: {source}")]
    Origin {
        /// Follower name.
        follower: String,
        /// Origin name.
        origin: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
}

/// Where the follower stood against a round's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Its origin reached the snapshot's position.
    Reached,
    /// Its origin stayed behind for the whole wait.
    Behind,
    /// It has no origin (never written by pgsieve).
    NoOrigin,
}

/// One table of a verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableVerdict {
    /// Quoted, qualified name.
    pub table: String,
    /// Keys compared in the first (whole-table) round.
    pub compared: u64,
    /// Rows the follower lacks (last round).
    pub missing: u64,
    /// Rows the follower should not have (last round).
    pub extra: u64,
    /// Rows with other values (last round).
    pub different: u64,
    /// The first differences: kind and key texts.
    pub samples: Vec<Sample>,
}

/// One named difference.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// `missing`, `extra` or `different`.
    pub kind: DiffKind,
    /// Key column texts (the md5 of the row for a table without a key).
    pub key: Key,
}

/// The answer for one follower.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// Follower name.
    pub follower: String,
    /// Whether it equals the leader's projection.
    pub equal: bool,
    /// Rounds run.
    pub rounds: usize,
    /// Whether the last two rounds found the same differences.
    pub stable: bool,
    /// The last round's leader snapshot position.
    pub snapshot_lsn: String,
    /// The follower's origin when last read.
    pub origin_lsn: Option<String>,
    /// Where it stood against the last snapshot.
    pub catch_up: CatchUp,
    /// Per table.
    pub tables: Vec<TableVerdict>,
    /// Keys of follower `secrets` rows outside its replica set (fatal).
    pub out_of_set: Vec<Key>,
}

/// Verifies the configured followers (or `options.follower`).
pub async fn verify(config: &Config, options: &VerifyOptions) -> Result<Vec<Verdict>, VerifyError> {
    let set_bits = config.replica_sets().1;
    let mut verdicts = Vec::new();
    let mut found = false;
    for (f, set_bit) in config.followers.iter().zip(set_bits) {
        if options
            .follower
            .as_ref()
            .is_some_and(|name| *name != f.name)
        {
            continue;
        }
        found = true;
        verdicts.push(verify_one(config, f, set_bit, options).await?);
    }
    match (&options.follower, found) {
        (Some(name), false) => Err(VerifyError::UnknownFollower(name.clone())),
        _ => Ok(verdicts),
    }
}

async fn verify_one(
    config: &Config,
    f: &FollowerConfig,
    set_bit: Option<usize>,
    options: &VerifyOptions,
) -> Result<Verdict, VerifyError> {
    let follower = connect_sql(&f.pg, &format!("follower {}", f.name))
        .await
        .map_err(|e| VerifyError::Connect(Box::new(e)))?;
    let origin = config.origin_name();
    let mut compared: BTreeMap<String, u64> = BTreeMap::new();
    let mut previous: Option<DiffReport> = None;
    let mut rounds = 0;
    let mut stable = false;
    let (report, snapshot_lsn, catch_up, origin_lsn) = loop {
        rounds += 1;
        let snapshot = LeaderSnapshot::open(config, "verify").await?;
        // Nothing moves the origin while no `run` streams from the slot.
        let wait = if snapshot.slot_active(&config.leader.slot).await? {
            options.catch_up
        } else {
            Duration::ZERO
        };
        let (catch_up, origin_lsn) =
            wait_for_origin(&follower, &f.name, &origin, snapshot.consistent_point, wait).await?;
        let keys = previous.as_ref().map(DiffReport::differing_keys);
        let mut spec = DiffSpec::new(
            &f.name,
            &snapshot.tables,
            &snapshot.model,
            set_bit,
            Mode::VerifyOnly,
        );
        spec.keys = keys.as_ref();
        let mut reporter = options
            .progress
            .then(|| Reporter::new(&f.name, "verifying"));
        let mut show = |p: &TableProgress| {
            if let Some(r) = reporter.as_mut() {
                r.update(p);
            }
        };
        let report = diff_follower(&snapshot.leader, &follower, &spec, &mut show).await?;
        drop(reporter);
        let at = snapshot.consistent_point;
        snapshot.close().await?;
        if rounds == 1 {
            compared = report
                .tables
                .iter()
                .map(|t| (t.progress.table.clone(), t.progress.compared))
                .collect();
        }
        tracing::info!(follower = %f.name, round = rounds, snapshot = %at, ?catch_up, equal = report.is_equal(), "Verify round done.");
        let done = report.is_equal()
            || catch_up != CatchUp::Reached
            || report.is_truncated()
            || rounds >= options.max_rounds;
        if let Some(prev) = &previous
            && same_differences(prev, &report)
        {
            stable = true;
        }
        if done || stable {
            break (report, at, catch_up, origin_lsn);
        }
        previous = Some(report);
    };
    let tables = compared
        .iter()
        .map(|(table, &compared)| {
            let last = report.tables.iter().find(|t| &t.progress.table == table);
            TableVerdict {
                table: table.clone(),
                compared,
                missing: last.map_or(0, |t| t.progress.missing),
                extra: last.map_or(0, |t| t.progress.extra),
                different: last.map_or(0, |t| t.progress.different),
                samples: last
                    .map(|t| {
                        t.differences
                            .iter()
                            .take(options.samples)
                            .map(|d| Sample {
                                kind: d.kind,
                                key: d.key.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(Verdict {
        follower: f.name.clone(),
        equal: report.is_equal(),
        rounds,
        stable,
        snapshot_lsn: snapshot_lsn.to_string(),
        origin_lsn: origin_lsn.map(|l| l.to_string()),
        catch_up,
        tables,
        out_of_set: report.out_of_set().map(|(_, k)| k.clone()).collect(),
    })
}

/// Whether two rounds found exactly the same differences (keys and the
/// row hashes on both sides).
fn same_differences(a: &DiffReport, b: &DiffReport) -> bool {
    let all = |r: &DiffReport| -> Vec<(String, Difference)> {
        let mut v: Vec<(String, Difference)> = r
            .tables
            .iter()
            .flat_map(|t| {
                t.differences
                    .iter()
                    .map(|d| (t.progress.table.clone(), d.clone()))
            })
            .collect();
        v.sort_by(|x, y| (&x.0, x.1.kind, &x.1.key).cmp(&(&y.0, y.1.kind, &y.1.key)));
        v
    };
    all(a) == all(b)
}

const POLL: Duration = Duration::from_millis(20);

/// Waits until `origin` on the follower has reached `target` (bounded by
/// `wait`) and the follower transaction that moved it is visible.
async fn wait_for_origin(
    follower: &Client,
    name: &str,
    origin: &str,
    target: Lsn,
    wait: Duration,
) -> Result<(CatchUp, Option<Lsn>), VerifyError> {
    let err = |source| VerifyError::Origin {
        follower: name.to_owned(),
        origin: origin.to_owned(),
        source,
    };
    let deadline = Instant::now() + wait;
    loop {
        let row = follower
            .query_one(
                "SELECT (SELECT pg_replication_origin_progress(roname, true)::text \
                 FROM pg_catalog.pg_replication_origin WHERE roname = $1)",
                &[&origin],
            )
            .await
            .map_err(err)?;
        let progress: Option<Lsn> = row.get::<_, Option<String>>(0).and_then(|t| t.parse().ok());
        let Some(at) = progress else {
            return Ok((CatchUp::NoOrigin, None));
        };
        if at >= target {
            settle(follower).await.map_err(err)?;
            return Ok((CatchUp::Reached, Some(at)));
        }
        if Instant::now() > deadline {
            return Ok((CatchUp::Behind, Some(at)));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Origin progress is recorded with the commit record, a moment before the
/// committing transaction becomes visible: waits (at most a second) until
/// the transactions running now have ended.
async fn settle(follower: &Client) -> Result<(), tokio_postgres::Error> {
    let running: Vec<String> = follower
        .query(
            "SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) x",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    while !running.is_empty() && Instant::now() < deadline {
        let ended: bool = follower
            .query_one(
                "SELECT coalesce(bool_and(pg_xact_status(x::xid8) IS DISTINCT FROM 'in progress'), true) \
                 FROM unnest($1::text[]) x",
                &[&running],
            )
            .await?
            .get(0);
        if ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn key_text(key: &Key) -> String {
    let parts: Vec<&str> = key.iter().map(|k| k.as_deref().unwrap_or("NULL")).collect();
    format!("({})", parts.join(", "))
}

/// The verdicts for people.
pub fn render_text(verdicts: &[Verdict]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for v in verdicts {
        let state = if v.equal { "EQUAL" } else { "DIFFERS" };
        let _ = writeln!(
            out,
            "follower {}: {state} (leader snapshot {}, follower origin {}, {:?}, {} round{}{})",
            v.follower,
            v.snapshot_lsn,
            v.origin_lsn.as_deref().unwrap_or("none"),
            v.catch_up,
            v.rounds,
            if v.rounds == 1 { "" } else { "s" },
            if !v.equal && !v.stable && v.catch_up == CatchUp::Reached && v.rounds > 1 {
                ", still changing"
            } else {
                ""
            }
        );
        for t in &v.tables {
            let _ = writeln!(
                out,
                "  {}: {} compared, {} missing, {} extra, {} different",
                t.table, t.compared, t.missing, t.extra, t.different
            );
            for s in &t.samples {
                let kind = match s.kind {
                    DiffKind::Missing => "missing",
                    DiffKind::Extra => "extra",
                    DiffKind::Different => "different",
                };
                let _ = writeln!(out, "    {kind} {}", key_text(&s.key));
            }
        }
        for k in &v.out_of_set {
            let _ = writeln!(
                out,
                "  FATAL: secret outside the replica set on follower {}: {}",
                v.follower,
                key_text(k)
            );
        }
    }
    out
}

/// The verdicts as one JSON document.
pub fn render_json(verdicts: &[Verdict]) -> String {
    serde_json::json!({
        "equal": verdicts.iter().all(|v| v.equal),
        "followers": verdicts,
    })
    .to_string()
}
