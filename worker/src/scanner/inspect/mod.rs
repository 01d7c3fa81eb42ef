//! Structural inspectors: what byte signatures cannot say about a file — archive
//! layout (paths, links, nesting, bombs) and image headers (pixel floods, scripts
//! hidden in a declared image). Pure functions over the bytes and the detected type;
//! nothing is decoded, extracted or written to disk.

mod archive;
mod image;

use std::collections::BTreeSet;
use std::fmt;

const MIB: u64 = 1024 * 1024;

/// A structural rule; its [`name`](Rule::name) is what a report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// An entry name that escapes the extraction directory (absolute, `..`,
    /// backslashes, a drive letter, a NUL byte).
    ArchivePathTraversal,
    /// A symbolic link entry (unix mode `S_IFLNK`).
    ArchiveSymlink,
    /// An executable or script inside, by extension or by magic bytes.
    ArchiveExecutable,
    /// Archives nested deeper than [`Limits::archive_max_depth`].
    ArchiveNestingTooDeep,
    /// Declared or actual sizes past the limits, a ratio past the limit, overlapping
    /// entries, or an entry larger than the central directory says.
    ArchiveBomb,
    /// More entries than [`Limits::archive_max_entries`] (nested ones included).
    ArchiveTooManyEntries,
    /// An archive or entry the ZIP reader cannot read.
    ArchiveMalformed,
    /// A header declaring more pixels, or a longer side, than the limits.
    ImagePixelFlood,
    /// An image whose header cannot be parsed or is not of the declared type.
    ImageMalformed,
    /// Script or HTML markup inside a declared image.
    ImageEmbeddedScript,
}

impl Rule {
    /// Every rule the inspectors know.
    pub const ALL: [Rule; 10] = [
        Rule::ArchivePathTraversal,
        Rule::ArchiveSymlink,
        Rule::ArchiveExecutable,
        Rule::ArchiveNestingTooDeep,
        Rule::ArchiveBomb,
        Rule::ArchiveTooManyEntries,
        Rule::ArchiveMalformed,
        Rule::ImagePixelFlood,
        Rule::ImageMalformed,
        Rule::ImageEmbeddedScript,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Rule::ArchivePathTraversal => "Conveyor.Archive.PathTraversal",
            Rule::ArchiveSymlink => "Conveyor.Archive.Symlink",
            Rule::ArchiveExecutable => "Conveyor.Archive.Executable",
            Rule::ArchiveNestingTooDeep => "Conveyor.Archive.NestingTooDeep",
            Rule::ArchiveBomb => "Conveyor.Archive.Bomb",
            Rule::ArchiveTooManyEntries => "Conveyor.Archive.TooManyEntries",
            Rule::ArchiveMalformed => "Conveyor.Archive.Malformed",
            Rule::ImagePixelFlood => "Conveyor.Image.PixelFlood",
            Rule::ImageMalformed => "Conveyor.Image.Malformed",
            Rule::ImageEmbeddedScript => "Conveyor.Image.EmbeddedScript",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the inspectors accept; past any of these a file is infected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting levels below the uploaded archive (an archive in the upload is level 1).
    pub archive_max_depth: u32,
    /// Entries in the whole tree of archives.
    pub archive_max_entries: u64,
    /// Uncompressed bytes in the whole tree of archives.
    pub archive_max_bytes: u64,
    /// Uncompressed bytes per archive byte, checked for archives holding more than
    /// [`archive_ratio_floor`](Limits::archive_ratio_floor).
    pub archive_max_ratio: u64,
    pub archive_ratio_floor: u64,
    /// A nested archive is read into memory to be inspected; a larger one is a bomb.
    pub archive_max_nested_bytes: u64,
    pub max_image_pixels: u64,
    pub max_image_side: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            archive_max_depth: 2,
            archive_max_entries: 10_000,
            archive_max_bytes: 512 * MIB,
            archive_max_ratio: 100,
            archive_ratio_floor: MIB,
            archive_max_nested_bytes: 64 * MIB,
            max_image_pixels: 100_000_000,
            max_image_side: 30_000,
        }
    }
}

/// The rules `bytes`, detected as `file_type` (`png`, `jpeg`, `gif`, `webp`, `zip`,
/// …), break; sorted. Types without a structural inspector (`pdf`, `text`, `csv`)
/// are left to clamd's signatures.
pub fn inspect(bytes: &[u8], file_type: &str, limits: &Limits) -> Vec<Rule> {
    let mut found = BTreeSet::new();
    match file_type {
        "zip" => archive::inspect(bytes, limits, &mut found),
        "png" | "jpeg" | "gif" | "webp" => image::inspect(bytes, file_type, limits, &mut found),
        _ => {}
    }
    found.into_iter().collect()
}

/// Whether [`inspect`] may take more than about a millisecond: archives always (a
/// small one can nest large ones), images when they are large.
pub fn is_costly(bytes: &[u8], file_type: &str) -> bool {
    const CHEAP_IMAGE: usize = 256 * 1024;
    match file_type {
        "zip" => true,
        "png" | "jpeg" | "gif" | "webp" => bytes.len() > CHEAP_IMAGE,
        _ => false,
    }
}
