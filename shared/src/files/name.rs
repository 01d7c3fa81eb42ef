//! The client's file name, made safe to keep and show: one component, no control or
//! bidirectional-override characters, no `..`, bounded length, never empty.

/// The longest name kept, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// An extension (with its dot) at most this long survives shortening.
const MAX_EXTENSION_BYTES: usize = 16;
/// What an empty or all-junk name becomes.
const FALLBACK: &str = "file";

/// The last component of `raw` (after `/` or `\`) without control characters, with
/// runs of dots collapsed, dots and spaces trimmed at both ends, shortened to
/// [`MAX_NAME_BYTES`] on a character boundary keeping a short extension, and `file`
/// when nothing is left. Idempotent.
pub fn sanitize_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name = String::with_capacity(last.len());
    for c in last.chars().filter(|&c| !is_invisible_control(c)) {
        if c == '.' && name.ends_with('.') {
            continue;
        }
        name.push(c);
    }
    let name = shorten(trim(&name));
    if name.is_empty() {
        FALLBACK.to_owned()
    } else {
        name
    }
}

/// Control characters (C0, DEL, C1) and the invisible formatting characters that can
/// disguise a name: bidirectional overrides and isolates, zero-width characters, line
/// and paragraph separators, the byte-order mark.
fn is_invisible_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

fn trim(name: &str) -> &str {
    name.trim_matches(|c: char| c == '.' || c.is_whitespace())
}

fn shorten(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES => name.split_at(dot),
        _ => (name, ""),
    };
    let mut end = MAX_NAME_BYTES - extension.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    // The stem starts with neither a dot nor a space, so trimming its end keeps it
    // non-empty, and the extension holds the only dot at the seam.
    format!("{}{extension}", trim(&stem[..end]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_the_last_component_is_kept() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("a/b\\c.png"), "c.png");
        assert_eq!(
            sanitize_file_name("C:\\Users\\me\\report.pdf"),
            "report.pdf"
        );
        assert_eq!(sanitize_file_name("dir/"), "file");
    }

    #[test]
    fn control_and_disguising_characters_are_dropped() {
        assert_eq!(sanitize_file_name("evil\0name\n.txt"), "evilname.txt");
        assert_eq!(sanitize_file_name("a\r\nb\u{7f}c\u{85}.csv"), "abc.csv");
        assert_eq!(
            sanitize_file_name("invoice\u{202E}fdp.exe"),
            "invoicefdp.exe"
        );
        assert_eq!(
            sanitize_file_name("\u{FEFF}zero\u{200B}width.md"),
            "zerowidth.md"
        );
    }

    #[test]
    fn dots_collapse_and_ends_are_trimmed() {
        assert_eq!(sanitize_file_name("a..b...png"), "a.b.png");
        assert_eq!(sanitize_file_name(" .hidden. "), "hidden");
        assert_eq!(sanitize_file_name(".\0."), "file");
        for junk in ["", ".", "..", "...", "   ", "\0\n", "/"] {
            assert_eq!(sanitize_file_name(junk), "file", "{junk:?}");
        }
    }

    #[test]
    fn long_names_are_shortened_keeping_the_extension() {
        let name = sanitize_file_name(&format!("{}.png", "a".repeat(300)));
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert!(name.ends_with("a.png"));

        let name = sanitize_file_name(&format!("{}.pdf", "é".repeat(150)));
        assert!(name.len() <= MAX_NAME_BYTES);
        assert!(name.ends_with("é.pdf"));

        let name = sanitize_file_name(&"b".repeat(300));
        assert_eq!(name, "b".repeat(MAX_NAME_BYTES));

        let long_extension = format!("x.{}", "e".repeat(300));
        assert_eq!(sanitize_file_name(&long_extension).len(), MAX_NAME_BYTES);
    }

    /// Names made of the characters that matter, plus arbitrary Unicode.
    fn raw_names() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zé. /\\\\\\x00\\n\\r\\x7f\u{202E}]{0,40}",
            "[ab.]{150,260}(\\.[a-z]{1,20})?",
            "[é𝄞.]{50,120}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn sanitized_names_are_always_safe(raw in raw_names()) {
            let name = sanitize_file_name(&raw);
            prop_assert!(!name.is_empty() && name != "." && name != "..");
            prop_assert!(!name.contains(['/', '\\']));
            prop_assert!(!name.chars().any(is_invisible_control));
            prop_assert!(!name.contains(".."));
            prop_assert!(name.len() <= MAX_NAME_BYTES);
            prop_assert!(!name.starts_with(['.', ' ']) && !name.ends_with(['.', ' ']));
            prop_assert_eq!(sanitize_file_name(&name), name);
        }
    }
}
