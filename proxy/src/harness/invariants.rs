/*!
Checks of pgsieve's progress invariants (ARCHITECTURE.md, "Invariants") from
outside the process, the way an operator would see them: the leader's slot
(`pg_replication_slots`) and each follower's replication origin
(`pg_replication_origin_progress(origin, true)`).

- Nothing lost: the slot's `confirmed_flush_lsn` is never ahead of what a
  follower has durably recorded. [`slot_flush_not_ahead`] takes one sample;
  [`FlushWatch`] samples continuously in the background (through crashes and restarts
  of pgsieve, the leader or a follower) and reports every violation it saw.
- The slot keeps moving: [`wait_slot_flush_at_least`].
- No leak: [`never_granted_rows`] takes one sample of a follower's
  `secrets` rows of variables a test never grants to its replica set; [`LeakWatch`]
  samples continuously (through kills and restarts) and reports every row it saw —
  variable, row count, versions and time, never a value.

Sampling order matters: the slot is read *before* the origins. Origin progress only
grows, so `slot ≤ origin read later` can only fail when the slot really was ahead.
*/

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgsieve_protocol::Lsn;
use tokio::task::JoinHandle;
use tokio_postgres::GenericClient;

use super::cluster::connect_url;
use super::error::{HarnessError, PgContext};

/// One sample: the slot's confirmed flush position and a follower's durable origin
/// progress, read in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushSample {
    /// `confirmed_flush_lsn` of the slot; `None` if the slot does not exist (yet).
    pub slot_flush: Option<Lsn>,
    /// `pg_replication_origin_progress(origin, true)`; `None` if the origin does not
    /// exist or has no durable progress.
    pub origin_progress: Option<Lsn>,
}

impl FlushSample {
    /// Whether the slot claims more than the follower has durably applied. A missing
    /// slot claims nothing; a slot with a missing origin claims too much.
    pub fn is_ahead(&self) -> bool {
        match (self.slot_flush, self.origin_progress) {
            (None, _) => false,
            (Some(slot), None) => !slot.is_zero(),
            (Some(slot), Some(origin)) => slot > origin,
        }
    }
}

/// Reads `confirmed_flush_lsn` of logical slot `slot` on the leader.
pub async fn slot_confirmed_flush(
    leader: &impl GenericClient,
    slot: &str,
) -> Result<Option<Lsn>, HarnessError> {
    let rows = leader
        .query(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ctx(|| format!("reading slot {slot}"))?;
    let text: Option<String> = rows.first().and_then(|r| r.get(0));
    text.map(|t| parse_lsn(&t)).transpose()
}

/// Reads the durable progress of replication origin `origin` on a follower.
pub async fn origin_progress(
    follower: &impl GenericClient,
    origin: &str,
) -> Result<Option<Lsn>, HarnessError> {
    let row = follower
        .query_one(
            "SELECT (SELECT pg_replication_origin_progress(roname, true) \
               FROM pg_replication_origin WHERE roname = $1)::text",
            &[&origin],
        )
        .await
        .ctx(|| format!("reading the progress of origin {origin}"))?;
    let text: Option<String> = row.get(0);
    text.map(|t| parse_lsn(&t)).transpose()
}

/// The leader's current WAL insert position.
pub async fn current_wal_insert_lsn(leader: &impl GenericClient) -> Result<Lsn, HarnessError> {
    let row = leader
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .ctx(|| "reading the leader's WAL insert position".into())?;
    parse_lsn(row.get(0))
}

/// One sample of "nothing lost" for one follower: reads the slot, then the origin.
pub async fn slot_flush_not_ahead(
    leader: &impl GenericClient,
    follower: &impl GenericClient,
    slot: &str,
    origin: &str,
) -> Result<FlushSample, HarnessError> {
    let slot_flush = slot_confirmed_flush(leader, slot).await?;
    let origin_progress = origin_progress(follower, origin).await?;
    Ok(FlushSample {
        slot_flush,
        origin_progress,
    })
}

/// Waits until the slot's `confirmed_flush_lsn` reaches `target` ("the slot keeps moving": the
/// slot moves even when nothing is forwarded). Returns the position reached.
pub async fn wait_slot_flush_at_least(
    leader: &impl GenericClient,
    slot: &str,
    target: Lsn,
    timeout: Duration,
) -> Result<Lsn, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        let flush = slot_confirmed_flush(leader, slot).await?;
        if let Some(lsn) = flush.filter(|l| *l >= target) {
            return Ok(lsn);
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Usage(format!(
                "timed out after {timeout:?} waiting for slot {slot} to confirm {target} \
                 (confirmed_flush_lsn is {})",
                flush.map_or("absent".to_string(), |l| l.to_string())
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A follower watched by [`FlushWatch`].
#[derive(Debug, Clone)]
pub struct WatchedFollower {
    /// Superuser URL of the follower database.
    pub url: String,
    /// Name of pgsieve's replication origin there.
    pub origin: String,
}

/// What a [`FlushWatch`] saw.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    /// Samples where the slot and every follower could be read.
    pub samples: u64,
    /// Samples abandoned because a server was down or restarting.
    pub unavailable: u64,
    /// Samples where the slot did not exist.
    pub no_slot: u64,
    /// Highest `confirmed_flush_lsn` seen.
    pub max_flush: Option<Lsn>,
    /// One line per sample in which the slot was ahead of a follower.
    pub violations: Vec<String>,
}

/// A background task sampling "nothing lost" every `interval` until stopped. It opens its
/// own connections and reopens them after errors, so it keeps watching while
/// pgsieve, the leader or a follower is killed and restarted.
#[derive(Debug)]
pub struct FlushWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<FlushReport>,
}

impl FlushWatch {
    /// Starts watching `slot` on the leader at `leader_url` against `followers`.
    pub fn spawn(
        leader_url: String,
        slot: String,
        followers: Vec<WatchedFollower>,
        interval: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = FlushReport::default();
            let mut leader = None;
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                followers.iter().map(|_| None).collect();
            while !flag.load(Ordering::Acquire) {
                match watch_once(&leader_url, &slot, &followers, &mut leader, &mut clients).await {
                    Ok(None) => report.no_slot += 1,
                    Ok(Some((flush, origins))) => {
                        report.samples += 1;
                        report.max_flush = report.max_flush.max(Some(flush));
                        for (f, progress) in followers.iter().zip(origins) {
                            let sample = FlushSample {
                                slot_flush: Some(flush),
                                origin_progress: progress,
                            };
                            if sample.is_ahead() {
                                report.violations.push(format!(
                                    "slot {slot} confirmed {flush} but origin {} on {} had {}",
                                    f.origin,
                                    f.url,
                                    progress.map_or("nothing".into(), |l| l.to_string())
                                ));
                            }
                        }
                    }
                    Err(_) => report.unavailable += 1,
                }
                tokio::time::sleep(interval).await;
            }
            report
        });
        FlushWatch { stop, task }
    }

    /// Stops the task and returns what it saw.
    pub async fn stop(self) -> Result<FlushReport, HarnessError> {
        self.stop.store(true, Ordering::Release);
        self.task
            .await
            .map_err(|e| HarnessError::Usage(format!("flush watch task failed: {e}")))
    }
}

/// One sample over (re)opened connections: `None` if the slot is missing, else the
/// slot's flush and each follower's progress. Drops a connection that failed.
async fn watch_once(
    leader_url: &str,
    slot: &str,
    followers: &[WatchedFollower],
    leader: &mut Option<tokio_postgres::Client>,
    clients: &mut [Option<tokio_postgres::Client>],
) -> Result<Option<(Lsn, Vec<Option<Lsn>>)>, HarnessError> {
    let l = reopen(leader, leader_url).await?;
    let flush = match slot_confirmed_flush(l, slot).await {
        Ok(flush) => flush,
        Err(e) => {
            *leader = None;
            return Err(e);
        }
    };
    let Some(flush) = flush else {
        return Ok(None);
    };
    let mut origins = Vec::with_capacity(followers.len());
    for (f, client) in followers.iter().zip(clients.iter_mut()) {
        let c = reopen(client, &f.url).await?;
        match origin_progress(c, &f.origin).await {
            Ok(p) => origins.push(p),
            Err(e) => {
                *client = None;
                return Err(e);
            }
        }
    }
    Ok(Some((flush, origins)))
}

async fn reopen<'a>(
    slot: &'a mut Option<tokio_postgres::Client>,
    url: &str,
) -> Result<&'a tokio_postgres::Client, HarnessError> {
    if slot.as_ref().is_some_and(|c| c.is_closed()) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(connect_url(url).await?);
    }
    slot.as_ref()
        .ok_or_else(|| HarnessError::Usage("connection vanished".into()))
}

fn parse_lsn(text: &str) -> Result<Lsn, HarnessError> {
    Lsn::from_str(text).map_err(|_| HarnessError::Usage(format!("not an LSN: {text:?}")))
}

/// `secrets` rows of one variable found on a follower by [`never_granted_rows`]:
/// how many and which versions, never the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedRows {
    /// The variable.
    pub variable: String,
    /// How many `secrets` rows of it the follower holds.
    pub rows: i64,
    /// Lowest and highest version among them.
    pub versions: (i32, i32),
    /// The follower's clock (UTC) when read, to match against pgsieve's log.
    pub at: String,
}

/// One sample of "no leak" on one follower, in one query: the `secrets` rows of
/// `never_granted` (variables that are never in the follower's replica set, so the
/// follower must never hold any row of them), grouped by variable. Empty when clean.
pub async fn never_granted_rows(
    follower: &impl GenericClient,
    never_granted: &[String],
) -> Result<Vec<LeakedRows>, HarnessError> {
    let rows = follower
        .query(
            "SELECT resource_id, count(*), min(version), max(version), \
                    to_char(clock_timestamp() AT TIME ZONE 'UTC', \
                            'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM secrets WHERE resource_id = ANY($1::text[]) \
             GROUP BY resource_id ORDER BY resource_id",
            &[&never_granted],
        )
        .await
        .ctx(|| "counting secrets of never-granted variables".into())?;
    Ok(rows
        .iter()
        .map(|r| LeakedRows {
            variable: r.get(0),
            rows: r.get(1),
            versions: (r.get(2), r.get(3)),
            at: r.get(4),
        })
        .collect())
}

/// A follower watched by [`LeakWatch`].
#[derive(Debug, Clone)]
pub struct LeakWatched {
    /// Superuser URL of the follower database.
    pub url: String,
    /// Variables never granted to the follower's replica set (by any route: the
    /// test never grants, permits or hands over ownership of them, and no role in
    /// the set's closure holds a privilege on them).
    pub never_granted: Vec<String>,
}

/// What a [`LeakWatch`] saw.
#[derive(Debug, Clone, Default)]
pub struct LeakReport {
    /// Samples in which every follower could be read.
    pub samples: u64,
    /// Samples abandoned because a follower was down or restarting.
    pub unavailable: u64,
    /// One line per variable per sample in which a follower held a `secrets` row of
    /// a never-granted variable (variable, rows, versions, time; never a value).
    pub violations: Vec<String>,
}

/// A background task sampling "no leak" every `interval` until stopped: each
/// sample runs one query per follower counting `secrets` rows of that follower's
/// never-granted variables; any row is a violation. Opens its own connections and
/// reopens them after errors, so it keeps watching while pgsieve (or a follower) is
/// killed and restarted — including during initial copies and backfills.
#[derive(Debug)]
pub struct LeakWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<LeakReport>,
}

impl LeakWatch {
    /// Starts watching `followers`.
    pub fn spawn(followers: Vec<LeakWatched>, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = LeakReport::default();
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                followers.iter().map(|_| None).collect();
            while !flag.load(Ordering::Acquire) {
                match leak_once(&followers, &mut clients).await {
                    Ok(found) => {
                        report.samples += 1;
                        for (f, leaked) in followers.iter().zip(found) {
                            for l in leaked {
                                report.violations.push(format!(
                                    "t+{:.3}s ({}): follower {} holds {} secrets row(s) \
                                     (versions {}..={}) of never-granted variable {}",
                                    started.elapsed().as_secs_f64(),
                                    l.at,
                                    f.url,
                                    l.rows,
                                    l.versions.0,
                                    l.versions.1,
                                    l.variable
                                ));
                            }
                        }
                    }
                    Err(_) => report.unavailable += 1,
                }
                tokio::time::sleep(interval).await;
            }
            report
        });
        LeakWatch { stop, task }
    }

    /// Stops the task and returns what it saw.
    pub async fn stop(self) -> Result<LeakReport, HarnessError> {
        self.stop.store(true, Ordering::Release);
        self.task
            .await
            .map_err(|e| HarnessError::Usage(format!("leak watch task failed: {e}")))
    }
}

/// One sample over (re)opened connections: per follower, the rows it should not hold.
async fn leak_once(
    followers: &[LeakWatched],
    clients: &mut [Option<tokio_postgres::Client>],
) -> Result<Vec<Vec<LeakedRows>>, HarnessError> {
    let mut found = Vec::with_capacity(followers.len());
    for (f, client) in followers.iter().zip(clients.iter_mut()) {
        let c = reopen(client, &f.url).await?;
        match never_granted_rows(c, &f.never_granted).await {
            Ok(rows) => found.push(rows),
            Err(e) => {
                *client = None;
                return Err(e);
            }
        }
    }
    Ok(found)
}
