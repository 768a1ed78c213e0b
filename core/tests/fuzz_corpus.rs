//! The committed fuzz seeds (`fuzz/corpus/<target>/`) and crash inputs
//! (`fuzz/regressions/<target>/`) replayed on stable through the same checks the
//! fuzz targets run, so CI catches a regression without nightly.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use handoff_core::testing::{self, Check};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The input files of `fuzz/<kind>/<target>/`, sorted; none when the directory
/// does not exist (a target with no regressions yet).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| {
            path.is_file() && !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
}

/// Runs every seed and regression input of `target`; fails naming each input
/// whose check failed or panicked.
fn replay(target: &str, check: Check) {
    let seeds = inputs("corpus", target);
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        match panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Ok(Ok(())) => {}
            Ok(Err(broken)) => failures.push(format!("{}: {broken}", path.display())),
            Err(_) => failures.push(format!("{}: panicked (message above)", path.display())),
        }
    }
    assert!(failures.is_empty(), "{} of {target}'s inputs failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn handoff_inputs_replay() {
    replay("handoff", testing::handoff);
}

#[test]
fn sse_inputs_replay() {
    replay("sse", testing::sse);
}

#[test]
fn sse_raw_inputs_replay() {
    replay("sse_raw", testing::sse_raw);
}

#[test]
fn openai_chunk_inputs_replay() {
    replay("openai_chunk", testing::openai_chunk);
}

#[test]
fn http1_inputs_replay() {
    replay("http1", testing::http1);
}

#[test]
fn stream_inputs_replay() {
    replay("stream", testing::stream);
}

#[test]
fn pool_inputs_replay() {
    replay("pool", testing::pool);
}

/// Every check has a fuzz target and a corpus, and every corpus a check.
#[test]
fn targets_corpora_and_checks_match() {
    let mut corpora: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus"))
        .expect("fuzz/corpus exists")
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_dir())
        .filter_map(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
        .collect();
    corpora.sort();
    let mut checks: Vec<String> = testing::TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    checks.sort();
    assert_eq!(corpora, checks, "fuzz/corpus/* and testing::TARGETS differ");
    for name in &checks {
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "no fuzz target {}", target.display());
    }
}
