/*!
`pgsieve check`: a preflight an operator runs before `pgsieve run`, printing one
PASS/FAIL line per check with the precise reason, so that a leader without
`wal_level = logical`, a publication missing a table or a follower lacking a column
is found before the first transaction fails to apply.

Each check is split in two: an `async` step that reads facts from the leader or a
follower, and a pure function that turns those facts into a [`CheckResult`] (unit
tested in `rules.rs` without a database). The checks only read, except on a follower, where
the origin probe runs in a transaction that is always rolled back.
*/

mod facts;
mod rules;

use facts::{check_follower, check_leader};
pub(crate) use facts::{connect, db_message};
pub use rules::*;

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Config;

/// How long one connection attempt may take before the check reports it as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many schema mismatches one follower line lists before "and N more".
const MAX_LISTED_MISMATCHES: usize = 5;
/// Name of the throwaway origin created (and rolled back) on each follower.
const PROBE_ORIGIN: &str = "pgsieve_check_probe";

/// The outcome of one check: what was checked, whether it passed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, prefixed by where (`leader: wal_level`, `follower us-east: schema`).
    pub name: String,
    /// Whether pgsieve can run as far as this check is concerned.
    pub ok: bool,
    /// The finding: what was seen, and on failure what is wrong and how to fix it.
    pub detail: String,
}

impl CheckResult {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    /// A failed check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Writes one `PASS`/`FAIL` line per result and a summary line.
pub fn render(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for r in results {
        let verdict = if r.ok { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "{verdict}  {}: {}", r.name, r.detail);
    }
    let failed = failures(results);
    let _ = writeln!(out, "{} checks, {} failed", results.len(), failed);
    out
}

/// How many results failed.
pub fn failures(results: &[CheckResult]) -> usize {
    results.iter().filter(|r| !r.ok).count()
}

/// Runs every check against the configured leader and followers. Never fails as a
/// whole: an unreachable server is itself a failed check, and the checks that need
/// it are skipped.
pub async fn run_checks(config: &Config) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let leader_columns = check_leader(config, &mut results).await;
    for follower in &config.followers {
        check_follower(config, follower, leader_columns.as_ref(), &mut results).await;
    }
    results
}
