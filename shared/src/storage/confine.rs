//! Lexical confinement of object keys under the local storage root: defence in depth
//! behind server-made keys, checked before every local-filesystem operation.

use std::path::{Path, PathBuf};

/// The file `key` names under `root`, or `None` when the key could leave `root` or is
/// not a plain relative key: absolute keys, `.`/`..` or empty segments, backslashes and
/// control characters (NUL included) are all refused. Purely lexical: no file system
/// access, so it also holds for paths that do not exist yet.
pub fn confine(root: &Path, key: &str) -> Option<PathBuf> {
    if key.is_empty() || key.starts_with('/') {
        return None;
    }
    let mut path = root.to_path_buf();
    for segment in key.split('/') {
        let plain = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment.chars().any(|c| c == '\\' || c.is_control());
        if !plain {
            return None;
        }
        path.push(segment);
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use proptest::prelude::*;

    use super::*;

    fn root() -> PathBuf {
        PathBuf::from("/var/lib/conveyor")
    }

    #[test]
    fn a_server_made_key_lands_under_the_root() {
        assert_eq!(
            confine(&root(), "stored/0191c1b6-7c3a-7d2e-8f00-000000000001"),
            Some(root().join("stored/0191c1b6-7c3a-7d2e-8f00-000000000001"))
        );
    }

    #[test]
    fn keys_that_could_escape_or_are_odd_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "../etc/passwd",
            "stored/../../etc",
            "stored/..",
            "./stored",
            "stored//x",
            "stored/",
            "stored\\..\\x",
            "stored/a\0b",
            "stored/a\nb",
            "stored/\u{7f}",
        ] {
            assert_eq!(confine(&root(), key), None, "{key:?}");
        }
    }

    /// Keys biased towards the characters that matter, plus arbitrary Unicode.
    fn keys() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a./\\\\\\x00\\n -]{0,24}",
            "(\\.\\.|\\.|/|a|\\\\){0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn every_key_is_refused_or_strictly_under_the_root(key in keys()) {
            let root = root();
            if let Some(path) = confine(&root, &key) {
                prop_assert!(path.starts_with(&root));
                let below: Vec<Component<'_>> = path
                    .strip_prefix(&root)
                    .expect("under the root")
                    .components()
                    .collect();
                prop_assert!(!below.is_empty());
                prop_assert!(below.iter().all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
