//! Plays a [`Reply`] onto a protocol's response sink: head, pauses, chunks, ending.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::recorder::StreamOutcome;
use super::render::{EmptyChunk, DONE_EVENT, ERROR_EVENT};
use super::request::Reply;
use super::script::Ending;

/// The least pause before a `reset:N` cut, for a zero token delay.
const MIN_RESET_PAUSE: Duration = Duration::from_millis(5);

/// The client went away (reset the stream, closed the connection, or a write failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientGone;

/// One response on the wire, implemented per protocol.
pub(crate) trait ResponseSink {
    /// Waits until `deadline`; returns `ClientGone` as soon as the client cancels.
    async fn idle_until(&mut self, deadline: Instant) -> Result<(), ClientGone>;
    /// Sends a complete `status` response with a JSON `body`.
    async fn send_error(&mut self, status: u16, body: Bytes) -> Result<(), ClientGone>;
    /// Sends the `200` event-stream head.
    async fn send_stream_head(&mut self) -> Result<(), ClientGone>;
    /// Sends one event; `is_last` also ends the body cleanly.
    async fn send_event(&mut self, event: Bytes, is_last: bool) -> Result<(), ClientGone>;
    /// Ends the body cleanly without another event.
    async fn end(&mut self) -> Result<(), ClientGone>;
    /// Cuts the stream abruptly.
    fn reset(&mut self);
}

/// Plays `reply` to its end and says how it ended.
pub(crate) async fn play<S: ResponseSink>(reply: Reply, sink: &mut S) -> StreamOutcome {
    match play_until_gone(reply, sink).await {
        Ok(outcome) => outcome,
        Err(ClientGone) => StreamOutcome::Cancelled,
    }
}

async fn play_until_gone<S: ResponseSink>(reply: Reply, sink: &mut S) -> Result<StreamOutcome, ClientGone> {
    let (script, prefix, usage) = match reply {
        Reply::Error { status, body, head_delay } => {
            if !head_delay.is_zero() {
                sink.idle_until(Instant::now() + head_delay).await?;
            }
            sink.send_error(status, body).await?;
            return Ok(StreamOutcome::Completed);
        }
        Reply::Stream { script, prefix, usage } => (script, prefix, usage),
        Reply::Events { events, delay } => {
            sink.send_stream_head().await?;
            let count = events.len();
            for (index, event) in events.into_iter().enumerate() {
                if index > 0 && !delay.is_zero() {
                    sink.idle_until(Instant::now() + delay).await?;
                }
                sink.send_event(event, index + 1 == count).await?;
            }
            if count == 0 {
                sink.end().await?;
            }
            return Ok(StreamOutcome::Completed);
        }
    };
    if !script.head_delay.is_zero() {
        sink.idle_until(Instant::now() + script.head_delay).await?;
    }
    sink.send_stream_head().await?;
    if !script.body_delay.is_zero() {
        sink.idle_until(Instant::now() + script.body_delay).await?;
    }
    // One buffer per stream: once the protocol has written a chunk and dropped it,
    // `reserve` reclaims the same allocation for the next one.
    let mut buf = BytesMut::new();
    prefix.render_role(&mut buf);
    sink.send_event(buf.split().freeze(), false).await?;
    for index in 0..script.empty_chunks {
        prefix.render_empty(EmptyChunk::nth(index), index, &mut buf);
        sink.send_event(buf.split().freeze(), false).await?;
    }
    // Deadlines advance from the previous deadline, not from "now", so slow wakeups
    // do not stretch the stream.
    let mut deadline = Instant::now();
    for index in 0..script.content_chunks {
        deadline += script.token_delay;
        sink.idle_until(deadline).await?;
        prefix.render_content(script.content.token(index), &mut buf);
        sink.send_event(buf.split().freeze(), false).await?;
    }
    match script.ending {
        Ending::Finish(reason) => {
            prefix.render_finish(&reason, &mut buf);
            sink.send_event(buf.split().freeze(), false).await?;
            if usage {
                prefix.render_usage(script.content_chunks, &mut buf);
                sink.send_event(buf.split().freeze(), false).await?;
            }
            sink.send_event(Bytes::from_static(DONE_EVENT), true).await?;
        }
        Ending::Abort => sink.end().await?,
        Ending::ErrorEvent => sink.send_event(Bytes::from_static(ERROR_EVENT), true).await?,
        Ending::Reset => {
            // The cut comes a token delay after the last chunk. The pause is counted from
            // now, not from the schedule, because it also lets HTTP/2 write the queued
            // chunks out first: h2 drops a stream's unsent data on reset.
            sink.idle_until(Instant::now() + script.token_delay.max(MIN_RESET_PAUSE)).await?;
            sink.reset();
            return Ok(StreamOutcome::Reset);
        }
        // Already answered as `Reply::Error` by `request::decide`.
        Ending::Status(_) => sink.end().await?,
    }
    Ok(StreamOutcome::Completed)
}
