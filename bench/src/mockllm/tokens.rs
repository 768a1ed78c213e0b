//! The content the mock streams: fixed token tables, each token kept both as the text a
//! client should reassemble and as the JSON string body that goes on the wire, so no
//! escaping happens per token.

use std::sync::LazyLock;

/// One content token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// What `delta.content` decodes to.
    pub text: &'static str,
    /// The same text as JSON string contents (without the quotes), as sent.
    pub json: &'static str,
}

/// Which token table a stream draws from (`X-Test-Pattern`: default, `unicode`,
/// `short`, `long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentKind {
    /// Lorem-ish words, with a quote and a newline among them (escapes are common in
    /// real completions).
    #[default]
    Text,
    /// Multi-byte text: 2-, 3- and 4-byte characters, emoji sequences, combining marks,
    /// right-to-left script, and `\u` escapes including a surrogate pair.
    Unicode,
    /// Tokens of 1 or 2 bytes, each valid UTF-8 by itself.
    Short,
    /// About 4 KiB of content per chunk.
    Long,
}

const fn same(text: &'static str) -> Token {
    Token { text, json: text }
}

static TEXT: [Token; 24] = [
    same("Lorem"),
    same(" ipsum"),
    same(" dolor"),
    same(" sit"),
    same(" amet,"),
    same(" consectetur"),
    same(" adipiscing"),
    same(" elit."),
    Token { text: "\n", json: "\\n" },
    same("Sed"),
    same(" do"),
    same(" eiusmod"),
    same(" tempor"),
    Token { text: " \"incididunt\"", json: " \\\"incididunt\\\"" },
    same(" ut"),
    same(" labore"),
    same(" et"),
    same(" dolore"),
    same(" magna"),
    same(" aliqua."),
    same(" Ut"),
    same(" enim"),
    same(" ad"),
    same(" minim"),
];

static UNICODE: [Token; 14] = [
    same("Grüße"),
    same(" 日本語"),
    same(" 😀"),
    Token { text: " 😀", json: " \\ud83d\\ude00" },
    same(" e\u{301}"),
    same(" 👍🏽"),
    same(" 👨\u{200d}👩\u{200d}👧"),
    same(" 한국어"),
    same(" 𝄞"),
    same(" שלום"),
    Token { text: " é", json: " \\u00e9" },
    same(" Ω≈ç√"),
    same(" 中文字符"),
    same(" 🇺🇳"),
];

static SHORT: [Token; 10] = [
    same("a"),
    same("b"),
    same(" "),
    same("é"),
    same("ñ"),
    Token { text: "\n", json: "\\n" },
    same("c"),
    same("Ω"),
    same(","),
    same("."),
];

/// Size of each `long` chunk's content.
pub const LONG_TOKEN_BYTES: usize = 4096;

static LONG_TEXT: LazyLock<String> = LazyLock::new(|| {
    let mut text = String::with_capacity(LONG_TOKEN_BYTES + 16);
    for word in TEXT.iter().filter(|t| t.text == t.json).cycle() {
        if text.len() >= LONG_TOKEN_BYTES {
            break;
        }
        text.push_str(word.text);
    }
    // Every word is ASCII, so any cut is on a character boundary.
    text.truncate(LONG_TOKEN_BYTES);
    text
});

static LONG: LazyLock<[Token; 1]> = LazyLock::new(|| [same(LONG_TEXT.as_str())]);

impl ContentKind {
    /// The table this kind cycles through.
    pub fn tokens(self) -> &'static [Token] {
        match self {
            ContentKind::Text => &TEXT,
            ContentKind::Unicode => &UNICODE,
            ContentKind::Short => &SHORT,
            ContentKind::Long => LONG.as_slice(),
        }
    }

    /// Content token number `index` (0-based) of a stream.
    pub fn token(self, index: u32) -> Token {
        let table = self.tokens();
        // Tables are never empty, so the modulo is defined and in range.
        table[index as usize % table.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> String {
        serde_json::from_str(&format!("\"{json}\"")).expect("token json is a valid JSON string")
    }

    #[test]
    fn every_token_json_decodes_to_its_text() {
        for kind in [ContentKind::Text, ContentKind::Unicode, ContentKind::Short, ContentKind::Long] {
            for token in kind.tokens() {
                assert_eq!(decode(token.json), token.text, "{kind:?} token {:?}", token.text);
            }
        }
    }

    #[test]
    fn short_tokens_are_one_or_two_bytes() {
        for token in ContentKind::Short.tokens() {
            assert!((1..=2).contains(&token.text.len()), "{:?}", token.text);
        }
    }

    #[test]
    fn long_token_is_4_kib() {
        assert_eq!(ContentKind::Long.token(7).text.len(), LONG_TOKEN_BYTES);
    }

    #[test]
    fn unicode_covers_four_byte_chars_and_combining_marks() {
        let all: String = ContentKind::Unicode.tokens().iter().map(|t| t.text).collect();
        assert!(all.chars().any(|c| c.len_utf8() == 4));
        assert!(all.contains('\u{301}'));
        assert!(ContentKind::Unicode.tokens().iter().any(|t| t.json.contains("\\ud83d")));
    }
}
