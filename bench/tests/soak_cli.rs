//! `handoff-bench soak` from the command line: bad settings are refused before
//! anything starts, and a daemon that cannot start fails the run with mock-llm
//! stopped. (The soak itself runs against both daemons in .ci/run.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("handoff-soak-test-{name}-{}", std::process::id()))
}

fn soak(args: &[&str], out: &PathBuf) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_handoff-bench"))
        .arg("soak")
        .args(args)
        .arg("--mock-llm")
        .arg(env!("CARGO_BIN_EXE_mock-llm"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("run handoff-bench");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

#[test]
fn a_bad_mix_or_warm_up_is_refused_with_the_reason() {
    let out = out_dir("flags");
    let (output, stderr) = soak(&["--mix", "normal=5,client-rst=x"], &out);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(r#"--mix: client-rst: weight "x" is not a whole number"#), "{stderr}");

    let (output, stderr) = soak(&["--mix", "over-capacity=3"], &out);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no stream kind besides over-capacity"), "{stderr}");

    let (output, stderr) = soak(&["--duration", "30", "--warmup", "30"], &out);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("must be shorter than --duration"), "{stderr}");
    assert!(!out.exists(), "nothing started, nothing written");
}

#[test]
fn a_daemon_that_cannot_start_fails_the_run_and_mock_llm_is_stopped() {
    let out = out_dir("broken");
    let (output, stderr) =
        soak(&["--daemon", "/bin/false", "--backend", "http1", "--concurrency", "10"], &out);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the daemon exited at start"), "{stderr}");
    // mock-llm prints its counters only when it is stopped by a signal.
    let mock_log = std::fs::read_to_string(out.join("mock-llm.log")).expect("mock-llm log");
    assert!(mock_log.contains("mock-llm: connections 0, requests 0"), "{mock_log}");
    let _ = std::fs::remove_dir_all(&out);
}
