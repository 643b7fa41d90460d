//! Transaction assembly: pgoutput messages in wire order → leader
//! transactions in commit order, as a flat stream of [`TxnEvent`]s.
//!
//! Ordinary transactions arrive whole and in commit order, so their events
//! pass straight through (nothing is buffered). Streamed transactions arrive
//! in chunks interleaved with others and only get their place in commit order
//! at Stream Commit; their changes are spooled to a local file meanwhile
//! ([`spool`]), so memory does not grow with transaction size.

pub mod assemble;
pub mod event;
pub mod spool;

pub use assemble::{AssembleError, Assembler};
pub use event::{RowChange, RowOp, TxnBegin, TxnCommit, TxnEvent};
