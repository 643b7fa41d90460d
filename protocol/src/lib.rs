//! pgoutput and streaming-replication codec (placeholder).
