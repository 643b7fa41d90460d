//! pgoutput and streaming-replication codec for pgsieve.
//!
//! Owns: [`Lsn`], the replication wrappers and every pgoutput message.
//! Never does: I/O, allocation per column, panics on bad input.

pub mod lsn;

pub use lsn::Lsn;
