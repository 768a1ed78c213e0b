//! The passthrough splitter ([`crate::sse::RawEvents`]), differential: whole,
//! cut, and one byte at a time it must release the same bytes, those bytes must
//! be the input up to its last event boundary exactly, and what it holds must
//! stay within its limit.

use bytes::BytesMut;

use crate::sse::RawEvents;

/// Layout: `[limit byte, cut count, cuts as u16 BE..., stream...]`; the limit is
/// 16 bytes times the first byte plus one.
pub(super) fn check(data: &[u8]) -> Result<(), String> {
    let Some((&limit, rest)) = data.split_first() else { return Ok(()) };
    let limit = 16 * (usize::from(limit) + 1);
    let Some((&count, mut rest)) = rest.split_first() else { return Ok(()) };
    let mut cuts = Vec::new();
    for _ in 0..count {
        let Some((pair, tail)) = rest.split_first_chunk::<2>() else { break };
        cuts.push(usize::from(u16::from_be_bytes(*pair)));
        rest = tail;
    }
    let stream = rest;
    let whole = split(limit, &[stream])?;
    cuts.retain(|cut| *cut <= stream.len());
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts {
        pieces.push(stream.get(at..cut).unwrap_or_default());
        at = cut;
    }
    pieces.push(stream.get(at..).unwrap_or_default());
    let cut = split(limit, &pieces)?;
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let single = split(limit, &bytes)?;
    if whole != cut || whole != single {
        return Err(format!("whole {whole:?}, cut {cut:?}, one byte at a time {single:?} differ"));
    }
    let (released, failed) = whole;
    if !stream.starts_with(&released) {
        return Err("released bytes are not the input's own".to_owned());
    }
    if !failed && released.len() != last_boundary(stream) {
        return Err(format!(
            "released {} bytes; the last event ends at {}",
            released.len(),
            last_boundary(stream)
        ));
    }
    Ok(())
}

/// What the splitter released and whether it refused an event as too large.
fn split(limit: usize, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), String> {
    let mut raw = RawEvents::new(limit);
    let mut out = BytesMut::new();
    for piece in pieces {
        if raw.feed(piece, &mut out).is_err() {
            return Ok((out.to_vec(), true));
        }
        if raw.buffered_capacity() > 2 * limit + 64 {
            return Err(format!("holds {} bytes with a {limit}-byte limit", raw.buffered_capacity()));
        }
    }
    Ok((out.to_vec(), false))
}

/// Where the last event of `stream` ends, by WHATWG's line rules written the
/// plain way: after a line terminator (CR, LF, or CRLF) that ends an empty line.
fn last_boundary(stream: &[u8]) -> usize {
    let mut end = 0;
    let mut line_empty = true;
    let mut i = 0;
    while let Some(&byte) = stream.get(i) {
        match byte {
            b'\r' | b'\n' => {
                if line_empty {
                    end = i + 1;
                }
                // A CRLF is one terminator: its LF is skipped here.
                if byte == b'\r' && stream.get(i + 1) == Some(&b'\n') && !line_empty {
                    i += 1;
                } else if byte == b'\r' && stream.get(i + 1) == Some(&b'\n') && line_empty {
                    // The blank line's CR ended the event; its LF starts the next.
                    i += 1;
                    line_empty = true;
                    i += 1;
                    continue;
                }
                line_empty = true;
            }
            _ => line_empty = false,
        }
        i += 1;
    }
    end
}
