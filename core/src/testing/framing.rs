//! The `http1` target: where reads end never changes the heads, the body bytes or
//! the error a backend connection reader sees.

use super::script::{split_at_cuts, Script};
use crate::http1::{BodyDecoder, BodyEvent, BodyFraming, HttpError, ResponseHead, ResponseHeadParser};

/// Keep-alive responses followed on one connection.
const MAX_RESPONSES: usize = 4;

#[derive(Debug, PartialEq, Eq)]
struct Response {
    head: ResponseHead,
    /// Bytes of the head, counting skipped 1xx heads and blank lines before it.
    head_len: usize,
    body: Vec<u8>,
    /// The body reached its end (`BodyEvent::End`).
    complete: bool,
}

/// How reading the connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The input ended between responses.
    Clean,
    /// The input ended inside a head, this many bytes into it.
    InHead(usize),
    /// The input ended inside a body: what `finish()` said.
    InBody(Result<(), HttpError>),
    /// A response without keep-alive ended (or the last one followed); this many
    /// bytes came after it.
    Stopped {
        trailing: usize,
    },
    Failed(HttpError),
}

#[derive(Debug, PartialEq, Eq)]
struct Exchange {
    responses: Vec<Response>,
    end: End,
}

enum Reading {
    Head(ResponseHeadParser),
    Body(BodyDecoder),
}

pub(super) fn check(data: &[u8]) -> Result<(), String> {
    let mut script = Script::new(data);
    let cuts = script.cuts(8);
    let stream = script.rest();

    let whole = read(&[stream])?;
    let cut = read(&split_at_cuts(stream, &cuts))?;
    if cut != whole {
        return Err(format!("cut at {cuts:?}: {cut:?}\nwhole: {whole:?}"));
    }
    let bytewise = read(&stream.chunks(1).collect::<Vec<_>>())?;
    if bytewise != whole {
        return Err(format!("one byte at a time: {bytewise:?}\nwhole: {whole:?}"));
    }
    Ok(())
}

/// Reads `pieces` as a connection reader does: append each read to a pending
/// buffer, give the head parser all of it and the body decoder what it has not
/// consumed, and drop what was consumed.
fn read(pieces: &[&[u8]]) -> Result<Exchange, String> {
    let total: usize = pieces.iter().map(|piece| piece.len()).sum();
    let mut consumed = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut responses: Vec<Response> = Vec::new();
    let mut reading = Reading::Head(ResponseHeadParser::new());
    for piece in pieces {
        pending.extend_from_slice(piece);
        // Every turn but the last consumes a byte or ends a head or a body.
        let max_turns = 2 * (pending.len() + MAX_RESPONSES) + 2;
        let mut turns = 0;
        loop {
            turns += 1;
            if turns > max_turns {
                return Err(format!("no progress with {} bytes pending", pending.len()));
            }
            match &mut reading {
                Reading::Head(parser) => match parser.parse(&pending) {
                    Err(error) => return Ok(Exchange { responses, end: End::Failed(error) }),
                    Ok(None) => break,
                    Ok(Some((head, len))) => {
                        if len == 0 || len > pending.len() {
                            return Err(format!("a head of {len} bytes in {} pending", pending.len()));
                        }
                        check_head(&head)?;
                        pending.drain(..len);
                        consumed += len;
                        reading = Reading::Body(BodyDecoder::new(head.framing));
                        responses.push(Response { head, head_len: len, body: Vec::new(), complete: false });
                    }
                },
                Reading::Body(decoder) => {
                    let (used, event) = match decoder.decode(&pending) {
                        Err(error) => return Ok(Exchange { responses, end: End::Failed(error) }),
                        Ok(decoded) => decoded,
                    };
                    if used > pending.len() {
                        return Err(format!("the body decoder used {used} of {} bytes", pending.len()));
                    }
                    let Some(response) = responses.last_mut() else {
                        return Err("a body without a head".to_owned());
                    };
                    match event {
                        BodyEvent::Data(data) => {
                            if data.is_empty() || data.len() > used {
                                return Err(format!("Data of {} bytes after using {used}", data.len()));
                            }
                            response.body.extend_from_slice(data);
                        }
                        BodyEvent::NeedData if used != pending.len() => {
                            return Err(format!("NeedData after using {used} of {} bytes", pending.len()));
                        }
                        BodyEvent::NeedData => {
                            pending.clear();
                            consumed += used;
                            break;
                        }
                        BodyEvent::End => {
                            response.complete = true;
                            let keep_alive = response.head.keep_alive;
                            pending.drain(..used);
                            consumed += used;
                            if !keep_alive || responses.len() == MAX_RESPONSES {
                                let end = End::Stopped { trailing: total - consumed };
                                return Ok(Exchange { responses, end });
                            }
                            reading = Reading::Head(ResponseHeadParser::new());
                            continue;
                        }
                    }
                    pending.drain(..used);
                    consumed += used;
                }
            }
        }
    }
    let end = match reading {
        Reading::Head(_) if pending.is_empty() => End::Clean,
        Reading::Head(_) => End::InHead(pending.len()),
        Reading::Body(mut decoder) => End::InBody(decoder.finish()),
    };
    Ok(Exchange { responses, end })
}

/// What a parsed head may never say.
fn check_head(head: &ResponseHead) -> Result<(), String> {
    if !(200..=999).contains(&head.status) {
        return Err(format!("final head with status {}", head.status));
    }
    if head.framing == BodyFraming::UntilClose && head.keep_alive {
        return Err(format!("{head:?}: a body read until close cannot keep the connection"));
    }
    if matches!(head.status, 204 | 304) && head.framing != BodyFraming::ContentLength(0) {
        return Err(format!("{head:?}: a {} has no body", head.status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_follows_keep_alive_responses_and_stops_at_close() {
        let stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhiEXTRA";
        let exchange = read(&[stream]).unwrap();
        let bodies: Vec<&[u8]> = exchange.responses.iter().map(|response| response.body.as_slice()).collect();
        assert_eq!(bodies, [&b"hello"[..], b"hi"]);
        assert!(exchange.responses.iter().all(|response| response.complete));
        assert_eq!(exchange.end, End::Stopped { trailing: 5 });
        assert_eq!(read(&stream.chunks(1).collect::<Vec<_>>()).unwrap(), exchange);
    }

    #[test]
    fn the_reader_reports_where_the_input_ended() {
        let truncated = read(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"]).unwrap();
        assert_eq!(truncated.end, End::InBody(Err(HttpError::Truncated)));
        assert_eq!(read(&[b"HTTP/1.1 200 OK\r\n"]).unwrap().end, End::InHead(17));
        let bad = read(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]).unwrap();
        assert_eq!(bad.end, End::Failed(HttpError::BadChunk("invalid chunk size")));
    }
}
