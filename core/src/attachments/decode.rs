//! The handoff's `images`, `image_paths` and `attachments` fields, checked for
//! shape; nothing is read here.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{invalid, ImageType, InlineImage, Requested, TextAttachment};
use crate::handoff::HandoffError;

/// Longest path accepted (PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

/// Longest `ref` accepted.
const MAX_REFERENCE_BYTES: usize = 64;

#[derive(Deserialize)]
struct RawImage {
    base64: String,
    mime_type: String,
}

#[derive(Deserialize)]
#[serde(rename = "attachment")]
struct RawAttachment {
    #[serde(rename = "ref")]
    reference: String,
    path: String,
}

/// Decodes the three fields (each `None` when absent or `null`).
pub fn decode_fields(
    images: Option<&RawValue>,
    image_paths: Option<&RawValue>,
    attachments: Option<&RawValue>,
) -> Result<Requested, HandoffError> {
    let mut requested = Requested::default();
    if let Some(raw) = images {
        let images: Vec<RawImage> = serde_json::from_str(raw.get()).map_err(|_| {
            invalid("images", "must be an array of {\"base64\": string, \"mime_type\": string}")
        })?;
        for (position, image) in images.into_iter().enumerate() {
            let image_type = ImageType::from_mime(&image.mime_type).ok_or_else(|| {
                invalid(
                    "images",
                    format!(
                        "entry {position}: mime_type must be image/png, image/jpeg, image/gif or image/webp"
                    ),
                )
            })?;
            if !is_base64(&image.base64) {
                return Err(invalid(
                    "images",
                    format!("entry {position}: base64 is not standard padded base64"),
                ));
            }
            requested.inline_images.push(InlineImage { image_type, base64: image.base64 });
        }
    }
    if let Some(raw) = image_paths {
        let paths: Vec<String> = serde_json::from_str(raw.get())
            .map_err(|_| invalid("image_paths", "must be an array of strings"))?;
        for (position, path) in paths.iter().enumerate() {
            check_path("image_paths", position, path)?;
        }
        requested.image_paths = paths;
    }
    if let Some(raw) = attachments {
        let texts: Vec<RawAttachment> = serde_json::from_str(raw.get())
            .map_err(|_| invalid("attachments", "must be an array of {\"ref\": string, \"path\": string}"))?;
        for (position, text) in texts.iter().enumerate() {
            check_reference(position, &text.reference)?;
            check_path("attachments", position, &text.path)?;
            if texts.iter().take(position).any(|earlier| earlier.reference == text.reference) {
                return Err(invalid(
                    "attachments",
                    format!("entry {position}: ref {:?} is given twice", text.reference),
                ));
            }
        }
        requested.texts = texts
            .into_iter()
            .map(|text| TextAttachment { reference: text.reference, path: text.path })
            .collect();
    }
    Ok(requested)
}

/// Refuses what no open under `data_dir` could mean; containment itself is the
/// runtime's `openat2(RESOLVE_BENEATH)`, which sees what the file system holds.
fn check_path(field: &'static str, position: usize, path: &str) -> Result<(), HandoffError> {
    let reason = if path.is_empty() {
        "path is empty"
    } else if path.starts_with('/') {
        "path must be relative to data_dir"
    } else if path.contains('\0') {
        "path contains a NUL byte"
    } else if path.len() > MAX_PATH_BYTES {
        "path is longer than 4096 bytes"
    } else {
        return Ok(());
    };
    Err(invalid(field, format!("entry {position}: {reason}")))
}

fn check_reference(position: usize, reference: &str) -> Result<(), HandoffError> {
    let fine = !reference.is_empty()
        && reference.len() <= MAX_REFERENCE_BYTES
        && reference.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(invalid("attachments", format!("entry {position}: ref must be 1-64 of A-Z a-z 0-9 _ - .")))
    }
}

/// Standard alphabet, padded to a multiple of four, `=` only at the end.
fn is_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    let symbols = bytes.get(..bytes.len() - padding.min(bytes.len())).unwrap_or_default();
    padding <= 2 && symbols.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}
