//! The handoff-load command line: flags reach the run, the summary is printed and
//! `--json` writes a report the comparison tool can read back.

mod load_support;

use std::process::Command;

use handoff_bench::load::{ClientKind, HandoffSocketType, LoadReport};
use load_support::{FakeDaemon, Reply};
use rustix::net::SocketType;

#[test]
fn json_report_matches_the_flags_and_the_outcome() {
    let daemon = FakeDaemon::start(SocketType::SEQPACKET, 5, |i| {
        if i == 0 {
            Reply::Unavailable
        } else {
            Reply::Complete
        }
    });
    let json_path = load_support::unique_socket_path("report").with_extension("json");
    let output = Command::new(env!("CARGO_BIN_EXE_handoff-load"))
        .args(["--socket"])
        .arg(&daemon.path)
        .args(["--streams", "5", "--ramp", "0.1", "--timeout", "10", "--client", "unix"])
        .args(["--socket-type", "seqpacket", "--data", r#"{"prompt":"cli"}"#, "--quiet", "--json"])
        .arg(&json_path)
        .output()
        .expect("run handoff-load");
    let received = daemon.finish();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(i32::from(handoff_bench::load::STREAMS_FAILED_EXIT)),
        "one stream failed, so the exit says so; stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "--quiet prints no progress: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("started 5  ok 4  failed 1"), "{stdout}");

    let json = std::fs::read(&json_path).expect("--json wrote the report");
    let _ = std::fs::remove_file(&json_path);
    let report: LoadReport = serde_json::from_slice(&json).expect("the report parses");
    assert_eq!(report.settings.streams, 5);
    assert_eq!(report.settings.client, ClientKind::Unix);
    assert_eq!(report.settings.socket_type, HandoffSocketType::SeqPacket);
    assert_eq!(report.settings.ramp_secs, 0.1);
    assert_eq!(report.settings.data_bytes, 16);
    assert_eq!((report.ok, report.failures.status), (4, 1));
    assert_eq!(report.status_codes.get(&503), Some(&1));
    assert!(received.iter().all(|handoff| handoff.data == br#"{"prompt":"cli"}"#));
}

#[test]
fn bad_flags_are_refused_before_any_handoff() {
    let output = Command::new(env!("CARGO_BIN_EXE_handoff-load"))
        .args(["--socket", "/nonexistent/handoff.sock", "--streams", "0", "--quiet"])
        .output()
        .expect("run handoff-load");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--streams must be at least 1"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_handoff-load"))
        .args(["--ramp", "-1"])
        .output()
        .expect("run handoff-load");
    assert!(!output.status.success());
}
