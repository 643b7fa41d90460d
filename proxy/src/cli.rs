//! Command-line interface (clap). Passwords are never taken from flags: use
//! password files or the environment (see `config`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// pgsieve: partial logical replication for CyberArk Conjur followers.
#[derive(Debug, Parser)]
#[command(name = "pgsieve", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream leader → filter → follower(s); initial copy when needed.
    Run {
        /// Configuration file (TOML); every key can be overridden by PGSIEVE_* variables.
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
    },
    /// Create the publication and set policy_log's replica identity (idempotent).
    Setup {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
        /// Print the SQL instead of running it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Preflight: one PASS/FAIL line per check; exits non-zero when any fails.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
    },
    /// Slot lag and, per follower, applied LSN and lag.
    Status {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Read-only comparison of each follower with the leader, table by table
    /// (`secrets` against its replica set); exits 1 on any difference.
    Verify {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
        /// Only this follower.
        #[arg(long, value_name = "NAME")]
        follower: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Online diff resync of one follower: only differences written, in one
    /// transaction with its new origin (refused while `run` applies to it).
    Resync {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
        /// The follower to resync.
        #[arg(long, value_name = "NAME")]
        follower: String,
    },
    /// Decoded stream with per-follower forward/drop decisions and their reasons,
    /// from a temporary slot of its own (or a capture); applies nothing.
    Tap {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = pgsieve::ops::tap::TapFormat::Pretty)]
        format: pgsieve::ops::tap::TapFormat,
        /// Only changes of this table (bare or schema-qualified); repeatable.
        #[arg(long = "table", value_name = "TABLE")]
        tables: Vec<String>,
        /// Only decisions and effects of this follower or replica set; repeatable.
        #[arg(long = "replica-set", value_name = "NAME")]
        replica_sets: Vec<String>,
        /// Only changes and effects of this resource id; repeatable.
        #[arg(long = "variable", value_name = "ID")]
        variables: Vec<String>,
        /// Only this leader transaction; repeatable.
        #[arg(long = "xid", value_name = "XID")]
        xids: Vec<u32>,
        /// Print secret values instead of `<redacted N bytes>`.
        #[arg(long)]
        show_values: bool,
        /// Decode a capture file (see README) instead of a live slot.
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Stop after N printed transactions (and non-transactional messages).
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// End-to-end catch-up, lag, CPU and memory of pgsieve against native logical
    /// replication, pglogical (when installed) and a raw reader, on local clusters.
    #[cfg(feature = "harness")]
    Bench(BenchArgs),
    /// Local leader + two followers (installed PostgreSQL), a sample policy with two
    /// replica sets, a live grant and revoke with their latency; then cleans up.
    #[cfg(feature = "harness")]
    Demo {
        /// Keep everything running after the scenario until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
}

/// Output format of `pgsieve status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Lines for people.
    Text,
    /// One JSON object (fields documented in the README).
    Json,
}

/// `pgsieve bench`'s options.
#[cfg(feature = "harness")]
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Small sizes (a few minutes; what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Report directory (default `benches/results/<date>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Workloads to run (repeatable; default all).
    #[arg(long = "workload", value_enum, value_name = "W")]
    pub workloads: Vec<pgsieve::dev::bench::Workload>,
    /// No progress spinner, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Follower counts of the fan-out runs, e.g. `1,2,4,8` (default: that, or
    /// `1,2` with `--quick`; none when `--workload` is given); `0` for none.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub fanout: Option<Vec<usize>>,
    /// Leave pglogical out even when installed (its filtered W2 catch-up is
    /// quadratic: up to an hour).
    #[arg(long)]
    pub without_pglogical: bool,
    /// Schemas to run (repeatable; default every schema a workload has).
    #[arg(long = "schema", value_enum, value_name = "S")]
    pub schemas: Vec<pgsieve::dev::bench::Schema>,
    /// Replica-set shares to run (repeatable; default both).
    #[arg(long = "filter", value_enum, value_name = "F")]
    pub filters: Vec<pgsieve::dev::bench::Filter>,
}
