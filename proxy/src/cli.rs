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
    /// Decoded stream with per-follower forward/drop decisions and their reasons,
    /// from a temporary slot of its own (or a capture); applies nothing.
    Tap {
        /// Configuration file (TOML).
        #[arg(short, long, env = "PGSIEVE_CONFIG")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = pgsieve::tap::TapFormat::Pretty)]
        format: pgsieve::tap::TapFormat,
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
}
