//! One soak stream of a given kind: the handoff, the client's behaviour, and what the
//! client was answered.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::mix::Kind;
use crate::load::client::{ClientPairs, ClientSocket};
use crate::load::handoff::{self, ConnectPolicy, HandoffError};
use crate::load::response::ResponseScanner;

/// Content chunks before the backend aborts (`abort:N`).
const ABORT_AFTER_CHUNKS: u32 = 3;

/// The receive buffer of a client that stops reading: small, so the daemon's socket
/// buffer and its own client buffer take the backlog.
const STOP_READING_RCVBUF: usize = 4096;

/// Bytes per read.
const READ_BYTES: usize = 16 * 1024;

/// What every stream of a soak shares.
#[derive(Debug)]
pub struct StreamSettings {
    pub socket: PathBuf,
    pub policy: ConnectPolicy,
    pub send_timeout: Duration,
    /// From the start of a stream to the end of its response.
    pub timeout: Duration,
    /// How long the backend of a backend-stall stream is silent after its head.
    pub stall: Duration,
    /// How long a client-stop-reading client reads nothing.
    pub stop_reading: Duration,
    pub clients: ClientPairs,
}

/// How a stream ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// 200, then `data: [DONE]`, then EOF.
    Complete,
    /// 200, then an `event: error`, then EOF.
    ErrorEvent,
    /// 200, then EOF with neither `[DONE]` nor an error event.
    EndedEarly,
    /// 200, then a reset or read error after some bytes.
    Reset,
    /// A status other than 200 (400, 502, 503, …).
    Status(u16),
    /// The client hung up itself after bytes arrived (client-close, client-rst).
    ClientClosed,
    /// Not one byte: EOF, reset or error first, or the handoff never reached the daemon.
    NoAnswer,
    /// Bytes that are not an HTTP response.
    Malformed,
    /// Bytes, but no end within the stream timeout.
    TimedOut,
    /// Our own side failed before the handoff (client connection): no daemon verdict.
    GeneratorError,
}

impl Outcome {
    pub fn label(self) -> String {
        match self {
            Outcome::Complete => "complete".to_owned(),
            Outcome::ErrorEvent => "error-event".to_owned(),
            Outcome::EndedEarly => "ended-early".to_owned(),
            Outcome::Reset => "reset".to_owned(),
            Outcome::Status(code) => format!("status-{code}"),
            Outcome::ClientClosed => "client-closed".to_owned(),
            Outcome::NoAnswer => "no-answer".to_owned(),
            Outcome::Malformed => "malformed".to_owned(),
            Outcome::TimedOut => "timed-out".to_owned(),
            Outcome::GeneratorError => "generator-error".to_owned(),
        }
    }

    /// Outcomes that fail the soak: a client left without an answer, a wrong one,
    /// a stream the daemon never ended, or a stream we could not make.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::NoAnswer | Outcome::Malformed | Outcome::TimedOut | Outcome::GeneratorError)
    }
}

/// Whether `outcome` is what a stream of `kind` is designed to meet. Others are
/// answers all the same (they do not fail the run) but are shown apart, since they
/// say the daemon took a path the kind did not ask for. A 503 is expected of every
/// kind: a slot's next handoff may meet a daemon still counting a stream just left.
pub fn is_expected(kind: Kind, outcome: Outcome) -> bool {
    if outcome == Outcome::Status(503) {
        return true;
    }
    match kind {
        Kind::Normal | Kind::ClientStopReading => outcome == Outcome::Complete,
        Kind::BackendAbort | Kind::Backend500 | Kind::BackendStall => outcome == Outcome::ErrorEvent,
        Kind::ClientClose | Kind::ClientRst | Kind::OverCapacity => outcome == Outcome::ClientClosed,
        Kind::BadHandoff => outcome == Outcome::Status(400),
    }
}

/// One finished stream.
#[derive(Debug)]
pub struct Finished {
    pub outcome: Outcome,
    /// Why, for outcomes that fail.
    pub detail: Option<String>,
}

impl Finished {
    fn ok(outcome: Outcome) -> Finished {
        Finished { outcome, detail: None }
    }

    fn failed(outcome: Outcome, detail: impl std::fmt::Display) -> Finished {
        Finished { outcome, detail: Some(detail.to_string()) }
    }
}

/// The handoff data of a stream of `kind`.
pub fn handoff_data(kind: Kind, user_id: u64, settings: &StreamSettings) -> Vec<u8> {
    let pattern = match kind {
        Kind::BackendAbort => Some(format!("abort:{ABORT_AFTER_CHUNKS}")),
        Kind::Backend500 => Some("status:500".to_owned()),
        // Silence before the head, so the daemon's first-byte timeout ends it.
        Kind::BackendStall => Some(format!("stall-head:{}", settings.stall.as_millis())),
        // Long tokens (4 KiB each): the response outgrows the small receive buffer.
        Kind::ClientStopReading => Some("long".to_owned()),
        // Cut off mid-object, as a truncated message would be.
        Kind::BadHandoff => return format!(r#"{{"prompt":"soak","user_id":{user_id},"#).into_bytes(),
        Kind::Normal | Kind::ClientClose | Kind::ClientRst | Kind::OverCapacity => None,
    };
    let pattern = pattern.map(|p| format!(r#","test_pattern":"{p}""#)).unwrap_or_default();
    format!(r#"{{"prompt":"soak {kind}","user_id":{user_id}{pattern}}}"#).into_bytes()
}

/// Runs one stream of `kind`; every step ends by the stream timeout.
pub async fn run(kind: Kind, user_id: u64, settings: &StreamSettings) -> Finished {
    let deadline = Instant::now() + settings.timeout;
    let pair = match timeout_at(deadline, settings.clients.open()).await {
        Err(_elapsed) => {
            return Finished::failed(Outcome::GeneratorError, "timed out opening a client connection")
        }
        Ok(Err(error)) => return Finished::failed(Outcome::GeneratorError, error),
        Ok(Ok(pair)) => pair,
    };
    if kind == Kind::ClientStopReading {
        if let Err(error) =
            rustix::net::sockopt::set_socket_recv_buffer_size(pair.client.as_fd(), STOP_READING_RCVBUF)
        {
            return Finished::failed(Outcome::GeneratorError, format!("setting SO_RCVBUF: {error}"));
        }
    }
    let socket = match timeout_at(deadline, handoff::connect(&settings.socket, settings.policy)).await {
        Err(_elapsed) => return Finished::failed(Outcome::NoAnswer, "timed out connecting to the daemon"),
        Ok(Err(error @ (HandoffError::Socket(_) | HandoffError::Register(_)))) => {
            return Finished::failed(Outcome::GeneratorError, error)
        }
        Ok(Err(error)) => return Finished::failed(Outcome::NoAnswer, error),
        Ok(Ok(socket)) => socket,
    };
    let data = handoff_data(kind, user_id, settings);
    let sending = handoff::send(
        &socket,
        &data,
        pair.server.as_fd(),
        settings.send_timeout,
        settings.policy.socket_type,
    );
    match timeout_at(deadline, sending).await {
        Err(_elapsed) => return Finished::failed(Outcome::NoAnswer, "timed out sending the handoff"),
        Ok(Err(error)) => return Finished::failed(Outcome::NoAnswer, error),
        Ok(Ok(())) => {}
    }
    // The daemon owns the connection now, as after the module's handoff.
    drop(socket);
    drop(pair.server);
    read(kind, pair.client, deadline, settings).await
}

/// How reading ended.
enum End {
    Eof,
    Error(io::Error),
    TimedOut,
    Malformed(String),
    /// We hung up (client-close, client-rst).
    HungUp,
}

async fn read(kind: Kind, client: ClientSocket, deadline: Instant, settings: &StreamSettings) -> Finished {
    let mut scanner = ResponseScanner::new();
    let mut buf = vec![0u8; READ_BYTES];
    let mut paused = kind != Kind::ClientStopReading;
    let end = loop {
        if !paused && scanner.status().is_some() {
            paused = true;
            // Reads nothing for a while; the deadline still bounds the stream.
            sleep_until((Instant::now() + settings.stop_reading).min(deadline)).await;
        }
        let hangs_up = matches!(kind, Kind::ClientClose | Kind::ClientRst);
        if hangs_up && scanner.status() == Some(200) && scanner.events() > 0 {
            break End::HungUp;
        }
        // An over-capacity stream let in leaves at once, giving its place back to the
        // regular slots (which would otherwise be refused in its stead).
        if kind == Kind::OverCapacity && scanner.status() == Some(200) {
            break End::HungUp;
        }
        match timeout_at(deadline, client.readable()).await {
            Err(_elapsed) => break End::TimedOut,
            Ok(Err(error)) => break End::Error(error),
            Ok(Ok(())) => {}
        }
        match client.try_read(&mut buf) {
            Ok(0) => break End::Eof,
            Ok(n) => {
                if let Err(error) = scanner.handle_bytes(buf.get(..n).unwrap_or_default()) {
                    break End::Malformed(error.to_string());
                }
            }
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(error) => break End::Error(error),
        }
    };
    if matches!(end, End::HungUp) && kind == Kind::ClientRst {
        // SO_LINGER 0: the close sends RST instead of FIN.
        if let Err(error) = rustix::net::sockopt::set_socket_linger(client.as_fd(), Some(Duration::ZERO)) {
            return Finished::failed(Outcome::GeneratorError, format!("setting SO_LINGER 0: {error}"));
        }
    }
    drop(client);
    judge(&scanner, end)
}

fn judge(scanner: &ResponseScanner, end: End) -> Finished {
    let bytes = scanner.bytes();
    if bytes == 0 {
        let how = match end {
            End::Eof => "closed without a byte".to_owned(),
            End::Error(error) => format!("read failed before a byte: {error}"),
            End::TimedOut => "no byte within the stream timeout".to_owned(),
            // Neither ends a read with no bytes; said plainly should that change.
            End::Malformed(_) | End::HungUp => "nothing read".to_owned(),
        };
        return Finished::failed(Outcome::NoAnswer, how);
    }
    if let End::Malformed(reason) = end {
        return Finished::failed(Outcome::Malformed, reason);
    }
    if let Some(status) = scanner.status().filter(|s| *s != 200) {
        return Finished::ok(Outcome::Status(status));
    }
    match end {
        End::HungUp => Finished::ok(Outcome::ClientClosed),
        End::TimedOut => Finished::failed(
            Outcome::TimedOut,
            format!("no end within the stream timeout after {bytes} bytes"),
        ),
        End::Error(_) if scanner.status().is_some() => Finished::ok(Outcome::Reset),
        End::Error(error) => {
            Finished::failed(Outcome::Malformed, format!("{error} after {bytes} bytes, inside the head"))
        }
        End::Eof if scanner.status().is_none() => {
            Finished::failed(Outcome::Malformed, format!("closed after {bytes} bytes, inside the head"))
        }
        End::Eof if scanner.is_done() => Finished::ok(Outcome::Complete),
        End::Eof if scanner.error_events() > 0 => Finished::ok(Outcome::ErrorEvent),
        End::Eof | End::Malformed(_) => Finished::ok(Outcome::EndedEarly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

    fn scanned(parts: &[&[u8]]) -> ResponseScanner {
        let mut scanner = ResponseScanner::new();
        for part in parts {
            // Malformed input is judged through End::Malformed in these tests.
            let _ = scanner.handle_bytes(part);
        }
        scanner
    }

    fn settings() -> StreamSettings {
        StreamSettings {
            socket: PathBuf::from("/nonexistent"),
            policy: ConnectPolicy {
                socket_type: crate::load::HandoffSocketType::SeqPacket,
                attempt_timeout: Duration::from_millis(1),
                attempts: 1,
            },
            send_timeout: Duration::from_millis(1),
            timeout: Duration::from_secs(1),
            stall: Duration::from_millis(8000),
            stop_reading: Duration::from_millis(1),
            clients: ClientPairs::Unix,
        }
    }

    #[test]
    fn not_one_byte_is_no_answer_however_the_read_ended() {
        for end in [End::Eof, End::TimedOut, End::Error(io::Error::from(io::ErrorKind::ConnectionReset))] {
            let finished = judge(&scanned(&[]), end);
            assert_eq!(finished.outcome, Outcome::NoAnswer);
            assert!(finished.outcome.is_failure());
        }
    }

    #[test]
    fn error_statuses_and_error_events_are_answers() {
        let refused =
            scanned(&[b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}"]);
        let finished = judge(&refused, End::Eof);
        assert_eq!(finished.outcome, Outcome::Status(503));
        assert!(!finished.outcome.is_failure());

        let event = scanned(&[HEAD, b"data: {\"content\":\"a\"}\n\nevent: error\ndata: {\"error\":{}}\n\n"]);
        assert_eq!(judge(&event, End::Eof).outcome, Outcome::ErrorEvent);
        let done = scanned(&[HEAD, b"data: {\"content\":\"a\"}\n\ndata: [DONE]\n\n"]);
        assert_eq!(judge(&done, End::Eof).outcome, Outcome::Complete);
        let cut = scanned(&[HEAD, b"data: {\"content\":\"a\"}\n\n"]);
        assert_eq!(judge(&cut, End::Eof).outcome, Outcome::EndedEarly);
        let reset = judge(&cut, End::Error(io::Error::from(io::ErrorKind::ConnectionReset)));
        assert_eq!(reset.outcome, Outcome::Reset);
        assert_eq!(judge(&cut, End::HungUp).outcome, Outcome::ClientClosed);
    }

    #[test]
    fn a_broken_or_endless_answer_fails() {
        let half_head = scanned(&[b"HTTP/1.1 200 OK\r\nContent-"]);
        assert_eq!(judge(&half_head, End::Eof).outcome, Outcome::Malformed);
        let garbage = scanned(&[b"SSH-2.0\r\n\r\n"]);
        assert_eq!(judge(&garbage, End::Malformed("not HTTP".to_owned())).outcome, Outcome::Malformed);
        let endless = judge(&scanned(&[HEAD]), End::TimedOut);
        assert_eq!(endless.outcome, Outcome::TimedOut);
        assert!(endless.outcome.is_failure());
    }

    #[test]
    fn each_kind_expects_its_own_ending_and_any_kind_may_meet_a_full_daemon() {
        assert!(is_expected(Kind::Normal, Outcome::Complete));
        assert!(!is_expected(Kind::Normal, Outcome::ErrorEvent));
        assert!(is_expected(Kind::BackendStall, Outcome::ErrorEvent));
        assert!(!is_expected(Kind::BackendStall, Outcome::Complete));
        assert!(is_expected(Kind::BadHandoff, Outcome::Status(400)));
        assert!(!is_expected(Kind::Normal, Outcome::Status(400)));
        for kind in Kind::ALL {
            assert!(is_expected(kind, Outcome::Status(503)), "{kind}");
            assert!(!is_expected(kind, Outcome::NoAnswer), "{kind}");
        }
    }

    #[test]
    fn each_kind_sends_its_pattern_and_only_bad_handoff_sends_broken_json() {
        let settings = settings();
        for kind in Kind::ALL {
            let data = handoff_data(kind, 7, &settings);
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&data);
            if kind == Kind::BadHandoff {
                assert!(parsed.is_err(), "{}", String::from_utf8_lossy(&data));
                continue;
            }
            let value = parsed.expect("valid JSON");
            assert_eq!(value["user_id"], 7);
            let pattern = value.get("test_pattern").and_then(|p| p.as_str());
            let expected = match kind {
                Kind::BackendAbort => Some("abort:3"),
                Kind::Backend500 => Some("status:500"),
                Kind::BackendStall => Some("stall-head:8000"),
                Kind::ClientStopReading => Some("long"),
                _ => None,
            };
            assert_eq!(pattern, expected, "{kind}");
        }
    }
}
