//! The shared scenario list (`handoff_bench::scenarios`) against `handoff-tokio`.

handoff_bench::scenario_tests!(env!("CARGO_BIN_EXE_handoff-tokio"));
