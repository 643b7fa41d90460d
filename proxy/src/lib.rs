//! pgsieve: partial logical replication for CyberArk Conjur followers.
//!
//! Owns the `pgsieve` binary's parts: configuration and CLI, the leader
//! replication connection (`source`), transaction assembly (`txn`), the
//! filter stage over `pgsieve-filters`, follower sinks (`sink`), the initial
//! copy, feedback to the leader, and the throwaway clusters used by the demo,
//! the benches and the tests (`harness`). Never does: protocol parsing
//! (`pgsieve-protocol`) or authorization logic (`pgsieve-filters`) of its own.

pub mod bootstrap;
pub mod check;
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
pub mod reconcile;
pub mod report;
pub mod resync_cmd;
pub mod roster;
pub mod run;
pub mod setup;
pub mod sink;
pub mod source;
pub mod status;
pub mod txn;
pub mod verify;

#[cfg(feature = "harness")]
pub mod harness;

#[cfg(feature = "harness")]
pub mod demo;

pub mod tap;

#[cfg(feature = "harness")]
pub mod bench;
