//! One module connection, start to end, on its own thread: receive the handoff,
//! let core admit it, then run core's stream machine (or write core's refusal)
//! and close as core's `Closing` says. Every decision below is core's.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use handoff_core::stream::close::{CloseInput, CloseOutput, Closing};
use handoff_core::stream::{Input, Outcome, Output, Source, Stream};
use handoff_core::{admission, http1, mock};

use crate::client::{Client, Event};
use crate::listener::{self, Received};
use crate::Shared;

pub fn serve(shared: &Shared, conn: OwnedFd) {
    let config = &shared.config;
    let deadline = Instant::now() + config.receive_timeout;
    let (fd, decoded) = match listener::receive(&conn, config.socket_type, deadline) {
        Ok(Received::Client(fd, decoded)) => (fd, *decoded),
        Ok(Received::Dropped(why)) => return eprintln!("handoff-blocking: handoff dropped: {why}"),
        Err(error) => return eprintln!("handoff-blocking: receiving a handoff failed: {error}"),
    };
    drop(conn);
    // Best effort: the fd may be any stream socket.
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
    if config.stream.client_send_buffer > 0 {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, config.stream.client_send_buffer);
    }
    let mut client = Client::new(fd);
    let draining = shared.draining.load(Ordering::Acquire) && config.socket_origin.refuses_late_handoffs();
    match admission::admit(&shared.limits, draining, decoded) {
        Err(refusal) => {
            eprintln!("handoff-blocking: handoff refused: {refusal}");
            client.push(refusal.response(config.retry_after_secs));
            close(&mut client, Closing::graceful(Instant::now(), &config.stream));
        }
        Ok((handoff, admission)) => {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let script = mock::Script::for_handoff(id, &handoff);
            let head = http1::client_head(&handoff.response_headers);
            let machine = Stream::new(Instant::now(), &config.stream, head, Source::Mock(script));
            drop(handoff);
            let outcome = run(&mut client, machine, shared.stop.as_fd());
            shared.limits.record_outcome(&outcome);
            drop(admission);
            close(&mut client, Closing::after(Instant::now(), &config.stream, &outcome));
        }
    }
    shared.limits.add_bytes_sent(client.sent);
}

/// Core's drain rule: take outputs until `Timeout`, block until that deadline or
/// the next event, feed it back; until `Done`.
fn run(client: &mut Client, mut machine: Stream, stop: BorrowedFd<'_>) -> Outcome {
    let mut stop = Some(stop);
    loop {
        let deadline = loop {
            match machine.poll_output() {
                Output::Write(bytes) => client.push(bytes),
                // A mock stream has no backend; the close follows `Done`.
                Output::CancelBackend | Output::CloseClient => {}
                Output::Done(outcome) => return outcome,
                Output::Timeout(deadline) => break deadline,
            }
        };
        let input = match client.next_event(deadline, stop) {
            Event::Took(taken) => Input::ClientTook(taken),
            Event::Gone => Input::ClientGone,
            Event::Stop => {
                // Once: the stop fd stays readable.
                stop = None;
                Input::Shutdown
            }
            Event::Timeout => Input::Timeout,
        };
        machine.handle_input(Instant::now(), input);
    }
}

/// Carries out a `Closing`: flush, shut down writing, linger, close (the fd
/// closes when the caller drops the client).
fn close(client: &mut Client, mut closing: Closing) {
    loop {
        let deadline = match closing.poll_output() {
            CloseOutput::Close => return,
            CloseOutput::ShutdownWrite => {
                if client.shutdown_write().is_err() {
                    closing.handle_input(Instant::now(), CloseInput::ClientGone);
                }
                continue;
            }
            CloseOutput::Timeout(deadline) => deadline,
            // An output this runtime does not know (a newer core): closing now is safe.
            _ => return,
        };
        if closing.is_flushing() && !client.has_pending() {
            closing.handle_input(Instant::now(), CloseInput::Flushed);
            continue;
        }
        let input = match client.next_event(deadline, None) {
            Event::Took(taken) => CloseInput::ClientTook(taken),
            Event::Gone => CloseInput::ClientGone,
            Event::Stop | Event::Timeout => CloseInput::Timeout,
        };
        closing.handle_input(Instant::now(), input);
    }
}
