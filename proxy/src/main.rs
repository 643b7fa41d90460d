//! The `pgsieve` binary.
fn main() {}
