//! Images and text attachments a handoff brings to an OpenAI-kind backend.
//!
//! A handoff may carry `images` inline (`[{"base64":..,"mime_type":..}]`), name
//! image files (`image_paths`) and text files (`attachments: [{"ref":..,"path":..}]`)
//! under the operator's `data_dir`. Core decides everything about them: which
//! fields are valid, which files to read and how much of each, what a failed open
//! means for the client (a 400 naming the field), how the content enters the
//! request (`image_url` content parts with data URLs appended to the last user
//! message; `{ref}` in user messages replaced by the file's text), and whether the
//! files may be deleted after the stream ([`delete_after`]). The runtime only opens
//! and reads files, the way [`Plan`] says.
//!
//! Containment under `data_dir` is the runtime's open (`openat2` with
//! `RESOLVE_BENEATH` and no symlinks), never a string check here; this module
//! refuses only what no open could make sense of (empty or absolute paths, NUL).

mod base64;
mod decode;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::handoff::{Handoff, HandoffError, Json, Message};
use crate::metrics::StreamSummary;

pub use decode::decode_fields;

/// Defaults of [`AttachmentConfig`].
pub mod defaults {
    /// `--max-attachment-bytes`: one file.
    pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
    /// `--max-attachments-total-bytes`: every file of one handoff together.
    pub const MAX_TOTAL_BYTES: u64 = 20 * 1024 * 1024;
    /// `--max-attachments`: files (images and texts) one handoff may name.
    pub const MAX_FILES: usize = 16;
}

/// How a handoff's files are read, limited and cleaned up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentConfig {
    /// The directory `image_paths` and `attachments` are relative to; `None`:
    /// handoffs that name files are refused.
    pub data_dir: Option<PathBuf>,
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes of files (and inline images) one handoff may bring.
    pub max_total_bytes: u64,
    /// Most files one handoff may name.
    pub max_files: usize,
    /// Delete the named files once the backend has taken the request.
    pub delete_after_use: bool,
}

impl Default for AttachmentConfig {
    fn default() -> AttachmentConfig {
        AttachmentConfig {
            data_dir: None,
            max_file_bytes: defaults::MAX_FILE_BYTES,
            max_total_bytes: defaults::MAX_TOTAL_BYTES,
            max_files: defaults::MAX_FILES,
            delete_after_use: false,
        }
    }
}

/// The image formats accepted: the ones OpenAI-compatible vision APIs take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageType {
    /// `image/png`
    Png,
    /// `image/jpeg`
    Jpeg,
    /// `image/gif`
    Gif,
    /// `image/webp`
    Webp,
}

impl ImageType {
    /// The MIME type, as the data URL states it.
    pub fn mime(self) -> &'static str {
        match self {
            ImageType::Png => "image/png",
            ImageType::Jpeg => "image/jpeg",
            ImageType::Gif => "image/gif",
            ImageType::Webp => "image/webp",
        }
    }

    /// The type a MIME string names (`image/jpg` taken for JPEG).
    pub fn from_mime(mime: &str) -> Option<ImageType> {
        match mime.trim().to_ascii_lowercase().as_str() {
            "image/png" => Some(ImageType::Png),
            "image/jpeg" | "image/jpg" => Some(ImageType::Jpeg),
            "image/gif" => Some(ImageType::Gif),
            "image/webp" => Some(ImageType::Webp),
            _ => None,
        }
    }

    /// The type a file's first bytes show. A file's name says nothing reliable,
    /// so its content decides, and a file that is no image is refused.
    pub fn sniff(bytes: &[u8]) -> Option<ImageType> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageType::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageType::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageType::Gif)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
            Some(ImageType::Webp)
        } else {
            None
        }
    }
}

/// An image given inline: already base64, checked to be only base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineImage {
    /// Its declared type.
    pub image_type: ImageType,
    /// Standard base64 with padding, no whitespace.
    pub base64: String,
}

/// A text file whose content replaces `{reference}` in the user messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextAttachment {
    /// The name used in the prompt as `{reference}`.
    pub reference: String,
    /// Relative to `data_dir`.
    pub path: String,
}

/// What a handoff asked for, as decoded (nothing read yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    /// `images`.
    pub inline_images: Vec<InlineImage>,
    /// `image_paths`, relative to `data_dir`.
    pub image_paths: Vec<String>,
    /// `attachments`.
    pub texts: Vec<TextAttachment>,
}

impl Requested {
    /// True when the handoff brings no image or attachment.
    pub fn is_empty(&self) -> bool {
        self.inline_images.is_empty() && self.image_paths.is_empty() && self.texts.is_empty()
    }
}

/// One file the runtime is to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileToRead<'a> {
    /// Position in [`Plan::files`], the order contents are handed back in.
    pub index: usize,
    /// Relative to `data_dir`.
    pub path: &'a str,
}

/// Why the runtime could not read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFailure {
    /// No such file (or a directory on the way is missing).
    NotFound,
    /// The path leads out of `data_dir` (`..` too far, or an absolute symlink).
    OutsideDataDir,
    /// A symlink is on the path; symlinks are not followed at all.
    Symlink,
    /// Not a regular file (a directory, device, FIFO...).
    NotRegularFile,
    /// Larger than the limit left for it.
    TooLarge,
    /// The daemon may not read it.
    PermissionDenied,
    /// Any other error while opening or reading.
    Unreadable,
}

impl FileFailure {
    fn reason(self) -> &'static str {
        match self {
            FileFailure::NotFound => "no such file under data_dir",
            FileFailure::OutsideDataDir => "path leads outside data_dir",
            FileFailure::Symlink => "path goes through a symlink (not followed)",
            FileFailure::NotRegularFile => "not a regular file",
            FileFailure::TooLarge => "file is over the size limit",
            FileFailure::PermissionDenied => "file is not readable by the daemon",
            FileFailure::Unreadable => "file could not be read",
        }
    }
}

/// The files one handoff needs read, in order (its `image_paths`, then its
/// `attachments`), and the size budget left for them. Built by [`Plan::new`];
/// the runtime opens each file, asks [`Plan::read_limit`] how much it may read,
/// reports failures through [`Plan::failed`], and hands the contents back to
/// [`Plan::apply`].
#[derive(Debug)]
pub struct Plan {
    requested: Requested,
    max_file_bytes: u64,
    /// Bytes still allowed, inline images already taken off.
    budget: u64,
}

impl Plan {
    /// Checks what the handoff asked for against the config. `None` when the
    /// handoff brings nothing (the common case costs nothing more).
    pub fn new(handoff: &mut Handoff, config: &AttachmentConfig) -> Result<Option<Plan>, HandoffError> {
        if handoff.attachments.is_empty() {
            return Ok(None);
        }
        let requested = std::mem::take(&mut handoff.attachments);
        let files = requested.image_paths.len() + requested.texts.len();
        if files > 0 && config.data_dir.is_none() {
            let field = if requested.image_paths.is_empty() { "attachments" } else { "image_paths" };
            return Err(invalid(field, "files are not enabled on this daemon (no data_dir is configured)"));
        }
        if files > config.max_files {
            return Err(invalid(
                "image_paths",
                format!("{files} files named; at most {} per handoff", config.max_files),
            ));
        }
        // base64 is 4/3 of the bytes it stands for: count what the image weighs.
        let inline: u64 = requested.inline_images.iter().map(|image| image.base64.len() as u64 / 4 * 3).sum();
        let budget = config.max_total_bytes.checked_sub(inline).ok_or_else(|| {
            invalid(
                "images",
                format!("images are over the {}-byte limit per handoff", config.max_total_bytes),
            )
        })?;
        Ok(Some(Plan { requested, max_file_bytes: config.max_file_bytes, budget }))
    }

    /// The files to read, in the order [`Plan::apply`] expects their contents.
    pub fn files(&self) -> impl Iterator<Item = FileToRead<'_>> {
        let images = self.requested.image_paths.iter().map(String::as_str);
        let texts = self.requested.texts.iter().map(|text| text.path.as_str());
        images.chain(texts).enumerate().map(|(index, path)| FileToRead { index, path })
    }

    /// How many bytes the file at `index` may have, given what the files before it
    /// took: the runtime refuses a larger file (by its size, and while reading,
    /// since a file can grow) with [`FileFailure::TooLarge`].
    pub fn read_limit(&self, taken_so_far: u64) -> u64 {
        self.max_file_bytes.min(self.budget.saturating_sub(taken_so_far))
    }

    /// The client's 400 for a file that could not be read.
    pub fn failed(&self, file: FileToRead<'_>, failure: FileFailure) -> HandoffError {
        let (field, position) = self.field_of(file.index);
        invalid(field, format!("entry {position} ({:?}): {}", cut(file.path), failure.reason()))
    }

    fn field_of(&self, index: usize) -> (&'static str, usize) {
        let images = self.requested.image_paths.len();
        if index < images {
            ("image_paths", index)
        } else {
            ("attachments", index - images)
        }
    }

    /// Puts the images and texts into the handoff's messages; `contents` holds each
    /// file of [`Plan::files`], in order.
    pub fn apply(self, handoff: &mut Handoff, contents: Vec<Vec<u8>>) -> Result<(), HandoffError> {
        let Plan { requested, .. } = self;
        let files = requested.image_paths.len() + requested.texts.len();
        if contents.len() != files {
            return Err(invalid("image_paths", "files were not all read"));
        }
        let mut contents = contents.into_iter();
        let mut parts = Vec::with_capacity(requested.inline_images.len() + requested.image_paths.len());
        for image in &requested.inline_images {
            parts.push(image_part(image.image_type, &image.base64));
        }
        for (position, (path, bytes)) in requested.image_paths.iter().zip(contents.by_ref()).enumerate() {
            let image_type = ImageType::sniff(&bytes).ok_or_else(|| {
                invalid(
                    "image_paths",
                    format!("entry {position} ({:?}): not a PNG, JPEG, GIF or WebP image", cut(path)),
                )
            })?;
            parts.push(image_part(image_type, &base64::encode(&bytes)));
        }
        for (position, (text, bytes)) in requested.texts.iter().zip(contents).enumerate() {
            let content = String::from_utf8(bytes).map_err(|_| {
                invalid("attachments", format!("entry {position} ({:?}): not UTF-8 text", cut(&text.path)))
            })?;
            inline_text(handoff, position, &text.reference, &content)?;
        }
        if !parts.is_empty() {
            append_parts(&mut handoff.messages, &parts);
        }
        Ok(())
    }
}

/// Whether a stream's files may now be deleted (with `delete_after_use` on): only
/// once a backend answered the request with a success status, which means it took
/// the content. A refused, failed or mock-served request leaves them for a retry.
pub fn delete_after(summary: &StreamSummary) -> bool {
    summary.backend_status.is_some_and(|status| (200..300).contains(&status))
}

fn image_part(image_type: ImageType, base64: &str) -> String {
    let mut part = String::with_capacity(base64.len() + 64);
    part.push_str(r#"{"type":"image_url","image_url":{"url":"data:"#);
    part.push_str(image_type.mime());
    part.push_str(";base64,");
    part.push_str(base64);
    part.push_str(r#""}}"#);
    part
}

/// Appends content parts to the last user message (turning a string content into
/// a text part first), or adds a user message holding only them.
fn append_parts(messages: &mut Vec<Message>, parts: &[String]) {
    let joined = parts.join(",");
    let Some(message) = messages.iter_mut().rev().find(|message| message.role == "user") else {
        messages.push(Message::new("user", Json::trusted(format!("[{joined}]"))));
        return;
    };
    let content = message.content.get();
    let combined = match content.as_bytes().first() {
        Some(b'[') if content == "[]" => format!("[{joined}]"),
        Some(b'[') => format!("{},{joined}]", content.get(..content.len() - 1).unwrap_or_default()),
        Some(b'"') => format!(r#"[{{"type":"text","text":{content}}},{joined}]"#),
        _ => format!("[{joined}]"),
    };
    message.content = Json::trusted(combined);
}

/// Replaces `{reference}` in every user message whose content is a string.
/// An attachment no message refers to is an error: its content would be lost.
fn inline_text(
    handoff: &mut Handoff,
    position: usize,
    reference: &str,
    text: &str,
) -> Result<(), HandoffError> {
    let placeholder = format!("{{{reference}}}");
    let mut used = false;
    for message in handoff.messages.iter_mut().filter(|message| message.role == "user") {
        let Ok(content) = serde_json::from_str::<String>(message.content.get()) else { continue };
        if content.contains(&placeholder) {
            message.content = Json::string(&content.replace(&placeholder, text));
            used = true;
        }
    }
    if used {
        Ok(())
    } else {
        Err(invalid(
            "attachments",
            format!("entry {position}: no user message (as a string) contains {placeholder:?}"),
        ))
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> HandoffError {
    HandoffError::InvalidField { field, reason: reason.into() }
}

/// A path as a 400 may quote it: bounded, so a long path does not bloat it.
fn cut(path: &str) -> &str {
    let mut end = path.len().min(128);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path.get(..end).unwrap_or_default()
}
