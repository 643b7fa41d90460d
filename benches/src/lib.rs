//! Criterion benches of the hot path live in `benches/`; this library is empty.
