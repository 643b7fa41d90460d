//! Sinks: applying the filtered stream of leader transactions to a follower
//! with SQL (ARCHITECTURE.md, "Apply").
//!
//! `apply` (the sink: group commit, event by event) → `batch` (runs of
//! inserts) → `table` (statements per table) → `connection` (the one way to
//! the follower) → `pipeline`; `resync` (grants) works on the connection;
//! `error` says what failed where.

pub mod apply;
pub mod batch;
pub mod catalog;
pub mod connection;
pub mod copy_in;
pub mod error;
pub mod origin;
pub mod pipeline;
pub mod resync;
pub mod secrets;
pub mod statements;
pub mod table;
pub mod value;

pub use apply::{GroupLimits, Sink, SinkSpec, SinkStats};
pub use error::{ApplyContext, ApplyError, Operation};
