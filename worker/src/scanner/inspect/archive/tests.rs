//! Archives built in memory with `zip::ZipWriter`, some patched by hand afterwards to
//! lie the way an attacker's would.

use std::io::{Cursor, Write};
use std::sync::OnceLock;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::scanner::inspect::{Limits, Rule, inspect};

const MIB: usize = 1024 * 1024;

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in entries {
        writer.start_file(*name, deflated()).expect("start entry");
        writer.write_all(content).expect("write entry");
    }
    writer.finish().expect("finish").into_inner()
}

/// A ZIP holding `levels - 1` ZIPs inside each other, the innermost holding a note.
fn nested(levels: usize) -> Vec<u8> {
    let mut archive = zip_of(&[("note.txt", b"innermost")]);
    for level in 1..levels {
        archive = zip_of(&[(&format!("level-{level}.zip"), &archive)]);
    }
    archive
}

/// 200 MiB of zeros in 200 entries, about 200 KiB on the wire: 1 MiB is deflated
/// once and its compressed bytes copied (deflating 200 MiB unoptimised takes ~10 s).
fn zeros_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let seed = zip_of(&[("zeros.bin", &vec![0u8; MIB])]);
        let mut seed = ZipArchive::new(Cursor::new(seed)).expect("seed archive");
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..200 {
            let zeros = seed.by_index(0).expect("seed entry");
            writer
                .raw_copy_file_rename(zeros, format!("zeros-{i:03}.bin"))
                .expect("copy");
        }
        writer.finish().expect("finish").into_inner()
    })
}

/// Bytes that do not compress (xorshift), so ratios stay near 1.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Rewrites the uncompressed size of every entry, in the local headers and the
/// central directory alike.
fn declare_uncompressed_size(archive: &mut [u8], size: u32) {
    for (signature, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let starts: Vec<usize> = archive
            .windows(4)
            .enumerate()
            .filter(|(_, window)| window == signature)
            .map(|(at, _)| at)
            .collect();
        assert!(!starts.is_empty(), "no header {signature:?}");
        for start in starts {
            archive[start + offset..start + offset + 4].copy_from_slice(&size.to_le_bytes());
        }
    }
}

fn names(bytes: &[u8]) -> Vec<&'static str> {
    names_with(bytes, &Limits::default())
}

fn names_with(bytes: &[u8], limits: &Limits) -> Vec<&'static str> {
    inspect(bytes, "zip", limits)
        .into_iter()
        .map(Rule::name)
        .collect()
}

#[test]
fn an_ordinary_archive_is_clean() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.add_directory("docs/", deflated()).expect("dir");
    writer
        .start_file("docs/report.csv", deflated())
        .expect("file");
    writer.write_all(b"a,b\n1,2\n").expect("write");
    writer
        .start_file("photos/cat.png", deflated())
        .expect("file");
    writer.write_all(&noise(2 * MIB)).expect("write");
    writer.start_file("empty.txt", deflated()).expect("file");
    let archive = writer.finish().expect("finish").into_inner();
    assert!(names(&archive).is_empty(), "{:?}", names(&archive));
}

#[test]
fn a_parent_directory_entry_is_path_traversal() {
    for name in ["../evil.txt", "docs/../../etc/cron.d/evil", ".."] {
        assert_eq!(
            names(&zip_of(&[(name, b"x")])),
            ["Conveyor.Archive.PathTraversal"],
            "{name}"
        );
    }
}

#[test]
fn an_absolute_or_windows_entry_is_path_traversal() {
    for name in [
        "/etc/passwd",
        "C:/Windows/System32/evil.txt",
        "c:evil.txt",
        "docs\\..\\..\\evil.txt",
        "\\\\server\\share\\evil.txt",
    ] {
        assert_eq!(
            names(&zip_of(&[(name, b"x")])),
            ["Conveyor.Archive.PathTraversal"],
            "{name}"
        );
    }
}

#[test]
fn names_that_only_look_like_parents_are_fine() {
    assert!(names(&zip_of(&[("a..b/..c/d..", b"x"), ("docs/./x", b"y")])).is_empty());
}

#[test]
fn a_symlink_entry_is_flagged() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer
        .add_symlink("passwd", "/etc/passwd", SimpleFileOptions::default())
        .expect("symlink");
    let archive = writer.finish().expect("finish").into_inner();
    assert_eq!(names(&archive), ["Conveyor.Archive.Symlink"]);
}

#[test]
fn an_executable_extension_inside_is_flagged() {
    for name in ["setup.exe", "tools/Run.BAT", "a/b/script.ps1", "lib.jar"] {
        assert_eq!(
            names(&zip_of(&[(name, b"harmless bytes")])),
            ["Conveyor.Archive.Executable"],
            "{name}"
        );
    }
}

#[test]
fn an_executable_by_magic_is_flagged_whatever_its_name() {
    for magic in [
        &b"MZ\x90\x00\x03"[..],
        b"\x7fELF\x02\x01\x01",
        b"\xcf\xfa\xed\xfe\x07",
    ] {
        let mut content = magic.to_vec();
        content.extend_from_slice(&[0; 64]);
        assert_eq!(
            names(&zip_of(&[("holiday.jpg", &content)])),
            ["Conveyor.Archive.Executable"],
            "{magic:?}"
        );
    }
}

#[test]
fn nested_archives_within_the_depth_limit_are_inspected() {
    assert!(names(&nested(3)).is_empty());
    let inner = zip_of(&[("run.exe", b"x")]);
    let outer = zip_of(&[("inner.zip", &inner)]);
    assert_eq!(names(&outer), ["Conveyor.Archive.Executable"]);
}

#[test]
fn archives_nested_four_deep_are_too_deep() {
    assert_eq!(names(&nested(4)), ["Conveyor.Archive.NestingTooDeep"]);
    let shallow = Limits {
        archive_max_depth: 0,
        ..Limits::default()
    };
    assert_eq!(
        names_with(&nested(2), &shallow),
        ["Conveyor.Archive.NestingTooDeep"]
    );
}

#[test]
fn a_highly_compressed_archive_is_a_bomb() {
    let bomb = zeros_bomb();
    assert!(bomb.len() < MIB, "{} bytes on the wire", bomb.len());
    assert_eq!(names(bomb), ["Conveyor.Archive.Bomb"]);
}

#[test]
fn a_bomb_nested_in_an_archive_is_a_bomb() {
    let outer = zip_of(&[("inner.zip", zeros_bomb())]);
    assert_eq!(names(&outer), ["Conveyor.Archive.Bomb"]);
}

#[test]
fn small_archives_may_compress_well() {
    assert!(names(&zip_of(&[("zeros.bin", &vec![0u8; MIB / 2])])).is_empty());
}

#[test]
fn declared_bytes_past_the_limit_are_a_bomb() {
    let archive = zip_of(&[("a.bin", &noise(MIB)), ("b.bin", &noise(MIB))]);
    let tight = Limits {
        archive_max_bytes: (3 * MIB / 2) as u64,
        ..Limits::default()
    };
    assert!(names(&archive).is_empty());
    assert_eq!(names_with(&archive, &tight), ["Conveyor.Archive.Bomb"]);
}

#[test]
fn a_central_directory_understating_a_size_is_a_bomb() {
    let mut archive = zip_of(&[("data.bin", &vec![0u8; 5 * MIB])]);
    declare_uncompressed_size(&mut archive, 1000);
    assert_eq!(names(&archive), ["Conveyor.Archive.Bomb"]);
}

#[test]
fn a_central_directory_overstating_a_size_is_malformed() {
    let mut archive = zip_of(&[("data.txt", b"short and sweet")]);
    declare_uncompressed_size(&mut archive, 4000);
    assert_eq!(names(&archive), ["Conveyor.Archive.Malformed"]);
}

#[test]
fn entries_sharing_their_data_are_a_bomb() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("a.txt", deflated()).expect("file");
    writer.write_all(&noise(4096)).expect("write");
    writer.shallow_copy_file("a.txt", "b.txt").expect("copy");
    let archive = writer.finish().expect("finish").into_inner();
    assert_eq!(names(&archive), ["Conveyor.Archive.Bomb"]);
}

#[test]
fn too_many_entries_are_flagged() {
    let notes: Vec<String> = (0..10_001).map(|i| format!("n{i}.txt")).collect();
    let entries: Vec<(&str, &[u8])> = notes.iter().map(|n| (n.as_str(), &b""[..])).collect();
    let archive = zip_of(&entries);
    assert_eq!(names(&archive), ["Conveyor.Archive.TooManyEntries"]);
    let roomier = Limits {
        archive_max_entries: 10_001,
        ..Limits::default()
    };
    assert!(names_with(&archive, &roomier).is_empty());
}

#[test]
fn entries_of_nested_archives_count_towards_the_limit() {
    let inner = zip_of(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
    let outer = zip_of(&[("inner.zip", &inner), ("d", b"4")]);
    let limits = Limits {
        archive_max_entries: 4,
        ..Limits::default()
    };
    assert_eq!(
        names_with(&outer, &limits),
        ["Conveyor.Archive.TooManyEntries"]
    );
}

#[test]
fn duplicate_names_are_malformed() {
    let mut archive = zip_of(&[("a.txt", b"first"), ("b.txt", b"second")]);
    let at: Vec<usize> = archive
        .windows(5)
        .enumerate()
        .filter(|(_, w)| w == b"b.txt")
        .map(|(at, _)| at)
        .collect();
    for start in at {
        archive[start] = b'a';
    }
    assert_eq!(names(&archive), ["Conveyor.Archive.Malformed"]);
}

#[test]
fn bytes_that_are_not_an_archive_are_malformed() {
    assert_eq!(names(b"PK\x03\x04 garbage"), ["Conveyor.Archive.Malformed"]);
    assert_eq!(names(b""), ["Conveyor.Archive.Malformed"]);
    let archive = zip_of(&[("a.txt", b"hello")]);
    assert_eq!(
        names(&archive[..archive.len() - 10]),
        ["Conveyor.Archive.Malformed"]
    );
}

#[test]
fn corrupt_entry_data_is_malformed() {
    let mut archive = zip_of(&[("data.txt", &b"hello hello hello ".repeat(100))]);
    // The deflate stream starts right after the 30-byte local header and the name.
    let data = 30 + "data.txt".len();
    for byte in &mut archive[data..data + 8] {
        *byte ^= 0xa5;
    }
    assert_eq!(names(&archive), ["Conveyor.Archive.Malformed"]);
}

#[test]
fn every_rule_an_archive_breaks_is_reported() {
    let archive = zip_of(&[("../x.exe", b"MZ"), ("ok.txt", b"fine")]);
    assert_eq!(
        names(&archive),
        [
            "Conveyor.Archive.PathTraversal",
            "Conveyor.Archive.Executable"
        ]
    );
}
