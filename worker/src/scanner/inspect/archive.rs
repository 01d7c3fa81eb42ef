//! ZIP archives, read from memory with the `zip` crate and never extracted: the
//! central directory decides names, links, entry counts and declared sizes; then
//! every entry is inflated into a sink, no further than its declared size + 1, to
//! sniff its first bytes and to catch a central directory that lies about sizes.
//! Only entries that are themselves ZIPs are kept in memory, to recurse into.

use std::collections::BTreeSet;
use std::io::{self, Cursor, Read};

use zip::ZipArchive;
use zip::read::ZipFileEntry;

use super::{Limits, Rule};

/// Extensions of files that run when opened (compared case-insensitively).
const EXECUTABLE_EXTENSIONS: [&str; 13] = [
    "exe", "dll", "scr", "bat", "cmd", "com", "ps1", "vbs", "js", "jar", "msi", "sh", "elf",
];
/// Enough leading bytes to recognise an executable or a ZIP.
const MAGIC_LEN: usize = 4;
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// What the whole tree of archives has used so far: nesting cannot multiply limits.
#[derive(Default)]
struct Budget {
    entries: u64,
    bytes: u64,
}

pub(super) fn inspect(bytes: &[u8], limits: &Limits, found: &mut BTreeSet<Rule>) {
    inspect_archive(bytes, 0, limits, &mut Budget::default(), found);
}

fn inspect_archive(
    bytes: &[u8],
    depth: u32,
    limits: &Limits,
    budget: &mut Budget,
    found: &mut BTreeSet<Rule>,
) {
    let Ok(mut archive) = ZipArchive::new(Cursor::new(bytes)) else {
        found.insert(Rule::ArchiveMalformed);
        return;
    };
    budget.entries = budget.entries.saturating_add(archive.len() as u64);
    if budget.entries > limits.archive_max_entries {
        found.insert(Rule::ArchiveTooManyEntries);
        return;
    }
    // Two entries with one name: extractors disagree on which one wins.
    if archive.has_duplicate_names() {
        found.insert(Rule::ArchiveMalformed);
    }
    let mut declared = 0u64;
    for index in 0..archive.len() {
        let Ok(entry) = archive.by_index_data(index) else {
            found.insert(Rule::ArchiveMalformed);
            return;
        };
        declared = declared.saturating_add(entry.size());
        inspect_entry_metadata(&entry, found);
    }
    budget.bytes = budget.bytes.saturating_add(declared);
    let ratio_exceeded = declared > limits.archive_ratio_floor
        && declared > (bytes.len() as u64).saturating_mul(limits.archive_max_ratio);
    // Entries sharing their compressed data are the overlapping-files bomb.
    let overlapping = match archive.has_overlapping_files() {
        Ok(overlapping) => overlapping,
        Err(_) => {
            found.insert(Rule::ArchiveMalformed);
            return;
        }
    };
    if budget.bytes > limits.archive_max_bytes || ratio_exceeded || overlapping {
        found.insert(Rule::ArchiveBomb);
        return;
    }
    for index in 0..archive.len() {
        inspect_entry_content(&mut archive, index, depth, limits, budget, found);
    }
}

fn inspect_entry_metadata(entry: &ZipFileEntry<'_>, found: &mut BTreeSet<Rule>) {
    let name = match entry.name() {
        Ok(name) => name.into_owned(),
        Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
    };
    if is_unsafe_path(&name) {
        found.insert(Rule::ArchivePathTraversal);
    }
    // The mode is in the high half whichever system the archive claims to come from.
    if (entry.external_attributes() >> 16) & S_IFMT == S_IFLNK {
        found.insert(Rule::ArchiveSymlink);
    }
    if !entry.is_dir() && has_executable_extension(&name) {
        found.insert(Rule::ArchiveExecutable);
    }
}

fn inspect_entry_content(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    depth: u32,
    limits: &Limits,
    budget: &mut Budget,
    found: &mut BTreeSet<Rule>,
) {
    // Neither we nor clamd can look inside an encrypted entry; its name was checked.
    if archive
        .by_index_data(index)
        .is_ok_and(|entry| entry.encrypted())
    {
        return;
    }
    let mut file = match archive.by_index(index) {
        Ok(file) => file,
        Err(_) => {
            found.insert(Rule::ArchiveMalformed);
            return;
        }
    };
    let declared = file.size();
    let mut magic = [0u8; MAGIC_LEN];
    let sniffed = match read_up_to(&mut file, &mut magic) {
        Ok(n) => n,
        Err(err) => {
            found.insert(read_error_rule(&err));
            return;
        }
    };
    let magic = &magic[..sniffed];
    let unread = declared.saturating_add(1).saturating_sub(sniffed as u64);
    let read = if is_zip(magic) {
        if depth >= limits.archive_max_depth {
            found.insert(Rule::ArchiveNestingTooDeep);
            return;
        }
        if declared > limits.archive_max_nested_bytes {
            found.insert(Rule::ArchiveBomb);
            return;
        }
        let mut nested = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        nested.extend_from_slice(magic);
        let read = (&mut file).take(unread).read_to_end(&mut nested);
        if read.is_ok() && nested.len() as u64 == declared {
            inspect_archive(&nested, depth + 1, limits, budget, found);
        }
        read.map(|n| n as u64)
    } else {
        if is_executable_magic(magic) {
            found.insert(Rule::ArchiveExecutable);
        }
        io::copy(&mut (&mut file).take(unread), &mut io::sink())
    };
    match read.map(|rest| rest + sniffed as u64) {
        Ok(actual) if actual > declared => {
            found.insert(Rule::ArchiveBomb);
        }
        Ok(actual) if actual < declared => {
            found.insert(Rule::ArchiveMalformed);
        }
        Ok(_) => {}
        Err(err) => {
            found.insert(read_error_rule(&err));
        }
    }
}

/// Reads until `buf` is full or the entry ends.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// The `zip` crate stops an entry that inflates past its declared size with an
/// `InvalidData` error; only its message tells it from corrupt data.
fn read_error_rule(err: &io::Error) -> Rule {
    if err.to_string().contains("larger than its declared") {
        Rule::ArchiveBomb
    } else {
        Rule::ArchiveMalformed
    }
}

fn is_unsafe_path(name: &str) -> bool {
    let bytes = name.as_bytes();
    let drive_letter = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || drive_letter
        || name.split('/').any(|component| component == "..")
}

fn has_executable_extension(name: &str) -> bool {
    let file_name = name.rsplit('/').next().unwrap_or(name);
    file_name.rsplit_once('.').is_some_and(|(_, extension)| {
        EXECUTABLE_EXTENSIONS
            .iter()
            .any(|executable| extension.eq_ignore_ascii_case(executable))
    })
}

fn is_executable_magic(magic: &[u8]) -> bool {
    magic.starts_with(b"MZ")
        || magic.starts_with(b"\x7fELF")
        // Mach-O 32/64-bit in either byte order, and universal binaries (also Java classes).
        || [
            [0xfe, 0xed, 0xfa, 0xce],
            [0xfe, 0xed, 0xfa, 0xcf],
            [0xce, 0xfa, 0xed, 0xfe],
            [0xcf, 0xfa, 0xed, 0xfe],
            [0xca, 0xfe, 0xba, 0xbe],
        ]
        .iter()
        .any(|mach_o| magic.starts_with(mach_o))
}

/// A local file header, or the end record of an empty archive.
fn is_zip(magic: &[u8]) -> bool {
    magic == b"PK\x03\x04" || magic == b"PK\x05\x06"
}

#[cfg(test)]
mod tests;
