//! A file's type, decided by its first bytes (magic numbers via `infer`, then a
//! UTF-8 text check) and held against an allowlist, the declared Content-Type and the
//! file name's extension. Any disagreement rejects the file.

use std::fmt;
use std::str::FromStr;

use infer::MatcherType;
use serde::{Deserialize, Serialize};

/// The types an upload may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    Png,
    Jpeg,
    Gif,
    Webp,
    Pdf,
    Text,
    Csv,
    Zip,
}

impl FileType {
    pub const ALL: [FileType; 8] = [
        FileType::Png,
        FileType::Jpeg,
        FileType::Gif,
        FileType::Webp,
        FileType::Pdf,
        FileType::Text,
        FileType::Csv,
        FileType::Zip,
    ];

    /// The media type the file is served with.
    pub fn mime(self) -> &'static str {
        match self {
            FileType::Png => "image/png",
            FileType::Jpeg => "image/jpeg",
            FileType::Gif => "image/gif",
            FileType::Webp => "image/webp",
            FileType::Pdf => "application/pdf",
            FileType::Text => "text/plain",
            FileType::Csv => "text/csv",
            FileType::Zip => "application/zip",
        }
    }

    /// The stable lowercase name (configuration, JSON).
    pub fn name(self) -> &'static str {
        match self {
            FileType::Png => "png",
            FileType::Jpeg => "jpeg",
            FileType::Gif => "gif",
            FileType::Webp => "webp",
            FileType::Pdf => "pdf",
            FileType::Text => "text",
            FileType::Csv => "csv",
            FileType::Zip => "zip",
        }
    }

    /// File-name extensions (lowercase, without the dot) that fit the type.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            FileType::Png => &["png"],
            FileType::Jpeg => &["jpg", "jpeg", "jpe", "jfif"],
            FileType::Gif => &["gif"],
            FileType::Webp => &["webp"],
            FileType::Pdf => &["pdf"],
            FileType::Text => &["txt", "text", "log", "md", "csv"],
            FileType::Csv => &["csv", "txt"],
            FileType::Zip => &["zip"],
        }
    }

    pub fn is_image(self) -> bool {
        matches!(
            self,
            FileType::Png | FileType::Jpeg | FileType::Gif | FileType::Webp
        )
    }

    /// Content-Types clients send for this type, besides `application/octet-stream`.
    fn declared_aliases(self) -> &'static [&'static str] {
        match self {
            FileType::Png => &["image/png", "image/x-png", "image/apng"],
            FileType::Jpeg => &["image/jpeg", "image/jpg", "image/pjpeg"],
            FileType::Gif => &["image/gif"],
            FileType::Webp => &["image/webp"],
            FileType::Pdf => &["application/pdf", "application/x-pdf"],
            FileType::Text => &[
                "text/plain",
                "text/markdown",
                "text/x-markdown",
                "text/x-log",
            ],
            // Windows browsers declare CSV files by the program that opens them.
            FileType::Csv => &[
                "text/csv",
                "text/plain",
                "application/csv",
                "text/comma-separated-values",
                "application/vnd.ms-excel",
            ],
            FileType::Zip => &[
                "application/zip",
                "application/x-zip-compressed",
                "application/x-zip",
                "multipart/x-zip",
            ],
        }
    }

    /// The type `infer` reports as `mime`, when it is one of ours.
    fn from_infer(mime: &str) -> Option<FileType> {
        [
            FileType::Png,
            FileType::Jpeg,
            FileType::Gif,
            FileType::Webp,
            FileType::Pdf,
            FileType::Zip,
        ]
        .into_iter()
        .find(|t| t.mime() == mime)
    }

    /// `infer` decides some types on very few bytes; these need the full signature.
    fn signature_holds(self, head: &[u8]) -> bool {
        match self {
            FileType::Png => head.starts_with(b"\x89PNG\r\n\x1a\n"),
            FileType::Gif => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
            FileType::Webp => head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP"),
            FileType::Pdf => head.starts_with(b"%PDF-"),
            FileType::Jpeg | FileType::Zip | FileType::Text | FileType::Csv => true,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`FileType::name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown file type {0:?} (expected one of png, jpeg, gif, webp, pdf, text, csv, zip)")]
pub struct UnknownFileType(pub String);

impl FromStr for FileType {
    type Err = UnknownFileType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FileType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownFileType(s.to_owned()))
    }
}

/// Why a file was refused; the message is fit for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeRejection {
    #[error("files of type {detected} are not accepted")]
    NotAllowed { detected: String },
    #[error("the file was declared as {declared} but its content is {detected}")]
    Contradicts { declared: String, detected: String },
    #[error("the file name's extension .{extension} does not fit its content ({detected})")]
    WrongExtension { extension: String, detected: String },
}

/// What content that is neither a known format nor text is reported as.
const UNRECOGNISED: &str = "application/octet-stream";

/// The type of a file whose first bytes are `head` (a few KiB is plenty), if it is in
/// `allowed` and neither the declared Content-Type nor the name's extension disagrees.
/// Text is UTF-8 without binary control characters; it is CSV when declared `text/csv`
/// or named `.csv`.
pub fn detect(
    head: &[u8],
    declared_mime: Option<&str>,
    file_name: Option<&str>,
    allowed: &[FileType],
) -> Result<FileType, TypeRejection> {
    let declared = declared_mime.map(essence).filter(|m| !m.is_empty());
    let extension = file_name.and_then(extension);
    let inferred = infer::get(head);
    let known = inferred
        .and_then(|kind| FileType::from_infer(kind.mime_type()))
        .filter(|t| t.signature_holds(head));
    let detected = match (known, inferred) {
        (Some(known), _) => known,
        // Short binary magic numbers ("GIF", "BM", "MZ") also open plain text; real
        // binary formats carry control bytes in their first bytes, so text wins.
        (None, kind)
            if is_text(head) && kind.is_none_or(|k| k.matcher_type() != MatcherType::Text) =>
        {
            let csv =
                declared.as_deref() == Some("text/csv") || extension.as_deref() == Some("csv");
            if csv { FileType::Csv } else { FileType::Text }
        }
        (None, Some(kind)) => return Err(not_allowed(kind.mime_type())),
        (None, None) => return Err(not_allowed(UNRECOGNISED)),
    };
    if !allowed.contains(&detected) {
        return Err(not_allowed(detected.mime()));
    }
    if let Some(declared) =
        declared.filter(|d| d != UNRECOGNISED && !detected.declared_aliases().contains(&d.as_str()))
    {
        return Err(TypeRejection::Contradicts {
            declared: printable(&declared),
            detected: detected.mime().to_owned(),
        });
    }
    if let Some(extension) = extension.filter(|e| !detected.extensions().contains(&e.as_str())) {
        return Err(TypeRejection::WrongExtension {
            extension: printable(&extension),
            detected: detected.mime().to_owned(),
        });
    }
    Ok(detected)
}

fn not_allowed(detected: &str) -> TypeRejection {
    TypeRejection::NotAllowed {
        detected: detected.to_owned(),
    }
}

/// `Text/CSV; charset=utf-8` → `text/csv`.
fn essence(mime: &str) -> String {
    mime.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The lowercase extension of the name's last component; none for `.bashrc` or `x.`.
fn extension(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let (stem, extension) = last.rsplit_once('.')?;
    (!stem.is_empty() && !extension.is_empty()).then(|| extension.to_lowercase())
}

/// Client-supplied text echoed in a message: bounded, without control characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// UTF-8 (a multi-byte character cut off by the end of `head` is fine) without NUL or
/// other binary control characters; tab, line breaks, form feed and ESC (terminal
/// colours in logs) are text.
fn is_text(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // `error_len() == None`: the input ended inside a character.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b'))
}

#[cfg(test)]
mod tests;
