//! Configuration: what the operator wrote (`raw`) and what pgsieve runs with
//! (`resolved`).
//!
//! Two layers, like ripgrep's low/high args: `raw` mirrors the TOML file and
//! the `PGSIEVE_*` environment one to one and only validates shapes;
//! `resolved` turns that into connection configs, replica-set specs and
//! tuning values, reading password files on the way. Passwords never have to
//! appear on a command line.

pub mod raw;
pub mod resolved;

pub use raw::RawConfig;
pub use resolved::{ApplySettings, Config, FollowerConfig, LeaderConfig, LogFormat, OnGap};

use std::path::PathBuf;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named with `-c`.
        path: PathBuf,
        /// The I/O cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file named with `-c`.
        path: PathBuf,
        /// The TOML parser's explanation, with line and column.
        message: String,
    },
    /// An environment override has a value of the wrong shape.
    #[error("invalid value {value:?} in environment variable {name}: {reason}")]
    Env {
        /// The variable, e.g. `PGSIEVE_APPLY_GROUP_MAX_ROWS`.
        name: String,
        /// What it held.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A value is present but unusable (bad URL, duplicate names, …).
    #[error("invalid config: {0}")]
    Invalid(String),
}
