/*!
What a diff reports while it runs: per-table counts handed to a callback
after every chunk, a ready-made reporter (a spinner line per table on a
terminal, one log line per table otherwise).
*/

use std::io::IsTerminal;

/// Counts of one table so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableProgress {
    /// Quoted, qualified table name.
    pub table: String,
    /// Distinct keys compared (rows on either side).
    pub compared: u64,
    /// Rows of the leader's projection the follower lacks.
    pub missing: u64,
    /// Follower rows the leader's projection lacks.
    pub extra: u64,
    /// Rows on both sides with different values.
    pub different: u64,
    /// Follower `secrets` rows outside its replica set (counted in `extra` too).
    pub out_of_set: u64,
    /// Leader `secrets` rows outside the follower's set (not compared).
    pub leader_skipped: u64,
    /// Follower rows written (0 when verifying).
    pub changed: u64,
    /// Milliseconds spent on the table so far.
    pub elapsed_ms: u64,
    /// Whether the table is finished.
    pub done: bool,
}

impl TableProgress {
    /// Whether any difference was found.
    pub fn differs(&self) -> bool {
        self.missing + self.extra + self.different > 0
    }
}

/// A progress callback for a terminal (spinner per table) or logs (one
/// line per finished table).
pub struct Reporter {
    follower: String,
    verb: &'static str,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    /// A reporter for `follower`; a spinner when stderr is a terminal.
    /// `verb` starts each line (`verifying`, `resyncing`).
    pub fn new(follower: &str, verb: &'static str) -> Self {
        Reporter {
            follower: follower.to_owned(),
            verb,
            bar: std::io::stderr()
                .is_terminal()
                .then(indicatif::ProgressBar::new_spinner),
        }
    }

    /// Shows `p`.
    pub fn update(&mut self, p: &TableProgress) {
        let line = format!(
            "{} {}: {}: {} compared, {} missing, {} extra, {} different, {} changed",
            self.verb,
            self.follower,
            p.table,
            p.compared,
            p.missing,
            p.extra,
            p.different,
            p.changed
        );
        if let Some(bar) = &self.bar {
            bar.set_message(line);
            bar.tick();
            if p.done {
                bar.println(bar.message());
            }
        }
        if p.done {
            tracing::info!(
                follower = %self.follower,
                table = %p.table,
                compared = p.compared,
                missing = p.missing,
                extra = p.extra,
                different = p.different,
                out_of_set = p.out_of_set,
                changed = p.changed,
                elapsed_ms = p.elapsed_ms,
                "Table compared."
            );
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
