//! Developer tools behind the `harness` feature: the demo (and, beside it,
//! `crate::bench`). Never compiled into a `--no-default-features` binary.

pub mod demo;
