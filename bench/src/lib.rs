//! handoff-bench: test backends, load generation, runtime comparisons, and a
//! development front with a demo page.

pub mod compare;
pub mod demo;
pub mod front;
pub mod load;
pub mod mockllm;
pub mod scenarios;
pub mod soak;
