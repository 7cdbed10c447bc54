//! Peak FLOP/s (placeholder: being written).
