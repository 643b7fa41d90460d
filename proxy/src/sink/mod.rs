//! Sinks: applying the filtered stream of leader transactions to a follower
//! with SQL (ARCHITECTURE.md, "Apply").

pub mod apply;
pub mod catalog;
pub mod copy_in;
pub mod origin;
pub mod pipeline;
pub mod resync;
pub mod secrets;
pub mod statements;
pub mod value;

pub use apply::{ApplyError, GroupLimits, Progress, Sink, SinkSpec, SinkStats};
