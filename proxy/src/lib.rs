//! pgsieve proxy library (placeholder).
pub mod source;
