//! pgsieve proxy library (placeholder).
#[cfg(feature = "harness")]
pub mod harness;
pub mod setup;
pub mod source;
