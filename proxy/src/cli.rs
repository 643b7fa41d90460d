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
}
