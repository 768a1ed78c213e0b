//! The handoff data the front sends, as the PHP endpoint would build it.

use handoff_core::handoff::MAX_HANDOFF_BYTES;
use serde_json::{Map, Value};

/// The cookie naming the browser's user; the page sets it when it is missing.
pub const USER_COOKIE: &str = "handoff_user";

/// Longest `handoff_user` cookie value taken as a user id.
const MAX_USER_ID: usize = 64;

/// What a stream request asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoffFields {
    pub prompt: String,
    pub model: Option<String>,
    /// Forwarded by the daemon as `X-Test-Pattern` (mock-llm's behaviours).
    pub test_pattern: Option<String>,
    pub max_tokens: Option<u64>,
}

/// The handoff data would be over the daemon's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub len: usize,
}

impl HandoffFields {
    /// The JSON object the daemon gets; absent fields are left out.
    pub fn to_json(&self, request_id: &str, user_id: Option<&str>) -> Result<Vec<u8>, TooLarge> {
        let mut object = Map::new();
        object.insert("prompt".to_owned(), Value::from(self.prompt.as_str()));
        if let Some(model) = &self.model {
            object.insert("model".to_owned(), Value::from(model.as_str()));
        }
        object.insert("request_id".to_owned(), Value::from(request_id));
        if let Some(user) = user_id {
            object.insert("user_id".to_owned(), Value::from(user));
        }
        if let Some(pattern) = &self.test_pattern {
            object.insert("test_pattern".to_owned(), Value::from(pattern.as_str()));
        }
        if let Some(max) = self.max_tokens {
            object.insert("max_tokens".to_owned(), Value::from(max));
        }
        let json = Value::Object(object).to_string().into_bytes();
        if json.len() > MAX_HANDOFF_BYTES {
            return Err(TooLarge { len: json.len() });
        }
        Ok(json)
    }
}

/// The `handoff_user` value of a `Cookie` header, when it is a plausible id
/// (letters, digits, `-`, `_`; at most 64); anything else is no user.
pub fn user_from_cookie(cookie: Option<&str>) -> Option<&str> {
    cookie?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == USER_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| {
            !value.is_empty()
                && value.len() <= MAX_USER_ID
                && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_carries_every_given_field_and_escapes_the_prompt() {
        let fields = HandoffFields {
            prompt: "say \"hi\"\n😀".to_owned(),
            model: Some("m".to_owned()),
            test_pattern: Some("unicode,slow:5".to_owned()),
            max_tokens: Some(7),
        };
        let json = fields.to_json("front-1", Some("u1")).expect("small");
        let value: Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"prompt": "say \"hi\"\n😀", "model": "m", "request_id": "front-1",
                "user_id": "u1", "test_pattern": "unicode,slow:5", "max_tokens": 7})
        );
    }

    #[test]
    fn absent_fields_are_left_out() {
        let fields = HandoffFields { prompt: "p".to_owned(), ..HandoffFields::default() };
        let json = fields.to_json("r", None).expect("small");
        assert_eq!(json, br#"{"prompt":"p","request_id":"r"}"#);
    }

    #[test]
    fn data_over_the_daemon_limit_is_refused() {
        // Control characters grow sixfold when escaped.
        let fields =
            HandoffFields { prompt: "\u{1}".repeat(MAX_HANDOFF_BYTES / 6 + 1), ..HandoffFields::default() };
        assert!(matches!(fields.to_json("r", None), Err(TooLarge { len }) if len > MAX_HANDOFF_BYTES));
    }

    #[test]
    fn the_user_cookie_is_found_among_others_and_checked() {
        assert_eq!(user_from_cookie(Some("a=1; handoff_user=u-42_x; b=2")), Some("u-42_x"));
        assert_eq!(user_from_cookie(Some("handoff_user=\"quoted\"")), Some("quoted"));
        assert_eq!(user_from_cookie(Some("handoff_user=bad value")), None);
        assert_eq!(user_from_cookie(Some("handoff_user=")), None);
        assert_eq!(user_from_cookie(Some(&format!("handoff_user={}", "a".repeat(65)))), None);
        assert_eq!(user_from_cookie(Some("other=1")), None);
        assert_eq!(user_from_cookie(None), None);
    }
}
