//! pgsieve integration tests: one binary, one module per behaviour, every test
//! against real PostgreSQL clusters started by `pgsieve::harness`.
mod bad_input;
mod bench_quick;
mod conformance;
mod crash;
mod demo;
mod docker_kit;
mod failover;
mod gaps;
mod harness;
mod hub;
mod inspect;
mod latency;
mod metrics;
mod ops_kit;
mod oracle;
mod partial;
mod replication;
mod scale;
mod source;
mod speculation;
mod support;
mod tap;
mod throughput;
mod tls;
mod trust;
mod verify;
