//! pgsieve integration tests: one binary, one module per behaviour, every test
//! against real PostgreSQL clusters started by `pgsieve::harness`.
mod source;
mod support;
mod replication;
mod harness;
mod oracle;
mod partial;
mod latency;
mod demo;
mod crash;
