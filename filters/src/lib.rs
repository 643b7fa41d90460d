//! Conjur replica-set model (placeholder).
