use super::*;

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00";
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00";
const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04";
const WEBP: &[u8] = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00\x30\x01\x00\x9d\x01\x2a";
const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
const ZIP: &[u8] = b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!\x00\x00\x00\x00\x00\x05\x00\x00\x00\x05\x00\x00\x00\t\x00\x00\x00hello.txt";
const PE: &[u8] = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8\x00\x00\x00";

/// A 64-bit ELF header (64 bytes: `infer` wants the whole header).
fn elf() -> Vec<u8> {
    let mut header =
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00\x01\x00\x00\x00"
            .to_vec();
    header.resize(64, 0);
    header
}

fn detect_any(
    head: &[u8],
    declared: Option<&str>,
    name: Option<&str>,
) -> Result<FileType, TypeRejection> {
    detect(head, declared, name, &FileType::ALL)
}

#[test]
fn known_formats_are_recognised_by_their_magic_bytes() {
    for (head, expected, declared, name) in [
        (PNG, FileType::Png, "image/png", "photo.PNG"),
        (JPEG, FileType::Jpeg, "image/jpeg", "photo.jpg"),
        (GIF, FileType::Gif, "image/gif", "anim.gif"),
        (WEBP, FileType::Webp, "image/webp", "photo.webp"),
        (PDF, FileType::Pdf, "application/pdf", "report.pdf"),
        (ZIP, FileType::Zip, "application/zip", "bundle.zip"),
    ] {
        assert_eq!(detect_any(head, None, None), Ok(expected));
        assert_eq!(detect_any(head, Some(declared), Some(name)), Ok(expected));
        assert_eq!(
            detect_any(head, Some("application/octet-stream"), Some("noextension")),
            Ok(expected)
        );
    }
}

#[test]
fn common_content_type_aliases_are_accepted() {
    assert_eq!(
        detect_any(JPEG, Some("image/jpg"), None),
        Ok(FileType::Jpeg)
    );
    assert_eq!(
        detect_any(JPEG, Some("image/pjpeg"), None),
        Ok(FileType::Jpeg)
    );
    assert_eq!(
        detect_any(ZIP, Some("application/x-zip-compressed"), None),
        Ok(FileType::Zip)
    );
    assert_eq!(
        detect_any(PNG, Some(" Image/PNG ; q=1"), None),
        Ok(FileType::Png)
    );
    assert_eq!(detect_any(PNG, Some(""), None), Ok(FileType::Png));
}

#[test]
fn utf8_without_binary_controls_is_text() {
    let text = b"Hello,\tworld!\r\nSecond line \x1b[1mbold\x1b[0m\n";
    assert_eq!(detect_any(text, None, None), Ok(FileType::Text));
    assert_eq!(
        detect_any(text, Some("text/plain; charset=utf-8"), Some("notes.md")),
        Ok(FileType::Text)
    );
    assert_eq!(detect_any(b"", None, Some("empty.txt")), Ok(FileType::Text));
}

#[test]
fn text_whose_head_cuts_a_character_in_half_is_still_text() {
    let text = "status: done 😀".as_bytes();
    let cut = &text[..text.len() - 2];
    assert!(std::str::from_utf8(cut).is_err());
    assert_eq!(
        detect_any(cut, None, Some("status.log")),
        Ok(FileType::Text)
    );
}

#[test]
fn csv_is_text_declared_or_named_csv() {
    let csv = b"id,name\n1,Ada\n2,Grace\n";
    assert_eq!(detect_any(csv, Some("text/csv"), None), Ok(FileType::Csv));
    assert_eq!(detect_any(csv, None, Some("people.CSV")), Ok(FileType::Csv));
    assert_eq!(
        detect_any(csv, Some("text/plain"), Some("people.csv")),
        Ok(FileType::Csv)
    );
    assert_eq!(
        detect_any(csv, Some("application/vnd.ms-excel"), Some("people.csv")),
        Ok(FileType::Csv)
    );
    assert_eq!(
        detect_any(csv, None, Some("people.txt")),
        Ok(FileType::Text)
    );
}

#[test]
fn text_that_opens_like_a_short_magic_number_is_still_text() {
    assert_eq!(
        detect_any(b"GIF is pronounced with a hard g.\n", None, Some("gif.txt")),
        Ok(FileType::Text)
    );
    assert_eq!(
        detect_any(b"BMW and MZ are brands\n", None, None),
        Ok(FileType::Text)
    );
}

#[test]
fn executables_are_rejected_whatever_they_are_called() {
    assert_eq!(
        detect_any(&elf(), Some("image/png"), Some("cat.png")),
        Err(TypeRejection::NotAllowed {
            detected: "application/x-executable".to_owned()
        })
    );
    assert!(matches!(
        detect_any(PE, None, Some("setup.txt")),
        Err(TypeRejection::NotAllowed { .. })
    ));
}

#[test]
fn recognised_formats_outside_the_list_are_rejected() {
    let gzip = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
    assert_eq!(
        detect_any(gzip, None, None),
        Err(TypeRejection::NotAllowed {
            detected: "application/gzip".to_owned()
        })
    );
    assert!(matches!(
        detect_any(b"<html><body>hi</body></html>", None, Some("page.txt")),
        Err(TypeRejection::NotAllowed { detected }) if detected == "text/html"
    ));
    assert!(matches!(
        detect_any(b"#!/bin/sh\nrm -rf /\n", None, None),
        Err(TypeRejection::NotAllowed { .. })
    ));
    assert_eq!(
        detect_any(b"\x00\x01\x02binary", None, None),
        Err(TypeRejection::NotAllowed {
            detected: "application/octet-stream".to_owned()
        })
    );
}

#[test]
fn a_type_missing_from_the_allowlist_is_rejected() {
    assert_eq!(
        detect(PDF, None, None, &[FileType::Png, FileType::Jpeg]),
        Err(TypeRejection::NotAllowed {
            detected: "application/pdf".to_owned()
        })
    );
    assert_eq!(detect(PNG, None, None, &[FileType::Png]), Ok(FileType::Png));
}

#[test]
fn a_declared_type_that_contradicts_the_content_is_rejected() {
    let rejection = detect_any(PNG, Some("application/pdf"), None);
    assert_eq!(
        rejection,
        Err(TypeRejection::Contradicts {
            declared: "application/pdf".to_owned(),
            detected: "image/png".to_owned()
        })
    );
    assert_eq!(
        rejection.expect_err("rejected").to_string(),
        "the file was declared as application/pdf but its content is image/png"
    );
    assert!(matches!(
        detect_any(b"plain words", Some("image/png"), None),
        Err(TypeRejection::Contradicts { .. })
    ));
}

#[test]
fn an_extension_that_contradicts_the_content_is_rejected() {
    assert_eq!(
        detect_any(PNG, None, Some("x.pdf")),
        Err(TypeRejection::WrongExtension {
            extension: "pdf".to_owned(),
            detected: "image/png".to_owned()
        })
    );
    assert!(matches!(
        detect_any(b"just text", None, Some("run.exe")),
        Err(TypeRejection::WrongExtension { .. })
    ));
    assert_eq!(
        detect_any(b"just text", None, Some(".bashrc")),
        Ok(FileType::Text)
    );
    assert_eq!(
        detect_any(b"just text", None, Some("../dir.v2/README")),
        Ok(FileType::Text)
    );
}

#[test]
fn file_types_round_trip_through_their_names() {
    for file_type in FileType::ALL {
        assert_eq!(file_type.name().parse::<FileType>(), Ok(file_type));
        assert_eq!(
            serde_json::to_string(&file_type).expect("json"),
            format!("\"{}\"", file_type.name())
        );
        assert!(!file_type.extensions().is_empty());
    }
    assert_eq!(FileType::Text.mime(), "text/plain");
    assert_eq!(FileType::Zip.mime(), "application/zip");
    assert!(FileType::Webp.is_image() && !FileType::Pdf.is_image());
    assert!("exe".parse::<FileType>().is_err());
}
