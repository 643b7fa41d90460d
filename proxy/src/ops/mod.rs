//! Operator commands: one-shot tools beside the pipeline, each reading the
//! same configuration. They use the pipeline's pieces (connections, the
//! model, the diff engine) but nothing in the pipeline uses them.

pub mod check;
pub mod resync;
pub mod setup;
pub mod status;
pub mod tap;
pub mod verify;
