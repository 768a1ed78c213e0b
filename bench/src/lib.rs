//! Placeholder.

pub mod load;
