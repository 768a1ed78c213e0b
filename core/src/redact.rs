//! Redacting anything key-like from text that will reach a browser.
//!
//! An upstream's error message is forwarded to the client, and upstreams quote
//! credentials in them: OpenAI's 401 says "Incorrect API key provided: sk-…abcd",
//! proxies echo `Authorization: Bearer …`. [`redact`] replaces those shapes and
//! leaves everything else byte for byte, borrowing when nothing matched.
//!
//! # Rules
//! - **OpenAI-style keys:** `sk-` followed by key characters (ASCII letters and
//!   digits, `_`, `-`, and the masking characters `*`, `…` and `.` inside the run)
//!   becomes `sk-[redacted]`. This covers `sk-proj-…`, `sk-ant-…`, `sk-svcacct-…`
//!   and the masked forms `sk-…abcd`, `sk-proj-****abcd`, `sk-abc1***wxyz`. The
//!   `sk-` must start a word (so "task-list" and "risk-free" are left alone) and
//!   be followed by at least 4 key characters; a run of 20 or more is redacted
//!   wherever it starts, so no long key survives even glued to another word.
//! - **Bearer tokens:** `Bearer` (any case, starting a word) followed by spaces or
//!   tabs and a token keeps the word and becomes `Bearer [redacted]`. The token
//!   is the run of characters up to whitespace, a quote, a bracket, `,` or `;`,
//!   without trailing sentence punctuation (`.`, `!`, `?`, `:`).
//! - **JSON Web Tokens:** `eyJ…` starting a word, with at least two
//!   base64url segments joined by `.`, becomes `[redacted]`.
//! - **Google API keys** (Gemini's OpenAI-compatible API): `AIza` starting a
//!   word, followed by 30 or more base64url characters, becomes `[redacted]`.
//!
//! - **The daemon's own key:** once [`register_secret`] is given the configured
//!   API key, that exact text becomes `[redacted]` whatever its shape (a
//!   self-hosted backend's token need not look like any of the above).
//!
//! Every replacement is left unchanged by a second pass, so redacting twice
//! costs nothing.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

/// What a redacted secret is replaced with (the `sk-` or `Bearer ` before it kept).
pub const REDACTED: &str = "[redacted]";

/// Shorter secrets are not registered: a placeholder key such as `EMPTY` or
/// `none` (self-hosted servers take any) protects nothing and is a common word.
pub const MIN_REGISTERED_SECRET: usize = 8;

/// The daemon's own secrets (every configured backend's key), set once at start.
static REGISTERED: OnceLock<Box<[Box<str>]>> = OnceLock::new();

/// Makes [`redact`] replace `secret` (the configured API key) wherever it appears,
/// from now on. Set once per process, at start; returns false when it was not
/// registered (too short, or secrets are already set).
pub fn register_secret(secret: &str) -> bool {
    register_secrets([secret])
}

/// [`register_secret`] for every backend's key at once (named backends each
/// have their own). Keys shorter than [`MIN_REGISTERED_SECRET`] are skipped;
/// returns false when none was registered or secrets were already set.
pub fn register_secrets<'a>(secrets: impl IntoIterator<Item = &'a str>) -> bool {
    let mut kept: Vec<Box<str>> =
        secrets.into_iter().filter(|secret| secret.len() >= MIN_REGISTERED_SECRET).map(Into::into).collect();
    // Longest first, so a key that contains another is replaced whole.
    kept.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    kept.dedup();
    !kept.is_empty() && REGISTERED.set(kept.into_boxed_slice()).is_ok()
}

/// `text` with every key-like substring and the registered secrets replaced
/// (see the module's rules); borrowed, without allocating, when there is none.
pub fn redact(text: &str) -> Cow<'_, str> {
    redact_known(text, REGISTERED.get().map_or(&[][..], |secrets| &secrets[..]))
}

/// [`redact`] with `known` as the registered secrets (longest first).
fn redact_known<'a>(text: &'a str, known: &[Box<str>]) -> Cow<'a, str> {
    let mut text = Cow::Borrowed(text);
    for secret in known.iter().filter(|secret| !secret.is_empty()) {
        if memchr::memmem::find(text.as_bytes(), secret.as_bytes()).is_some() {
            text = Cow::Owned(text.replace(&**secret, REDACTED));
        }
    }
    match text {
        Cow::Borrowed(text) => redact_shapes(text),
        Cow::Owned(text) => Cow::Owned(redact_shapes(&text).into_owned()),
    }
}

/// [`redact`] with `known` as the registered secret.
pub fn redact_with<'a>(text: &'a str, known: Option<&str>) -> Cow<'a, str> {
    match known.filter(|secret| !secret.is_empty()) {
        Some(secret) if memchr::memmem::find(text.as_bytes(), secret.as_bytes()).is_some() => {
            Cow::Owned(redact_shapes(&text.replace(secret, REDACTED)).into_owned())
        }
        _ => redact_shapes(text),
    }
}

/// `text` with every key-like substring replaced, borrowed when there is none.
fn redact_shapes(text: &str) -> Cow<'_, str> {
    let Some(first) = next_secret(text, 0) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut secret = Some(first);
    while let Some(Secret { replace, with }) = secret {
        out.push_str(text.get(copied..replace.start).unwrap_or_default());
        out.push_str(with);
        copied = replace.end;
        secret = next_secret(text, copied);
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Cow::Owned(out)
}

/// One match: the byte range to replace and its replacement.
struct Secret {
    replace: Range<usize>,
    with: &'static str,
}

/// The first secret at or after byte `from` (a char boundary).
fn next_secret(text: &str, from: usize) -> Option<Secret> {
    let bytes = text.as_bytes();
    let mut at = from;
    while let Some(&byte) = bytes.get(at) {
        // Every rule starts with an ASCII byte, so `at` is a char boundary here.
        let found = match byte {
            b's' => openai_key(text, at),
            b'b' | b'B' => bearer_token(text, at),
            b'e' => json_web_token(text, at),
            b'A' => google_key(text, at),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
        at += 1;
    }
    None
}

/// Whether the character before byte `at` lets a word start there.
fn starts_word(text: &str, at: usize) -> bool {
    let before = text.get(..at).and_then(|head| head.chars().next_back());
    !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

fn is_base64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Length in bytes of the run of `accept`ed characters at the start of `text`.
fn run_len(text: &str, accept: impl Fn(char) -> bool) -> usize {
    text.char_indices().find(|&(_, c)| !accept(c)).map_or(text.len(), |(i, _)| i)
}

/// `sk-` + key characters at `at`: the key characters are replaced.
fn openai_key(text: &str, at: usize) -> Option<Secret> {
    const PREFIX: &str = "sk-";
    const MIN_AT_WORD_START: usize = 4;
    const MIN_ANYWHERE: usize = 20;
    let start = at + PREFIX.len();
    let rest = text.get(at..)?.strip_prefix(PREFIX)?;
    let mut chars = 0;
    let mut before_any_dot = 0;
    let mut dotted = false;
    let mut len = 0;
    let mut iter = rest.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let is_mask = c == '*' || c == '…';
        // A dot belongs to the key only inside it ("sk-...abcd", not "sk-abcd.").
        let inner_dot = c == '.' && iter.peek().is_some_and(|&(_, next)| is_key_char(next) || next == '.');
        if !(is_base64url(c) || is_mask || inner_dot) {
            break;
        }
        // Dots join a mask to the key's visible part ("sk-...abcd"); they are not
        // key length.
        if inner_dot {
            dotted = true;
        } else {
            chars += 1;
            if !dotted {
                before_any_dot += 1;
            }
        }
        len = i + c.len_utf8();
    }
    // Mid-word ("task-…"), the characters before any dot must make the key: keys
    // have no dots, and dotted prose after such a word would otherwise read as one.
    let long_enough = before_any_dot >= MIN_ANYWHERE || (chars >= MIN_AT_WORD_START && starts_word(text, at));
    long_enough.then(|| Secret { replace: start..start + len, with: REDACTED })
}

fn is_key_char(c: char) -> bool {
    is_base64url(c) || c == '*' || c == '…'
}

/// `Bearer` + blanks + token at `at`: the token is replaced.
fn bearer_token(text: &str, at: usize) -> Option<Secret> {
    const WORD: &str = "bearer";
    let word = text.get(at..at + WORD.len())?;
    if !word.eq_ignore_ascii_case(WORD) || !starts_word(text, at) {
        return None;
    }
    let after_word = at + WORD.len();
    let blanks = run_len(text.get(after_word..)?, |c| c == ' ' || c == '\t');
    if blanks == 0 {
        return None;
    }
    let start = after_word + blanks;
    let token = text.get(start..)?;
    let token = &token[..run_len(token, |c| !c.is_whitespace() && !"\"'`<>()[]{},;".contains(c))];
    let token = token.trim_end_matches(['.', '!', '?', ':']);
    (!token.is_empty()).then(|| Secret { replace: start..start + token.len(), with: REDACTED })
}

/// `eyJ` + base64url, `.`, base64url (and optionally `.` + signature) at `at`.
fn json_web_token(text: &str, at: usize) -> Option<Secret> {
    const MIN_HEADER: usize = 10;
    const MIN_PAYLOAD: usize = 2;
    let rest = text.get(at..)?;
    if !rest.starts_with("eyJ") || !starts_word(text, at) {
        return None;
    }
    let header = run_len(rest, is_base64url);
    let payload = rest.get(header..)?.strip_prefix('.').map_or(0, |tail| run_len(tail, is_base64url));
    if header < MIN_HEADER || payload < MIN_PAYLOAD {
        return None;
    }
    let mut len = header + 1 + payload;
    if let Some(tail) = rest.get(len..).and_then(|tail| tail.strip_prefix('.')) {
        let signature = run_len(tail, is_base64url);
        if signature > 0 {
            len += 1 + signature;
        }
    }
    Some(Secret { replace: at..at + len, with: REDACTED })
}

/// `AIza` + 30 or more base64url characters at `at`.
fn google_key(text: &str, at: usize) -> Option<Secret> {
    const MIN_AFTER_PREFIX: usize = 30;
    let rest = text.get(at..)?;
    let after = rest.strip_prefix("AIza")?;
    if !starts_word(text, at) {
        return None;
    }
    let len = run_len(after, is_base64url);
    (len >= MIN_AFTER_PREFIX).then(|| Secret { replace: at..at + 4 + len, with: REDACTED })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(text: &str) -> String {
        match redact(text) {
            Cow::Owned(text) => text,
            Cow::Borrowed(text) => panic!("expected a redaction in {text:?}"),
        }
    }

    fn unchanged(text: &str) {
        assert!(matches!(redact(text), Cow::Borrowed(same) if same == text), "changed: {text:?}");
    }

    /// Whether `sk-[A-Za-z0-9]{20,}` occurs in `text`.
    fn has_long_key(text: &str) -> bool {
        text.match_indices("sk-")
            .any(|(i, _)| text[i + 3..].bytes().take_while(u8::is_ascii_alphanumeric).count() >= 20)
    }

    #[test]
    fn openai_401_messages_lose_the_key() {
        assert_eq!(
            owned("Incorrect API key provided: sk-…abcd. You can find your API key at https://platform.openai.com/account/api-keys."),
            "Incorrect API key provided: sk-[redacted]. You can find your API key at https://platform.openai.com/account/api-keys."
        );
        assert_eq!(
            owned("Incorrect API key provided: sk-proj-********************WXyz."),
            "Incorrect API key provided: sk-[redacted]."
        );
        assert_eq!(owned("key sk-abc1***************************wxyz!"), "key sk-[redacted]!");
        assert_eq!(owned("masked sk-...abcd."), "masked sk-[redacted].");
    }

    #[test]
    fn whole_keys_of_every_shape_are_redacted() {
        for key in [
            "sk-1234567890abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL",
            "sk-proj-Abc_def-123456789012345678901234567890",
            "sk-ant-api03-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbb",
            "sk-svcacct-XYZ0123456789",
        ] {
            for (before, after) in [("", ""), ("key=", "&x=1"), ("\"", "\""), ("(", ")"), ("use ", ".")] {
                let text = format!("{before}{key}{after}");
                assert_eq!(owned(&text), format!("{before}sk-[redacted]{after}"), "{text}");
            }
        }
    }

    #[test]
    fn long_keys_are_redacted_even_glued_to_a_word() {
        let text = "OPENAI_KEYsk-abcdefghijklmnopqrstuvwxyz012345 rest";
        assert_eq!(owned(text), "OPENAI_KEYsk-[redacted] rest");
        assert!(!has_long_key(&owned(text)));
    }

    #[test]
    fn sk_inside_words_and_short_runs_stay() {
        for text in [
            "task-list",
            "risk-free and desk-top, ask-me-anything",
            "the sk- prefix",
            "sk-abc is too short to be a key",
            "sk-",
            "SK-ABCDEFGH is not OpenAI's case",
            "sk-[redacted]",
        ] {
            unchanged(text);
        }
    }

    #[test]
    fn bearer_tokens_keep_the_word_and_lose_the_token() {
        assert_eq!(owned("Authorization: Bearer abc.def-ghi_123"), "Authorization: Bearer [redacted]");
        assert_eq!(owned("got bearer\tXYZ, expected another"), "got bearer\t[redacted], expected another");
        assert_eq!(owned("header \"BEARER t0k3n\" refused."), "header \"BEARER [redacted]\" refused.");
        assert_eq!(owned("token (Bearer abc/def+ghi==)."), "token (Bearer [redacted]).");
        assert_eq!(owned("Bearer a; Bearer b"), "Bearer [redacted]; Bearer [redacted]");
        assert_eq!(owned("Bearer sk-proj-abcdef"), "Bearer [redacted]");
    }

    #[test]
    fn bearer_without_a_token_stays() {
        for text in
            ["Bearer", "Bearer ", "Bearer.", "bearers of bad news", "forbearer token", "Bearer [redacted]"]
        {
            unchanged(text);
        }
        // Only blanks may come between the word and its token.
        unchanged("Bearer\nnext line");
    }

    #[test]
    fn json_web_tokens_are_redacted() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(owned(&format!("token {jwt} expired")), "token [redacted] expired");
        assert_eq!(owned("jwt eyJhbGciOiJub25lIn0.e30 unsigned"), "jwt [redacted] unsigned");
        assert_eq!(owned("trailing eyJhbGciOiJub25lIn0.e30."), "trailing [redacted].");
        unchanged("eyJ alone, eyJshort.ab, eyJhbGciOiJub25lIn0 without a payload");
        unchanged("keyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0 mid-word");
    }

    #[test]
    fn google_api_keys_are_redacted() {
        let key = "AIzaSyA-1234567890abcdefghijklmnopqrs";
        assert_eq!(owned(&format!("API key not valid: {key}.")), "API key not valid: [redacted].");
        unchanged("AIza is a prefix; AIzaShort stays");
    }

    #[test]
    fn every_secret_in_one_text_goes() {
        let text = "a sk-abcdefgh b Bearer tok c eyJhbGciOiJub25lIn0.e30 d";
        assert_eq!(owned(text), "a sk-[redacted] b Bearer [redacted] c [redacted] d");
    }

    #[test]
    fn unicode_around_secrets_is_kept() {
        assert_eq!(owned("clé « sk-abcdefgh » 😀"), "clé « sk-[redacted] » 😀");
        // A letter in any script joins a word: "ésk-..." is not a word start.
        unchanged("ésk-abcd");
        unchanged("ünïcödé 😀 only");
    }

    #[test]
    fn ordinary_error_messages_are_borrowed() {
        for text in [
            "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM).",
            "The model `gpt-5` does not exist or you do not have access to it.",
            "backend answered HTTP 502",
            "",
        ] {
            unchanged(text);
        }
    }

    /// Pieces that concatenate into keys, near-keys and their surroundings.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "sk-",
            "sk",
            "-",
            "s",
            "k",
            "proj-",
            "A",
            "z9",
            "0123456789",
            "abcdefghij",
            "_",
            "*",
            "…",
            ".",
            " ",
            "\t",
            "x",
            "é",
            "Bearer ",
            "bearer",
            "=",
            "\"",
            "eyJ",
            "AIza",
            "\n",
        ])
    }

    #[test]
    fn dotted_prose_after_a_word_with_sk_is_not_a_key() {
        // Found by the prose proptest: inner dots used to count toward the
        // 20-character length that makes a mid-word `sk-` a key.
        for text in
            ["a:ask-aa.aaaa-a.a..aaaaaaa", "a,ask-aaa.aaaaaaaa-aaaaaaaa", "see task-a.b.c.d.e.f.g.h.i.j.k"]
        {
            assert!(matches!(redact(text), Cow::Borrowed(same) if same == text), "{text:?}");
        }
    }

    #[test]
    fn the_known_secret_is_redacted_whatever_its_shape() {
        const KEY: &str = "selfhosted-LeakCheck-7f3a9c2e1b5d4f60";
        let text = format!("Incorrect API key provided: {KEY}. Key {KEY}!");
        assert_eq!(redact_with(&text, Some(KEY)), "Incorrect API key provided: [redacted]. Key [redacted]!");
        assert_eq!(redact_with(&text, None), text, "not key-shaped, so only knowing it catches it");
        // Shapes are still redacted around it, and a second pass changes nothing.
        let mixed = format!("{KEY} and sk-proj-abcdefghijklmnopqrstuvwx");
        let once = redact_with(&mixed, Some(KEY)).into_owned();
        assert_eq!(once, "[redacted] and sk-[redacted]");
        assert_eq!(redact_with(&once, Some(KEY)), once);
        assert!(matches!(redact_with("nothing here", Some(KEY)), Cow::Borrowed(_)));
        assert!(matches!(redact_with("nothing here", Some("")), Cow::Borrowed(_)));
    }

    #[test]
    fn every_backends_key_is_replaced_and_a_longer_one_whole() {
        let known: Vec<Box<str>> = vec!["local-key-abcdef-long".into(), "local-key-abcdef".into()];
        let text = "a local-key-abcdef-long and local-key-abcdef, twice: local-key-abcdef";
        assert_eq!(redact_known(text, &known), "a [redacted] and [redacted], twice: [redacted]");
        assert_eq!(redact_known("nothing here", &known), Cow::Borrowed("nothing here"));
    }

    #[test]
    fn short_placeholder_keys_are_not_registered() {
        // Only the length check is exercised: registering for real would change
        // what every other test in this process sees.
        assert!(!register_secret("EMPTY"));
        assert!(!register_secret(""));
    }

    proptest! {
        #[test]
        fn no_long_key_survives(text in prop::collection::vec(piece(), 0..40).prop_map(|p| p.concat())) {
            let redacted = redact(&text);
            prop_assert!(!has_long_key(&redacted), "{text:?} became {redacted:?}");
            // A second pass finds nothing more.
            prop_assert!(matches!(redact(&redacted), Cow::Borrowed(_)), "{redacted:?}");
        }

        #[test]
        fn a_planted_key_never_survives(
            before in "\\PC{0,20}",
            project in prop::option::of("[a-z]{3,8}-"),
            key in "[A-Za-z0-9_-]{20,64}",
            after in "\\PC{0,20}",
        ) {
            let project = project.unwrap_or_default();
            let text = format!("{before}sk-{project}{key}{after}");
            let redacted = redact(&text);
            prop_assert!(!has_long_key(&redacted), "{text:?} became {redacted:?}");
            prop_assert!(!redacted.contains(key.as_str()), "{text:?} became {redacted:?}");
        }

        #[test]
        fn text_without_secrets_is_returned_unchanged(text in "\\PC{0,80}") {
            let lower = text.to_ascii_lowercase();
            prop_assume!(!text.contains("sk-") && !lower.contains("bearer") && !text.contains("eyJ") && !text.contains("AIza"));
            prop_assert!(matches!(redact(&text), Cow::Borrowed(same) if same == text));
        }

        #[test]
        fn prose_with_hyphenated_words_is_returned_unchanged(
            text in "[a-z]{1,8}(-[a-z]{1,8})?([ ,.:]{1,2}[a-z]{1,8}(-[a-z]{1,8})?){0,12}",
        ) {
            // Words that merely contain `sk-` ("task-list") are prose; a word that
            // starts with it or "bearer " before a word are what the rules are for.
            let starts_a_key = text.split([' ', ',', '.', ':']).any(|word| word.starts_with("sk-"));
            prop_assume!(!starts_a_key && !text.contains("bearer"));
            prop_assert!(matches!(redact(&text), Cow::Borrowed(same) if same == text), "{text:?}");
        }
    }
}
