//! Images: dimensions from the header alone (never decoded), so a pixel flood is
//! refused before anything allocates for it; and markup hidden in a declared image,
//! which a browser or a careless server could run.

use std::collections::BTreeSet;

use imagesize::ImageType;

use super::{Limits, Rule};

/// Markup that turns an image into a script carrier; matched case-insensitively.
/// Tags must end at a tag boundary, which keeps random compressed bytes from
/// matching a four-letter tag by chance.
const TAGS: [&[u8]; 5] = [b"<script", b"<?php", b"<html", b"<svg", b"<iframe"];
const SCHEMES: [&[u8]; 1] = [b"javascript:"];

pub(super) fn inspect(bytes: &[u8], declared: &str, limits: &Limits, found: &mut BTreeSet<Rule>) {
    match imagesize::image_type(bytes) {
        Ok(actual) if matches_declared(&actual, declared) => match imagesize::blob_size(bytes) {
            Ok(size) => {
                let (width, height) = (size.width as u64, size.height as u64);
                if width > limits.max_image_side
                    || height > limits.max_image_side
                    || width.saturating_mul(height) > limits.max_image_pixels
                {
                    found.insert(Rule::ImagePixelFlood);
                }
            }
            Err(_) => {
                found.insert(Rule::ImageMalformed);
            }
        },
        _ => {
            found.insert(Rule::ImageMalformed);
        }
    }
    if contains_markup(bytes) {
        found.insert(Rule::ImageEmbeddedScript);
    }
}

fn matches_declared(actual: &ImageType, declared: &str) -> bool {
    matches!(
        (actual, declared),
        (ImageType::Png, "png")
            | (ImageType::Jpeg, "jpeg")
            | (ImageType::Gif, "gif")
            | (ImageType::Webp, "webp")
    )
}

fn contains_markup(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(at, &byte)| {
        let rest = &bytes[at..];
        match byte {
            b'<' => TAGS
                .iter()
                .any(|tag| starts_with_ignore_case(rest, tag) && ends_tag(rest.get(tag.len()))),
            b'j' | b'J' => SCHEMES
                .iter()
                .any(|scheme| starts_with_ignore_case(rest, scheme)),
            _ => false,
        }
    })
}

fn starts_with_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .get(..needle.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(needle))
}

fn ends_tag(next: Option<&u8>) -> bool {
    next.is_none_or(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanner::inspect::inspect;

    /// A PNG signature and IHDR chunk declaring `width`×`height` (8-bit RGBA), with
    /// a correct CRC even though the header parser does not check it.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&width.to_be_bytes());
        chunk.extend_from_slice(&height.to_be_bytes());
        chunk.extend_from_slice(&[8, 6, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(b"IEND");
        png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn gif_header(width: u16, height: u16) -> Vec<u8> {
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&width.to_le_bytes());
        gif.extend_from_slice(&height.to_le_bytes());
        gif.extend_from_slice(&[0, 0, 0, b';']);
        gif
    }

    fn names(bytes: &[u8], file_type: &str) -> Vec<&'static str> {
        inspect(bytes, file_type, &Limits::default())
            .into_iter()
            .map(Rule::name)
            .collect()
    }

    #[test]
    fn the_crc_helper_matches_the_png_reference_value() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }

    #[test]
    fn an_ordinary_png_is_clean() {
        assert!(names(&png_header(1920, 1080), "png").is_empty());
    }

    #[test]
    fn absurd_png_dimensions_are_a_pixel_flood() {
        assert_eq!(
            names(&png_header(20_000, 20_000), "png"),
            ["Conveyor.Image.PixelFlood"]
        );
    }

    #[test]
    fn one_absurd_side_is_a_pixel_flood() {
        assert_eq!(
            names(&png_header(1, 0x7fff_ffff), "png"),
            ["Conveyor.Image.PixelFlood"]
        );
        assert_eq!(
            names(&png_header(30_001, 1), "png"),
            ["Conveyor.Image.PixelFlood"]
        );
    }

    #[test]
    fn a_gif_screen_past_the_pixel_limit_is_a_pixel_flood() {
        assert!(names(&gif_header(640, 480), "gif").is_empty());
        assert_eq!(
            names(&gif_header(20_000, 20_000), "gif"),
            ["Conveyor.Image.PixelFlood"]
        );
    }

    #[test]
    fn limits_are_configurable() {
        let limits = Limits {
            max_image_pixels: 100,
            ..Limits::default()
        };
        assert_eq!(
            inspect(&png_header(11, 10), "png", &limits),
            [Rule::ImagePixelFlood]
        );
        assert!(inspect(&png_header(10, 10), "png", &limits).is_empty());
    }

    #[test]
    fn an_unparseable_or_mislabelled_image_is_malformed() {
        assert_eq!(
            names(b"\x89PNG\r\n\x1a\n", "png"),
            ["Conveyor.Image.Malformed"]
        );
        assert_eq!(
            names(b"not an image at all", "jpeg"),
            ["Conveyor.Image.Malformed"]
        );
        assert_eq!(
            names(&gif_header(10, 10), "png"),
            ["Conveyor.Image.Malformed"]
        );
    }

    #[test]
    fn a_script_appended_to_a_png_is_embedded_script() {
        let mut png = png_header(64, 64);
        png.extend_from_slice(b"<script>alert(document.cookie)</script>");
        assert_eq!(names(&png, "png"), ["Conveyor.Image.EmbeddedScript"]);
    }

    #[test]
    fn markup_is_found_in_any_case() {
        for markup in [
            &b"<SCRIPT src=x>"[..],
            b"<?PhP system($_GET['c']); ?>",
            b"<Html>",
            b"<svg/onload=alert(1)>",
            b"<iframe src=//evil>",
            b"href=JavaScript:alert(1)",
        ] {
            let mut gif = gif_header(1, 1);
            gif.extend_from_slice(markup);
            assert_eq!(
                names(&gif, "gif"),
                ["Conveyor.Image.EmbeddedScript"],
                "{}",
                String::from_utf8_lossy(markup)
            );
        }
    }

    #[test]
    fn a_tag_name_needs_a_tag_boundary() {
        let mut png = png_header(8, 8);
        png.extend_from_slice(b"<svgx <htmlfoo <scripted");
        assert!(names(&png, "png").is_empty());
        png.extend_from_slice(b"<svg");
        assert_eq!(names(&png, "png"), ["Conveyor.Image.EmbeddedScript"]);
    }

    #[test]
    fn images_are_not_searched_for_markup_unless_declared_images() {
        assert!(names(b"<script>alert(1)</script>", "text").is_empty());
    }
}
