//! pgsieve: partial logical replication for CyberArk Conjur followers.
//!
//! The pipeline, in the order data flows (ARCHITECTURE.md, "Data flow"):
//! `source` (leader replication connection) → `txn` (assembly, tuple gate)
//! → `filter` (model, decisions, effects) → `fanout` (one lane per
//! follower) → `sink` (apply) → `feedback` (status updates); `run` drives
//! it, and `run::start` brings every follower to a stream position first
//! (`bootstrap`, `reconcile`, `copy`, `diff`). Shared below the stages:
//! `config`, `conn` (every connection), `sql` (quoting), `conjur` (facts
//! about Conjur's tables), `metrics`, `report`. Operator commands live in
//! `ops`, developer tools (`dev` with `dev::bench`, `harness`) behind the `harness`
//! feature. Never does: protocol parsing (`pgsieve-protocol`) or
//! authorization logic (`pgsieve-filters`) of its own.

pub mod bootstrap;
pub mod config;
pub mod conjur;
pub mod conn;
pub mod copy;
pub mod diff;
pub mod fanout;
pub mod feedback;
pub mod filter;
pub mod heartbeat;
pub mod metrics;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod sink;
pub mod source;
pub mod sql;
pub mod txn;

#[cfg(feature = "harness")]
pub mod harness;

#[cfg(feature = "harness")]
pub mod dev;

pub mod ops;
