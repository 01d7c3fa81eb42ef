//! Files for upload and scan tests, built in memory: real PNGs (any declared size),
//! the EICAR test string, and ZIP archives — ordinary, hostile and bombs.

use std::io::{Cursor, Write as _};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The EICAR anti-virus test file (68 bytes of ASCII): harmless, detected by design.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid grey-scale PNG whose header says `width` × `height`, with `rows` rows of
/// pixel data actually present (a pixel flood declares far more than it carries).
/// `seed` varies the pixels, so two images differ in content.
pub fn png(width: u32, height: u32, rows: u32, seed: u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for row in 0..rows {
        raw.push(0); // filter: none
        for column in 0..width.min(4096) {
            raw.push(seed.wrapping_add((row ^ column) as u8));
        }
    }
    // zlib stream of stored (uncompressed) deflate blocks.
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    if blocks.is_empty() {
        zlib.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A small, complete, ordinary PNG.
pub fn small_png(seed: u8) -> Vec<u8> {
    png(64, 48, 48, seed)
}

/// One entry of a test archive.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A ZIP (deflated) holding `entries`.
pub fn zip(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for entry in entries {
        match entry {
            Entry::File(name, bytes) => {
                writer.start_file(*name, options).expect("zip entry");
                writer.write_all(bytes).expect("zip write");
            }
            Entry::Symlink(name, target) => {
                writer
                    .add_symlink(*name, *target, options)
                    .expect("zip symlink");
            }
        }
    }
    writer.finish().expect("zip finishes").into_inner()
}

/// A ZIP bomb: one entry of `mib` MiB of zeros, deflated to a few hundred KiB.
pub fn zip_bomb(mib: usize) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .large_file(mib >= 4096);
    writer.start_file("zeros.bin", options).expect("zip entry");
    let block = vec![0u8; 1024 * 1024];
    for _ in 0..mib {
        writer.write_all(&block).expect("zip write");
    }
    writer.finish().expect("zip finishes").into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn a_png_reads_back_its_declared_size() {
        let png = png(100_000, 100_000, 1, 0);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[16..24], &[0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0]);
    }
}
