//! Where a read boundary falls must never change what the HTTP/1.1 readers see:
//! whole input, one byte at a time and random splits give the same head, the same
//! body bytes and the same error. And no byte sequence makes either reader panic.

use handoff_core::http1::{BodyDecoder, BodyEvent, BodyFraming, HttpError, ResponseHead, ResponseHeadParser};
use proptest::prelude::*;

/// What a body decode produced: the body, the bytes left after `End` (when it
/// came), and the error (when one came).
#[derive(Debug, PartialEq, Eq)]
struct BodyResult {
    body: Vec<u8>,
    rest_after_end: Option<Vec<u8>>,
    error: Option<HttpError>,
}

/// Feeds `input` cut at `cuts` as a connection reader would: append what arrived
/// to a pending buffer, decode until `NeedData`, drop what was consumed.
fn decode_split(framing: BodyFraming, input: &[u8], cuts: &[usize]) -> BodyResult {
    let mut decoder = BodyDecoder::new(framing);
    let mut result = BodyResult { body: Vec::new(), rest_after_end: None, error: None };
    let mut pending = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&cut| cut.min(input.len())).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut start = 0;
    for end in bounds {
        pending.extend_from_slice(&input[start..end]);
        start = end;
        loop {
            match decoder.decode(&pending) {
                Err(error) => {
                    result.error = Some(error);
                    return result;
                }
                Ok((used, BodyEvent::Data(data))) => {
                    assert!(!data.is_empty(), "Data events carry bytes");
                    assert!(used <= pending.len());
                    result.body.extend_from_slice(data);
                    pending.drain(..used);
                }
                Ok((used, BodyEvent::NeedData)) => {
                    assert_eq!(used, pending.len(), "NeedData means everything given was consumed");
                    pending.clear();
                    break;
                }
                Ok((used, BodyEvent::End)) => {
                    pending.drain(..used);
                    pending.extend_from_slice(&input[start..]);
                    result.rest_after_end = Some(pending);
                    return result;
                }
                // An event a newer core added: stop decoding, as every split of the
                // same input does, so the comparison between splits still holds.
                Ok(_) => return result,
            }
        }
    }
    result
}

fn byte_cuts(len: usize) -> Vec<usize> {
    (1..len).collect()
}

/// One chunk as a sender might write it.
#[derive(Debug, Clone)]
struct Chunk {
    data: Vec<u8>,
    upper_hex: bool,
    leading_zeros: usize,
    extension: &'static str,
    bare_lf: bool,
}

fn chunk() -> impl Strategy<Value = Chunk> {
    let extensions = prop::sample::select(vec!["", ";a", ";name=value", " ; q=\"x;y\"", "\t;k", ";a=1;b=2"]);
    (prop::collection::vec(any::<u8>(), 1..300), any::<bool>(), 0..3usize, extensions, any::<bool>())
        .prop_map(|(data, upper_hex, leading_zeros, extension, bare_lf)| Chunk {
            data,
            upper_hex,
            leading_zeros,
            extension,
            bare_lf,
        })
}

fn trailer() -> impl Strategy<Value = String> {
    ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}").prop_map(|(name, value)| format!("{name}: {value}"))
}

/// The chunked encoding of `chunks`, then the last chunk, `trailers` and the
/// blank line.
fn encode_chunked(chunks: &[Chunk], trailers: &[String], bare_lf_end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        let eol: &[u8] = if chunk.bare_lf { b"\n" } else { b"\r\n" };
        let size = if chunk.upper_hex {
            format!("{:X}", chunk.data.len())
        } else {
            format!("{:x}", chunk.data.len())
        };
        out.extend(std::iter::repeat_n(b'0', chunk.leading_zeros));
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(chunk.extension.as_bytes());
        out.extend_from_slice(eol);
        out.extend_from_slice(&chunk.data);
        out.extend_from_slice(eol);
    }
    let eol: &[u8] = if bare_lf_end { b"\n" } else { b"\r\n" };
    out.extend_from_slice(b"0");
    out.extend_from_slice(eol);
    for trailer in trailers {
        out.extend_from_slice(trailer.as_bytes());
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    out
}

const NEXT_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chunked_body_decodes_the_same_however_it_is_split(
        chunks in prop::collection::vec(chunk(), 0..8),
        trailers in prop::collection::vec(trailer(), 0..3),
        bare_lf_end in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut input = encode_chunked(&chunks, &trailers, bare_lf_end);
        input.extend_from_slice(NEXT_RESPONSE);
        let expected = BodyResult {
            body: chunks.iter().flat_map(|chunk| chunk.data.iter().copied()).collect(),
            rest_after_end: Some(NEXT_RESPONSE.to_vec()),
            error: None,
        };
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len())).collect();
        prop_assert_eq!(&decode_split(BodyFraming::Chunked, &input, &[]), &expected);
        prop_assert_eq!(&decode_split(BodyFraming::Chunked, &input, &byte_cuts(input.len())), &expected);
        prop_assert_eq!(&decode_split(BodyFraming::Chunked, &input, &cuts), &expected);
    }

    #[test]
    fn content_length_body_decodes_the_same_however_it_is_split(
        body in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut input = body.clone();
        input.extend_from_slice(NEXT_RESPONSE);
        let framing = BodyFraming::ContentLength(body.len() as u64);
        let expected = BodyResult { body, rest_after_end: Some(NEXT_RESPONSE.to_vec()), error: None };
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len())).collect();
        prop_assert_eq!(&decode_split(framing, &input, &[]), &expected);
        prop_assert_eq!(&decode_split(framing, &input, &byte_cuts(input.len())), &expected);
        prop_assert_eq!(&decode_split(framing, &input, &cuts), &expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_splits_agree_for_every_framing(
        input in prop::collection::vec(any::<u8>(), 0..400),
        length in 0u64..500,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len().max(1))).collect();
        for framing in [BodyFraming::Chunked, BodyFraming::ContentLength(length), BodyFraming::UntilClose] {
            let whole = decode_split(framing, &input, &[]);
            prop_assert_eq!(&decode_split(framing, &input, &byte_cuts(input.len())), &whole);
            prop_assert_eq!(&decode_split(framing, &input, &cuts), &whole);
        }
    }

    #[test]
    fn chunked_lookalike_bytes_never_panic(
        input in prop::collection::vec(
            prop::sample::select(b"0123456789abcdefABCDEF;= \t\r\nX:".to_vec()), 0..400),
    ) {
        let whole = decode_split(BodyFraming::Chunked, &input, &[]);
        prop_assert_eq!(&decode_split(BodyFraming::Chunked, &input, &byte_cuts(input.len())), &whole);
    }
}

/// Feeds the head parser a growing buffer, as a connection reader does, until it
/// answers; returns the answer and how many bytes had arrived by then.
fn parse_head_split(
    input: &[u8],
    cuts: &[usize],
) -> (Result<Option<(ResponseHead, usize)>, HttpError>, usize) {
    let mut parser = ResponseHeadParser::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|&cut| cut.min(input.len())).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut last = (Ok(None), 0);
    for end in bounds {
        let answer = parser.parse(&input[..end]);
        if let Ok(Some((_, len))) = &answer {
            assert!(*len <= end, "the head lies within the bytes given");
        }
        let done = !matches!(answer, Ok(None));
        last = (answer, end);
        if done {
            break;
        }
    }
    last
}

fn response_head() -> impl Strategy<Value = Vec<u8>> {
    let informational =
        prop::sample::select(vec!["", "HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 103 Hints\nLink: x\n\n"]);
    let framing = prop::sample::select(vec![
        "",
        "Content-Length: 12",
        "Content-Length: 3, 3",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
        "Content-Length: 4\r\nContent-Length: 5",
    ]);
    let connection =
        prop::sample::select(vec!["", "Connection: close", "Connection: keep-alive", "Connection: x, close"]);
    let headers = prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~]{0,60}"), 0..10);
    (
        informational,
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]),
        200u16..600,
        framing,
        connection,
        headers,
        any::<bool>(),
    )
        .prop_map(|(informational, version, status, framing, connection, headers, bare_lf)| {
            let eol = if bare_lf { "\n" } else { "\r\n" };
            let mut text = format!("{informational}{version} {status} Reason{eol}");
            for (name, value) in headers {
                text.push_str(&format!("X-{name}: {}{eol}", value.trim()));
            }
            for line in [framing, connection] {
                if !line.is_empty() {
                    text.push_str(&format!("{line}{eol}"));
                }
            }
            text.push_str(eol);
            text.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn response_head_parses_the_same_however_it_arrives(
        head in response_head(),
        body in prop::collection::vec(any::<u8>(), 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut input = head.clone();
        input.extend_from_slice(&body);
        let (whole, _) = parse_head_split(&input, &[]);
        // A well-formed head is found in full, ending where its bytes end; a
        // contradictory one is refused.
        match &whole {
            Ok(Some((_, len))) => prop_assert_eq!(*len, head.len()),
            Err(HttpError::BadFraming(_)) => {}
            other => prop_assert!(false, "unexpected answer {:?}", other),
        }
        let (bytewise, arrived) = parse_head_split(&input, &byte_cuts(input.len()));
        prop_assert_eq!(&bytewise, &whole);
        // Byte at a time, the answer comes the moment the head's last byte arrives.
        prop_assert_eq!(arrived, head.len());
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len())).collect();
        prop_assert_eq!(&parse_head_split(&input, &cuts).0, &whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_head_parser_and_splits_agree(
        input in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (whole, _) = parse_head_split(&input, &[]);
        prop_assert_eq!(&parse_head_split(&input, &byte_cuts(input.len())).0, &whole);
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(input.len().max(1))).collect();
        prop_assert_eq!(&parse_head_split(&input, &cuts).0, &whole);
    }

    #[test]
    fn head_lookalike_bytes_never_panic(
        prefix in prop::sample::select(vec!["HTTP/1.1 200 OK\r\n", "HTTP/1.1 100 Continue\r\n\r\n", "\r\n", ""]),
        input in prop::collection::vec(
            prop::sample::select(b"HTP/1.0 2345:\r\n\t-ContentLgkhudx,;".to_vec()), 0..400),
    ) {
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.extend_from_slice(&input);
        let (whole, _) = parse_head_split(&bytes, &[]);
        prop_assert_eq!(&parse_head_split(&bytes, &byte_cuts(bytes.len())).0, &whole);
    }
}

#[test]
fn a_large_head_trickled_one_byte_at_a_time_is_found() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while head.len() < 15 * 1024 {
        head.extend_from_slice(format!("X-Padding: {}\r\n", "a".repeat(400)).as_bytes());
    }
    head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let (answer, arrived) = parse_head_split(&head, &byte_cuts(head.len()));
    let (parsed, len) = answer.unwrap().unwrap();
    assert_eq!((parsed.framing, len, arrived), (BodyFraming::ContentLength(0), head.len(), head.len()));
}
