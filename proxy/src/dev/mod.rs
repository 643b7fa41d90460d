//! Developer tools behind the `harness` feature: the demo and the bench
//! (`pgsieve demo`, `pgsieve bench`). Never compiled into a
//! `--no-default-features` binary.

pub mod bench;
pub mod demo;
