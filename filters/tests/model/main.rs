//! Integration tests of the filter model, one binary.

/// A from-scratch evaluator over plain tables: the oracle.
mod naive;
/// Random policies and change sequences: incremental model vs oracle after every step.
mod properties;
/// Hand-written scenarios: explanations, cycles, deletions, unknown ids.
mod scenarios;
