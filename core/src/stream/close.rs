//! How a client socket is closed once its stream is decided (or once an error
//! response is queued): what is left is flushed, bounded by the write timeout
//! without progress; writing is shut down; whatever the client still sends is
//! drained for the linger time, so unread request bytes never turn the close into
//! a reset that destroys the response's tail; then the fd is closed. A client
//! that is gone or stalled is closed at once: nothing more can reach it.
//!
//! Same shape as [`super::Stream`]: inputs through [`Closing::handle_input`],
//! outputs drained through [`Closing::poll_output`] until it returns
//! [`CloseOutput::Timeout`]. The outcome has already been counted and the stream's
//! admission slot released when this starts; this only bounds the fd's life.

use std::time::{Duration, Instant};

use super::{Outcome, StreamConfig};

/// What happened to the closing socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseInput {
    /// The client took this many more bytes.
    ClientTook(usize),
    /// Nothing waits to be written any more.
    Flushed,
    /// EOF or an error on the socket.
    ClientGone,
    /// Only time passed.
    Timeout,
}

/// What the runtime must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseOutput {
    /// Shut down writing (`shutdown(SHUT_WR)`), then keep reading and discarding
    /// until EOF; once, after `Flushed`.
    ShutdownWrite,
    /// Close the fd now; once, last.
    Close,
    /// Nothing to do before this instant or the next input.
    Timeout(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Writing what is left; the deadline is the write-stall bound.
    Flushing,
    /// Flushed: `ShutdownWrite` is still to be handed out.
    Flushed,
    /// Write side shut; the deadline is the end of the linger time.
    Lingering,
    /// `Close` is still to be handed out.
    Closing,
    Closed,
}

/// One socket's close.
#[derive(Debug, Clone)]
pub struct Closing {
    phase: Phase,
    deadline: Instant,
    write_timeout: Duration,
    linger: Duration,
    /// As in the stream: bytes that make progress, and those taken toward it.
    min_progress: usize,
    taken: usize,
}

impl Closing {
    /// The close after a stream's outcome: graceful unless the client is gone
    /// or stalled.
    pub fn after(now: Instant, config: &StreamConfig, outcome: &Outcome) -> Closing {
        let mut closing = Closing::graceful(now, config);
        if matches!(outcome, Outcome::ClientGone | Outcome::ClientStalled) {
            closing.phase = Phase::Closing;
        }
        closing
    }

    /// A graceful close: flush, shut down writing, linger, close.
    pub fn graceful(now: Instant, config: &StreamConfig) -> Closing {
        Closing {
            phase: Phase::Flushing,
            deadline: now + config.write_timeout,
            write_timeout: config.write_timeout,
            linger: config.linger,
            min_progress: config.min_write_progress,
            taken: 0,
        }
    }

    /// Feeds what happened to the socket at `now` (the runtime's monotonic
    /// clock). While [`Closing::is_flushing`] the runtime writes what is left
    /// and reports `ClientTook` per write and `Flushed` once nothing waits;
    /// afterwards it reports EOF or an error as `ClientGone`. In either phase,
    /// `Timeout` when the armed instant passes. Every input also checks the
    /// deadline, so a passed one closes even without `Timeout`.
    /// Inputs after `Close` was decided are ignored.
    pub fn handle_input(&mut self, now: Instant, input: CloseInput) {
        match (self.phase, input) {
            (Phase::Closing | Phase::Closed, _) => return,
            (_, CloseInput::ClientGone) => self.phase = Phase::Closing,
            (Phase::Flushing, CloseInput::ClientTook(taken)) => {
                self.taken = self.taken.saturating_add(taken);
                if taken > 0 && self.taken >= self.min_progress {
                    self.taken = 0;
                    self.deadline = now + self.write_timeout;
                }
            }
            (Phase::Flushing, CloseInput::Flushed) => {
                self.phase = Phase::Flushed;
                self.deadline = now + self.linger;
            }
            _ => {}
        }
        if matches!(self.phase, Phase::Flushing | Phase::Lingering) && now >= self.deadline {
            self.phase = Phase::Closing;
        }
    }

    /// The next thing to do; call after every input until it returns
    /// [`CloseOutput::Timeout`], then arm a timer for that instant. After
    /// [`CloseOutput::Close`] (once, last) the runtime closes the fd; any later
    /// `Timeout` is far away and means nothing.
    pub fn poll_output(&mut self) -> CloseOutput {
        match self.phase {
            Phase::Flushed => {
                self.phase = Phase::Lingering;
                CloseOutput::ShutdownWrite
            }
            Phase::Closing => {
                self.phase = Phase::Closed;
                CloseOutput::Close
            }
            Phase::Flushing | Phase::Lingering => CloseOutput::Timeout(self.deadline),
            // Far away and meaningless: the socket is closed.
            Phase::Closed => CloseOutput::Timeout(self.deadline + Duration::from_secs(3600)),
        }
    }

    /// True while bytes are still being flushed (the runtime writes and reports
    /// `ClientTook` / `Flushed`); afterwards it only watches for EOF.
    pub fn is_flushing(&self) -> bool {
        self.phase == Phase::Flushing
    }

    /// True once `Close` has been handed out.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::FailureReason;

    #[allow(clippy::disallowed_methods)] // Any instant will do; the tests move from it.
    fn origin() -> Instant {
        Instant::now()
    }

    fn config() -> StreamConfig {
        StreamConfig {
            write_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(2),
            min_write_progress: 100,
            ..StreamConfig::default()
        }
    }

    fn drain(closing: &mut Closing) -> Vec<CloseOutput> {
        let mut outputs = Vec::new();
        for _ in 0..4 {
            let output = closing.poll_output();
            outputs.push(output);
            if matches!(output, CloseOutput::Timeout(_)) {
                return outputs;
            }
        }
        panic!("no Timeout after four outputs: {outputs:?}");
    }

    #[test]
    fn a_completed_stream_flushes_shuts_down_lingers_and_closes() {
        let t0 = origin();
        let mut closing = Closing::after(t0, &config(), &Outcome::Completed);
        assert_eq!(drain(&mut closing), [CloseOutput::Timeout(t0 + Duration::from_secs(30))]);
        assert!(closing.is_flushing());
        closing.handle_input(t0 + Duration::from_secs(1), CloseInput::Flushed);
        let lingered = t0 + Duration::from_secs(3);
        assert_eq!(drain(&mut closing), [CloseOutput::ShutdownWrite, CloseOutput::Timeout(lingered)]);
        closing.handle_input(lingered, CloseInput::Timeout);
        assert_eq!(drain(&mut closing)[0], CloseOutput::Close);
        assert!(closing.is_closed());
    }

    #[test]
    fn eof_while_lingering_closes_at_once() {
        let t0 = origin();
        let mut closing = Closing::graceful(t0, &config());
        closing.handle_input(t0, CloseInput::Flushed);
        drain(&mut closing);
        closing.handle_input(t0 + Duration::from_millis(5), CloseInput::ClientGone);
        assert_eq!(drain(&mut closing)[0], CloseOutput::Close);
    }

    #[test]
    fn gone_or_stalled_clients_are_closed_without_a_flush() {
        let t0 = origin();
        for outcome in [Outcome::ClientGone, Outcome::ClientStalled] {
            let mut closing = Closing::after(t0, &config(), &outcome);
            assert!(!closing.is_flushing());
            assert_eq!(drain(&mut closing)[0], CloseOutput::Close, "{outcome:?}");
        }
        let failed = Outcome::Failed(FailureReason::IdleTimeout);
        assert!(Closing::after(t0, &config(), &failed).is_flushing());
    }

    #[test]
    fn progress_extends_the_flush_and_a_stall_ends_it() {
        let t0 = origin();
        let mut closing = Closing::graceful(t0, &config());
        let later = t0 + Duration::from_secs(20);
        closing.handle_input(later, CloseInput::ClientTook(100));
        assert_eq!(drain(&mut closing), [CloseOutput::Timeout(later + Duration::from_secs(30))]);
        // Taking nothing is no progress, and neither is a trickle below the floor.
        closing.handle_input(later + Duration::from_secs(29), CloseInput::ClientTook(0));
        closing.handle_input(later + Duration::from_secs(29), CloseInput::ClientTook(99));
        assert_eq!(drain(&mut closing), [CloseOutput::Timeout(later + Duration::from_secs(30))]);
        closing.handle_input(later + Duration::from_secs(30), CloseInput::Timeout);
        assert_eq!(drain(&mut closing)[0], CloseOutput::Close);
        // Nothing after Close.
        closing.handle_input(later + Duration::from_secs(31), CloseInput::Flushed);
        assert!(matches!(drain(&mut closing)[0], CloseOutput::Timeout(_)));
    }

    #[test]
    fn a_late_wake_up_still_closes() {
        let t0 = origin();
        let mut closing = Closing::graceful(t0, &config());
        closing.handle_input(t0 + Duration::from_secs(90), CloseInput::Timeout);
        assert_eq!(drain(&mut closing)[0], CloseOutput::Close);
    }
}
