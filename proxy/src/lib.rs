//! pgsieve proxy library (placeholder).
