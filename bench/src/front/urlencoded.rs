//! `application/x-www-form-urlencoded`: query strings and form bodies.

/// Why a form could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    BadEscape { at: usize },
    /// A name or value that is not UTF-8 once decoded.
    NotUtf8 { name: String },
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::BadEscape { at } => write!(f, "bad percent escape at byte {at}"),
            FormError::NotUtf8 { name } => write!(f, "the value of {name:?} is not UTF-8"),
        }
    }
}

/// The decoded `name=value` pairs in order (`+` is a space, `%XX` a byte); a pair
/// without `=` has an empty value, empty pairs are skipped.
pub fn decode(input: &str) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    let mut offset = 0;
    for pair in input.split('&') {
        let start = offset;
        offset += pair.len() + 1;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name_bytes = unescape(name, start)?;
        let name = String::from_utf8(name_bytes)
            .map_err(|e| FormError::NotUtf8 { name: String::from_utf8_lossy(e.as_bytes()).into_owned() })?;
        let value = String::from_utf8(unescape(value, start + pair.len() - value.len())?)
            .map_err(|_| FormError::NotUtf8 { name: name.clone() })?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn unescape(text: &str, base: usize) -> Result<Vec<u8>, FormError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                match byte {
                    // from_str_radix takes a leading sign; escapes are two hex digits.
                    Some(byte) if hex.is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) => {
                        out.push(byte);
                        i += 2;
                    }
                    _ => return Err(FormError::BadEscape { at: base + i }),
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(input: &str) -> Vec<(String, String)> {
        decode(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    #[test]
    fn plus_and_escapes_decode_to_utf8() {
        assert_eq!(
            pairs("prompt=Gr%C3%BC%C3%9Fe+%F0%9F%98%80&x&&test_pattern=a%2Cb"),
            [
                ("prompt".to_owned(), "Grüße 😀".to_owned()),
                ("x".to_owned(), String::new()),
                ("test_pattern".to_owned(), "a,b".to_owned())
            ]
        );
        assert_eq!(pairs("a=1=2"), [("a".to_owned(), "1=2".to_owned())]);
    }

    #[test]
    fn bad_escapes_and_bytes_are_errors() {
        assert_eq!(decode("a=%4"), Err(FormError::BadEscape { at: 2 }));
        assert_eq!(decode("ok=1&a=%zz"), Err(FormError::BadEscape { at: 7 }));
        assert_eq!(decode("a=%+1"), Err(FormError::BadEscape { at: 2 }));
        assert_eq!(decode("a=%ff"), Err(FormError::NotUtf8 { name: "a".to_owned() }));
    }
}
