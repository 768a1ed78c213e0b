//! Micro-benchmarks of the per-event hot paths: SSE decoding, chunk extraction, the
//! stream machine, and handoff decoding.
//!
//! `cargo bench -p handoff-core --bench hot_paths` runs them (about a minute with the
//! short defaults below; criterion's own flags such as `--measurement-time` override
//! them). `cargo test` only checks that each runs once.
//!
//! The upstream body is the shape OpenAI sends: a role chunk, many small content
//! chunks with every metadata field real responses carry, a finish chunk and
//! `[DONE]`, built from the recorded fixture in `tests/fixtures/openai/`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use handoff_core::http1::CLIENT_HEAD;
use handoff_core::mock::{Script, EVENT_COUNT};
use handoff_core::openai::{parse_chunk, ChunkEvent};
use handoff_core::sse::SseDecoder;
use handoff_core::stream::{Input, Output, Source, Stream, StreamConfig};
use handoff_core::{handoff, mock};

/// A recorded OpenAI stream: role chunk, content chunks, finish chunk, `[DONE]`.
const FIXTURE: &str = include_str!("../tests/fixtures/openai/chat_stream.sse");

/// The handoff data the load generator and mod_socket_handoff benchmarks send.
const STANDARD_HANDOFF: &[u8] = br#"{"prompt":"benchmark test","user_id":1}"#;

/// Content chunks in the synthetic long stream (a medium-length answer).
const CONTENT_EVENTS: usize = 256;

/// Tokens the long stream cycles through: short words with leading spaces, a
/// newline and a quote (JSON escapes), as model output has.
const TOKENS: [&str; 8] = [" the", " daemon", " streams", " tokens", ",", "\\n", " \\\"quoted\\\"", " ok"];

/// Short runs by default: these are for spotting regressions and orders of
/// magnitude on a shared machine, not for publication.
fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// The events of the fixture, each with its blank line.
fn fixture_events() -> Vec<&'static str> {
    FIXTURE.split_inclusive("\n\n").collect()
}

/// A long realistic body: the fixture's role chunk, `CONTENT_EVENTS` chunks shaped
/// exactly like the fixture's content chunks, its finish chunk and `[DONE]`.
fn long_stream_events() -> Vec<String> {
    let events = fixture_events();
    let content_template = events
        .iter()
        .find(|event| event.contains(r#""delta":{"content":"Hello"}"#))
        .expect("the fixture has a \"Hello\" content chunk");
    let mut out = vec![events[0].to_owned()];
    for i in 0..CONTENT_EVENTS {
        let token = TOKENS[i % TOKENS.len()];
        out.push(content_template.replace(r#""content":"Hello""#, &format!(r#""content":"{token}""#)));
    }
    // The fixture ends with the finish chunk and `[DONE]`.
    out.extend(events[events.len() - 2..].iter().map(|event| (*event).to_owned()));
    out
}

fn long_stream_body() -> Vec<u8> {
    long_stream_events().concat().into_bytes()
}

/// Decodes `reads` in order; returns the number of events (so nothing is optimised away).
fn decode_all<'a>(reads: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut decoder = SseDecoder::default();
    let mut events = 0;
    for read in reads {
        let mut rest = read;
        while let Ok((consumed, Some(event))) = decoder.decode(rest) {
            black_box(event.data);
            events += 1;
            rest = rest.get(consumed..).unwrap_or_default();
        }
    }
    events
}

fn sse_decoding(c: &mut Criterion) {
    let body = long_stream_body();
    let mut group = c.benchmark_group("sse_decode");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("whole_body", |b| b.iter(|| decode_all(std::iter::once(black_box(&body[..])))));
    group.bench_function("1KiB_reads", |b| b.iter(|| decode_all(black_box(&body).chunks(1024))));
    group.finish();
}

fn chunk_extraction(c: &mut Criterion) {
    let events = long_stream_events();
    let payloads: Vec<&str> = events
        .iter()
        .map(|event| event.trim_end().strip_prefix("data: ").expect("every event is one data line"))
        .collect();
    let typical = payloads[1];
    let mut group = c.benchmark_group("parse_chunk");
    group.throughput(Throughput::Elements(1));
    group.bench_function("content_delta", |b| {
        b.iter(|| match parse_chunk(black_box(typical)) {
            Ok(ChunkEvent::Delta { content, .. }) => content.map_or(0, |text| text.len()),
            _ => 0,
        })
    });
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("whole_stream", |b| {
        b.iter(|| payloads.iter().filter(|payload| parse_chunk(black_box(payload)).is_ok()).count())
    });
    group.finish();
}

#[allow(clippy::disallowed_methods)] // One reading of the clock; the machine only sees offsets.
fn clock_origin() -> Instant {
    Instant::now()
}

/// Drains a stream as a runtime does; returns the bytes it would write.
fn drain(stream: &mut Stream) -> usize {
    let mut written = 0;
    loop {
        match stream.poll_output() {
            Output::Write(bytes) => written += bytes.len(),
            Output::Timeout(_) => return written,
            Output::CancelBackend | Output::CloseClient | Output::Done(_) => {}
        }
    }
}

fn stream_machine(c: &mut Criterion) {
    let config = StreamConfig::default();
    let head = Bytes::from_static(CLIENT_HEAD);
    let events = long_stream_events();
    let start = clock_origin();
    let mut group = c.benchmark_group("stream_per_event");

    // One upstream event per read, as a slow stream delivers them; per content event.
    group.throughput(Throughput::Elements(CONTENT_EVENTS as u64));
    group.bench_function("openai_event_reads", |b| {
        b.iter_batched(
            || {
                let mut stream = Stream::new(start, &config, head.clone(), Source::Backend);
                stream.handle_input(start, Input::BackendHead { status: 200 });
                drain(&mut stream);
                stream
            },
            |mut stream| {
                let mut written = 0;
                for (i, event) in events.iter().enumerate() {
                    let now = start + Duration::from_millis(i as u64);
                    stream.handle_input(now, Input::BackendData(event.as_bytes()));
                    written += drain(&mut stream);
                }
                stream.handle_input(start + Duration::from_secs(1), Input::BackendEnd);
                written + drain(&mut stream)
            },
            BatchSize::SmallInput,
        )
    });

    // The mock script paced by the machine's own deadlines; per content event.
    let mock_config = StreamConfig { mock_delay: Duration::from_millis(705), ..StreamConfig::default() };
    group.throughput(Throughput::Elements(u64::from(EVENT_COUNT)));
    group.bench_function("mock_script", |b| {
        b.iter(|| {
            let script = Script::new(1, "1", "benchmark test");
            let mut stream = Stream::new(start, &mock_config, head.clone(), Source::Mock(script));
            let mut written = drain(&mut stream);
            let mut now = start;
            // EVENT_COUNT wake-ups and one to finish; bounded for a machine that misbehaves.
            for _ in 0..=mock::EVENT_COUNT * 2 {
                if stream.is_finished() {
                    break;
                }
                now += mock_config.mock_delay;
                stream.handle_input(now, Input::Timeout);
                written += drain(&mut stream);
            }
            written
        })
    });
    group.finish();
}

fn handoff_decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("handoff_decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("standard_data", |b| {
        b.iter(|| handoff::decode(black_box(STANDARD_HANDOFF)).map(|h| h.user_id.is_some()))
    });
    group.finish();
}

criterion_group! {
    name = hot_paths;
    config = quick();
    targets = sse_decoding, chunk_extraction, stream_machine, handoff_decoding
}
criterion_main!(hot_paths);
