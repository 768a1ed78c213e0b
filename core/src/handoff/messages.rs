//! `messages`: an array of chat messages, each checked for the shapes OpenAI's
//! chat API takes and written back compactly (see [`Json`]).

use serde_json::value::RawValue;

use super::{invalid, object, options, HandoffError, Json, Message};

const MESSAGE_FIELDS: &[&str] = &["role", "content", "name", "tool_call_id", "tool_calls"];

pub(super) fn decode(raw: &RawValue) -> Result<Vec<Message>, HandoffError> {
    let elements: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| invalid("messages", "must be an array of {\"role\", \"content\"} objects"))?;
    elements.iter().enumerate().map(|(index, element)| message(index, element)).collect()
}

fn message(index: usize, element: &RawValue) -> Result<Message, HandoffError> {
    let fields = object::named_fields(element.get().as_bytes(), MESSAGE_FIELDS)
        .ok()
        .flatten()
        .ok_or_else(|| invalid("messages", format!("message {index} is not an object")))?;
    let [role, content, name, tool_call_id, tool_calls] =
        std::array::from_fn(|i| fields.get(i).copied().flatten());
    let role = role
        .and_then(|role| serde_json::from_str::<String>(role.get()).ok())
        .ok_or_else(|| invalid("messages", format!("message {index} needs a string `role`")))?;
    let content = match content {
        None => Json::null(),
        Some(content) => checked_content(index, content)?,
    };
    let text = |field: &str, raw: Option<&RawValue>| {
        raw.map(|raw| {
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| invalid("messages", format!("message {index} `{field}` must be a string")))
        })
        .transpose()
    };
    let tool_calls = tool_calls
        .map(|raw| {
            let calls: Vec<&RawValue> = serde_json::from_str(raw.get()).unwrap_or_default();
            let all_objects = raw.get().trim_start().starts_with('[')
                && calls.iter().all(|call| call.get().starts_with('{'));
            if !all_objects {
                return Err(invalid(
                    "messages",
                    format!("message {index} `tool_calls` must be an array of objects"),
                ));
            }
            strict(index, "tool_calls", raw)
        })
        .transpose()?;
    Ok(Message {
        role,
        content,
        name: text("name", name)?,
        tool_call_id: text("tool_call_id", tool_call_id)?,
        tool_calls,
    })
}

/// A string, an array of content parts (objects with a string `type`), or null.
fn checked_content(index: usize, raw: &RawValue) -> Result<Json, HandoffError> {
    let json = strict(index, "content", raw)?;
    match json.first_byte() {
        b'"' | b'n' => Ok(json),
        b'[' => {
            let parts: Vec<&RawValue> = serde_json::from_str(json.get()).unwrap_or_default();
            for (part_index, part) in parts.iter().enumerate() {
                if !options::has_string_type(part.get()) {
                    return Err(invalid(
                        "messages",
                        format!("message {index} content part {part_index} needs a string `type`"),
                    ));
                }
            }
            Ok(json)
        }
        _ => Err(invalid(
            "messages",
            format!("message {index} content must be a string, an array of content parts or null"),
        )),
    }
}

/// `raw` written back strictly; what strict parsers refuse names the message.
fn strict(index: usize, field: &str, raw: &RawValue) -> Result<Json, HandoffError> {
    Json::from_raw(raw).map_err(|_| {
        invalid(
            "messages",
            format!(
                "message {index} {field} is not strict JSON (a lone \\u surrogate or a number beyond f64)"
            ),
        )
    })
}
