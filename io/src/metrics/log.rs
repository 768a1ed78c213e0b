//! The one info line per finished stream: core's [`StreamSummary`] and who the
//! stream was for, as structured fields (`--log-format json` makes them keys).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use handoff_core::handoff::Handoff;
use handoff_core::metrics::StreamSummary;

/// Longest `request_id` / `user_id` logged: they come from the handoff, and a
/// log line must stay a line an operator can read.
const MAX_ID_BYTES: usize = 128;

/// Who a stream was for, kept from its start to its log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub request_id: Option<Box<str>>,
    pub user_id: Option<Box<str>>,
    /// The client's address and port (as Apache's `%a` and `%{remote}p`), when
    /// the handed-off socket is TCP.
    pub peer: Option<SocketAddr>,
}

impl Identity {
    /// The handoff's identifiers and the client socket's peer (one getpeername).
    pub fn new(handoff: &Handoff, client: impl AsFd) -> Identity {
        let peer =
            rustix::net::getpeername(client).ok().flatten().and_then(|addr| SocketAddr::try_from(addr).ok());
        Identity {
            request_id: bounded(handoff.request_id.as_deref()),
            user_id: bounded(handoff.user_id.as_deref()),
            peer,
        }
    }
}

fn bounded(id: Option<&str>) -> Option<Box<str>> {
    let id = id?;
    let mut end = id.len().min(MAX_ID_BYTES);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Some(id[..end].into())
}

fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// Logs a finished stream at info.
pub fn log_stream(stream: u64, summary: &StreamSummary, identity: Option<&Identity>) {
    let error_type = Some(summary.outcome.error_type()).filter(|t| !t.is_empty());
    let peer = identity.and_then(|identity| identity.peer);
    tracing::info!(
        stream,
        outcome = summary.outcome.outcome(),
        error_type,
        duration_ms = millis(summary.duration),
        ttfb_ms = summary.ttfb.map(millis),
        first_event_ms = summary.first_event.map(millis),
        bytes = summary.bytes,
        events = summary.events,
        backend_status = summary.backend_status,
        client_addr = peer.map(|peer| tracing::field::display(peer.ip())),
        client_port = peer.map(|peer| peer.port()),
        request_id = identity.and_then(|i| i.request_id.as_deref()),
        user_id = identity.and_then(|i| i.user_id.as_deref()),
        "stream finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = bounded(Some(&long)).expect("kept");
        assert_eq!(cut.len(), MAX_ID_BYTES);
        assert!(long.starts_with(&*cut));
        assert_eq!(bounded(Some("req-1")).as_deref(), Some("req-1"));
        assert_eq!(bounded(None), None);
    }

    #[test]
    fn the_peer_of_a_tcp_socket_is_its_address_and_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, from) = listener.accept().expect("accept");
        let handoff =
            handoff_core::handoff::decode(br#"{"request_id":"r-9","user_id":"u-3"}"#).expect("decodes");
        let identity = Identity::new(&handoff, &accepted);
        assert_eq!(identity.peer, Some(from));
        assert_eq!(identity.peer.map(|p| p.port()), client.local_addr().ok().map(|a| a.port()));
        assert_eq!((identity.request_id.as_deref(), identity.user_id.as_deref()), (Some("r-9"), Some("u-3")));
        let (unix, _other) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert_eq!(Identity::new(&handoff, &unix).peer, None, "not an IP socket");
    }
}
