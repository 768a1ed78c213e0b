//! `handoff-bench compare` from the command line: a broken daemon becomes a cell
//! error (not a crash), the backend it had is stopped, the results folder is
//! written; bad settings are refused before anything starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use handoff_bench::compare::{BackendKind, Comparison};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mock-llm")).parent().expect("a target folder").to_owned()
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("handoff-bench-test-{name}-{}", std::process::id()))
}

#[test]
fn a_daemon_that_cannot_start_is_a_failed_cell_and_its_backend_is_stopped() {
    let out = out_dir("broken");
    let output = Command::new(env!("CARGO_BIN_EXE_handoff-bench"))
        .args(["compare", "--runtimes", "broken", "--daemon", "false {socket}", "--daemon-name", "broken"])
        .args(["--backends", "h2c,mock", "--streams", "5", "--delay-ms", "10", "--ramp", "0", "--pause", "0"])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run handoff-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");

    let json = std::fs::read(out.join("results.json")).expect("results.json written");
    let comparison: Comparison = serde_json::from_slice(&json).expect("results.json parses");
    assert_eq!(comparison.cells.len(), 2);
    for result in &comparison.cells {
        let error = result.error.as_deref().unwrap_or_default();
        assert!(error.contains("the daemon exited at start"), "{}: {error}", result.cell.name());
        assert!(result.load.is_none());
    }
    let h2c = comparison.cell("broken", BackendKind::H2c, 5).expect("the h2c cell ran");
    assert!(h2c.commands["daemon"].contains("exec false /"), "{:?}", h2c.commands);
    assert!(h2c.commands["mock-llm"].contains("--token-delay-ms 10 --tokens 18"), "{:?}", h2c.commands);
    // mock-llm prints its summary only when it is stopped by a signal.
    let mock_log = std::fs::read_to_string(out.join("logs/broken-h2c-5.mock-llm.log")).expect("mock-llm log");
    assert!(mock_log.contains("mock-llm: connections 0, requests 0"), "{mock_log}");

    assert!(stdout.contains("| failures by class | error |"), "{stdout}");
    for file in ["results.md", "ttfb.svg", "rss_per_stream.svg", "cpu_per_event.svg"] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn unknown_daemons_and_missing_binaries_are_refused_before_anything_starts() {
    let unknown = Command::new(env!("CARGO_BIN_EXE_handoff-bench"))
        .args(["compare", "--runtimes", "nope", "--out"])
        .arg(out_dir("unknown"))
        .output()
        .expect("run handoff-bench");
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains(r#"--runtimes "nope": no such daemon (known: tokio, smol)"#), "{stderr}");

    let missing = Command::new(env!("CARGO_BIN_EXE_handoff-bench"))
        .args(["compare", "--bin-dir", "/nonexistent/bin", "--out"])
        .arg(out_dir("missing"))
        .output()
        .expect("run handoff-bench");
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("/nonexistent/bin/mock-llm not found; build them with `cargo build --release"),
        "{stderr}"
    );
    assert!(!out_dir("missing").exists(), "nothing is written for a run that cannot start");
}
