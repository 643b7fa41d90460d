/*!
What a bench run reads off the machine: CPU seconds of a process from
`/proc/<pid>/stat` (user + system, all threads), peak resident set size
(`VmHWM`), the CPU spent by every child of a PostgreSQL postmaster between two
snapshots, and the versioned-sentinel wait on a follower. Kept apart from the
engines so every engine is measured the same way.
*/

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::Client;

use crate::harness::HarnessError;
use crate::harness::error::PgContext;
use crate::harness::wait::poll;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ).
fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf(3) reads a constant; no memory is touched.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces and parentheses, so the split starts after the last `)`).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU seconds used so far by process `pid` (all its threads);
/// `None` if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// Peak resident set size of `pid` in KiB (`VmHWM`); read it before the
/// process exits.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The postmaster's pid of a cluster (first line of `postmaster.pid`).
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// CPU seconds of every child of a postmaster at one instant, by pid.
#[derive(Debug, Clone, Default)]
pub struct ChildCpu(HashMap<u32, f64>);

impl ChildCpu {
    /// Reads every process whose parent is `postmaster`.
    pub fn snapshot(postmaster: u32) -> ChildCpu {
        let mut cpu = HashMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return ChildCpu(cpu);
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(f) = stat_fields(pid) else { continue };
            if f.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(postmaster) {
                continue;
            }
            if let (Some(u), Some(s)) = (
                f.get(11).and_then(|v| v.parse::<u64>().ok()),
                f.get(12).and_then(|v| v.parse::<u64>().ok()),
            ) {
                cpu.insert(pid, (u + s) as f64 / clock_ticks());
            }
        }
        ChildCpu(cpu)
    }

    /// CPU seconds spent between `self` (earlier) and `later`, leaving out the
    /// processes in `exclude` (the bench's own sessions). Children that exited
    /// in between are not counted (their time is gone from `/proc`).
    pub fn spent_until(&self, later: &ChildCpu, exclude: &[u32]) -> f64 {
        later
            .0
            .iter()
            .filter(|(pid, _)| !exclude.contains(pid))
            .map(|(pid, after)| after - self.0.get(pid).copied().unwrap_or(0.0))
            .filter(|d| *d > 0.0)
            .sum()
    }
}

/// The backend pid of a session (to leave the bench's own work out of CPU sums).
pub async fn backend_pid(client: &Client) -> Result<u32, HarnessError> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ctx(|| "reading pg_backend_pid()".into())?
        .get(0);
    Ok(u32::try_from(pid).unwrap_or(0))
}

/// The pid of the walsender serving `slot` on the leader, waiting up to
/// `timeout` for the slot to become active.
pub async fn walsender_pid(
    leader: &Client,
    slot_pattern: &str,
    timeout: Duration,
) -> Result<u32, HarnessError> {
    poll(
        timeout,
        Duration::from_millis(5),
        || format!("slot {slot_pattern} becoming active"),
        async || {
            let row = leader
                .query_opt(
                    "SELECT active_pid FROM pg_replication_slots \
                 WHERE slot_name LIKE $1 AND active_pid IS NOT NULL LIMIT 1",
                    &[&slot_pattern],
                )
                .await
                .ctx(|| format!("reading the active pid of slot {slot_pattern}"))?;
            Ok(row
                .and_then(|r| r.get::<_, Option<i32>>(0))
                .map(|pid| u32::try_from(pid).unwrap_or(0)))
        },
    )
    .await
}

/// Waits until no walsender serves a slot matching `slot_pattern` (after a
/// subscription is disabled or pgsieve stopped), so a workload written next
/// is a backlog and not consumed live.
pub async fn wait_slot_inactive(
    leader: &Client,
    slot_pattern: &str,
    timeout: Duration,
) -> Result<(), HarnessError> {
    poll(
        timeout,
        Duration::from_millis(10),
        || format!("slot {slot_pattern} becoming inactive"),
        async || {
            let active: bool = leader
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_replication_slots \
                 WHERE slot_name LIKE $1 AND active)",
                    &[&slot_pattern],
                )
                .await
                .ctx(|| format!("reading whether slot {slot_pattern} is active"))?
                .get(0);
            Ok((!active).then_some(()))
        },
    )
    .await
}

/// Waits on the follower, in one server-side loop (a PK lookup every 10 ms,
/// no client round trips), until the sentinel secret `sentinel` has version
/// `version`. Apply is in commit order, so everything written before the
/// sentinel is there too. A versioned sentinel never matches a stale row.
/// The loop commits between lookups: one long transaction would hold its
/// lock on `secrets` and block the initial copy's TRUNCATE it waits for.
pub async fn wait_sentinel(
    follower: &Client,
    sentinel: &str,
    version: i32,
    timeout: Duration,
) -> Result<(), HarnessError> {
    let lit = sentinel.replace('\'', "''");
    let context = || format!("waiting for sentinel {sentinel} v{version}");
    follower
        .batch_execute(&format!(
            "SET statement_timeout = '{}s'",
            timeout.as_secs().max(1)
        ))
        .await
        .map_err(|e| HarnessError::pg(context(), e))?;
    let waited = follower
        .batch_execute(&format!(
            "DO $bench$ BEGIN
               LOOP
                 EXIT WHEN EXISTS (SELECT 1 FROM secrets WHERE resource_id = '{lit}' AND version = {version});
                 COMMIT;
                 PERFORM pg_sleep(0.01);
               END LOOP;
             END $bench$"
        ))
        .await;
    follower
        .batch_execute("RESET statement_timeout")
        .await
        .map_err(|e| HarnessError::pg(context(), e))?;
    waited.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
            HarnessError::Timeout {
                what: format!("sentinel {sentinel} version {version} on the follower"),
                waited: timeout,
            }
        } else {
            HarnessError::pg(context(), e)
        }
    })
}

/// The p-th percentile (0..=1) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(index.min(sorted.len() - 1))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
