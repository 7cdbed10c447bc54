//! The FLOP model (placeholder: being written).
