//! Reading a fuzzer's bytes as a script of small decisions.

/// The input, consumed from the front. Past its end every number reads as zero
/// and every slice as empty, so any input is a complete script.
pub(super) struct Script<'a> {
    bytes: &'a [u8],
}

impl<'a> Script<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Script { bytes }
    }

    pub(super) fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    pub(super) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub(super) fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub(super) fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// The next `len` bytes, or what is left.
    pub(super) fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }

    /// A length-prefixed run of bytes (length byte, then up to that many bytes).
    pub(super) fn run(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte());
        self.take(len)
    }

    /// Cut points for splitting the `len` bytes that will follow: a count byte,
    /// then that many (up to `max`) big-endian u16 positions.
    pub(super) fn cuts(&mut self, max: u8) -> Vec<u16> {
        let count = u16::from(self.byte()) % (u16::from(max) + 1);
        (0..count).map(|_| self.u16()).collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(super) fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// `input` as the pieces a reader would see with reads ending at `cuts` (taken
/// modulo the input length plus one, so every cut lands somewhere).
pub(super) fn split_at_cuts<'a>(input: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = cuts.iter().map(|&cut| usize::from(cut) % (input.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    let mut pieces = Vec::with_capacity(bounds.len());
    let mut start = 0;
    for end in bounds {
        pieces.push(input.get(start..end).unwrap_or_default());
        start = end;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_land_inside_the_input_and_pieces_rejoin_it() {
        let input = b"abcdefgh";
        // Cuts are taken modulo len + 1 = 9: 17 is 8, the end.
        let pieces = split_at_cuts(input, &[3, 17, 0]);
        assert_eq!(pieces, [&b""[..], b"abc", b"defgh", b""]);
        assert_eq!(pieces.concat(), input);
    }

    #[test]
    fn a_short_script_reads_as_zeros() {
        let mut script = Script::new(&[2, 0, 7, 1]);
        assert_eq!(script.cuts(8), [7, 0x100]);
        assert_eq!(script.u32(), 0);
        assert_eq!(script.run(), b"");
    }
}
