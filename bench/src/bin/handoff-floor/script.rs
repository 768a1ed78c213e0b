//! The bytes of one mock stream, taken once at start from core (the same code the
//! daemons' mock backend runs), so the floor writes what a daemon writes.
//!
//! A stream's output is one fixed sequence: the head, event 0 ("Connection #N
//! established.", the only part that differs per stream), events 1–17 and
//! `[DONE]`. Only the connection number is rendered per stream, on the stack; the
//! greeting and the prompt echo (events 1 and 2) are those of one handoff data
//! chosen at start (the standard workload's), because the floor does not parse
//! handoffs.

use bytes::BytesMut;
use handoff_core::mock::{self, EVENT_COUNT};
use handoff_core::{handoff, http1, sse};

/// Events due, from 0 to [`EVENT_COUNT`].
pub const EVENTS: u8 = EVENT_COUNT as u8;

/// Room for event 0 with the longest connection number (`u64::MAX`, 20 digits).
pub const EVENT0_ROOM: usize = 128;

/// Everything a stream writes, pre-built.
#[derive(Debug)]
pub struct Script {
    head: Vec<u8>,
    /// Event 0 up to the connection number, and after it.
    event0_prefix: Vec<u8>,
    event0_suffix: Vec<u8>,
    /// Events 1..=17, then `[DONE]`, back to back.
    tail: Vec<u8>,
    /// `tail_ends[j]`: where event `j + 1` ends in `tail`; the last also covers `[DONE]`,
    /// which the daemons write together with the last event.
    tail_ends: [u32; EVENTS as usize - 1],
}

/// Where a stream's bytes come from for one write.
pub enum Piece<'a> {
    Static(&'a [u8]),
    /// Event 0 for this connection number, from this offset.
    Event0 {
        number: u64,
        from: usize,
    },
}

impl Script {
    /// The script a daemon's mock backend runs for `data` (handoff JSON, decoded by
    /// core exactly as the daemons decode it), for any connection number.
    pub fn new(data: &str) -> Result<Script, String> {
        let handoff = handoff::decode(data.as_bytes()).map_err(|e| format!("the echo data {data:?}: {e}"))?;
        let user = handoff.user_id.as_deref().unwrap_or("anonymous");
        let prompt = handoff.last_user_text();
        let events = |number: u64| {
            let mut script = mock::Script::new(number, user, &prompt);
            let mut events = Vec::with_capacity(EVENTS as usize);
            let mut out = BytesMut::new();
            while script.write_next(&mut out) {
                events.push(out.split().to_vec());
            }
            events
        };
        let ones = events(1);
        if ones.len() != EVENTS as usize {
            return Err(format!("core's mock script has {} events, not {EVENTS}", ones.len()));
        }
        // Event 0 is the same for every stream but for the number: split it there.
        let marker = b"Connection #1 ";
        let first = &ones[0];
        let at = first
            .windows(marker.len())
            .position(|window| window == marker)
            .ok_or_else(|| format!("core's mock event 0 has no {marker:?}: {first:?}"))?;
        let digits_at = at + marker.len() - 2;
        let event0_prefix = first[..digits_at].to_vec();
        let event0_suffix = first[digits_at + 1..].to_vec();

        let mut tail = Vec::new();
        let mut tail_ends = [0u32; EVENTS as usize - 1];
        for (end, event) in tail_ends.iter_mut().zip(&ones[1..]) {
            tail.extend_from_slice(event);
            *end = u32::try_from(tail.len()).map_err(|_| "the mock script is over 4 GiB".to_owned())?;
        }
        tail.extend_from_slice(sse::DONE);
        if let Some(last) = tail_ends.last_mut() {
            *last = u32::try_from(tail.len()).map_err(|_| "the mock script is over 4 GiB".to_owned())?;
        }

        let script =
            Script { head: http1::client_head(&[]).to_vec(), event0_prefix, event0_suffix, tail, tail_ends };
        // The split must give back core's event 0 for any number, and events 1..17
        // must not depend on it.
        for number in [1, 9, 10, 123_456_789, u64::MAX] {
            let core = events(number);
            let mut ours = [0u8; EVENT0_ROOM];
            let ours = script.event0(number, &mut ours);
            if core.first().map(Vec::as_slice) != Some(ours) || core[1..] != ones[1..] {
                return Err(format!(
                    "core's mock script changed shape; event 0 for {number} is {:?}",
                    core[0]
                ));
            }
        }
        Ok(script)
    }

    pub fn head_len(&self) -> u32 {
        self.head.len() as u32
    }

    /// Length of event 0 for connection `number`.
    pub fn event0_len(&self, number: u64) -> u32 {
        (self.event0_prefix.len() + decimal_len(number) + self.event0_suffix.len()) as u32
    }

    /// Where the bytes due after `due` events end (the head is due from the start).
    pub fn due_end(&self, number: u64, due: u8) -> u32 {
        match due {
            0 => self.head_len(),
            1 => self.head_len() + self.event0_len(number),
            k => {
                let tail =
                    self.tail_ends.get(usize::from(k) - 2).or(self.tail_ends.last()).copied().unwrap_or(0);
                self.head_len() + self.event0_len(number) + tail
            }
        }
    }

    /// The bytes from `position` to the end of the part it lies in.
    pub fn piece(&self, number: u64, position: u32) -> Piece<'_> {
        let position = position as usize;
        let head = self.head.len();
        let event0_end = head + self.event0_len(number) as usize;
        if position < head {
            Piece::Static(&self.head[position..])
        } else if position < event0_end {
            Piece::Event0 { number, from: position - head }
        } else {
            Piece::Static(self.tail.get(position - event0_end..).unwrap_or_default())
        }
    }

    /// Event 0 for connection `number`, rendered into `buf`.
    pub fn event0<'b>(&self, number: u64, buf: &'b mut [u8; EVENT0_ROOM]) -> &'b [u8] {
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(slot) = buf.get_mut(len..len + bytes.len()) {
                slot.copy_from_slice(bytes);
                len += bytes.len();
            }
        };
        put(&self.event0_prefix);
        let mut digits = [0u8; 20];
        put(render_decimal(number, &mut digits));
        put(&self.event0_suffix);
        &buf[..len]
    }

    /// Checks that event 0 fits [`EVENT0_ROOM`] for every number.
    pub fn event0_fits(&self) -> bool {
        self.event0_len(u64::MAX) as usize <= EVENT0_ROOM
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn render_decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is below 10: the cast cannot truncate.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[start..];
        }
    }
}
