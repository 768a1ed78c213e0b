//! handoff-bench: test backends, load generation and runtime comparisons.

pub mod compare;
pub mod load;
pub mod mockllm;
pub mod scenarios;
pub mod soak;
