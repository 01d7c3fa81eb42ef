//! What the server makes of an uploaded file's client-supplied facts: a file name safe
//! to keep as metadata, and the file's type decided by its bytes against an allowlist.

mod kind;
mod name;

pub use kind::{FileType, TypeRejection, UnknownFileType, detect};
pub use name::{MAX_NAME_BYTES, sanitize_file_name};
