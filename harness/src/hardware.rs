//! Hardware description (placeholder: being written).
