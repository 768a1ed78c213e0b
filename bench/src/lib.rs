//! handoff-bench: test backends, load generation and runtime comparisons.

pub mod mockllm;
