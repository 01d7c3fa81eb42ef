//! Development keys: outside production, keys that are not configured come from one
//! file (default `.dev/keys.env`, or `DEV_KEYS_FILE`), made with random keys the
//! first time any process needs it and read by every process after — so the api and
//! the worker agree, and a restarted api still reads what it sealed. Created with a
//! no-replace link, so two processes starting at once end up with the same keys.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ConfigError;

/// The keys the file holds.
pub const VARS: [&str; 3] = ["JWT_SIGNING_KEY", "PII_KEY", "BLIND_INDEX_KEY"];
/// The default location, relative to the working directory.
pub const DEFAULT_PATH: &str = ".dev/keys.env";

#[derive(Debug, Clone)]
pub struct DevKeys {
    pub path: PathBuf,
    values: HashMap<String, String>,
}

impl DevKeys {
    pub fn get(&self, var: &str) -> Option<String> {
        self.values.get(var).cloned()
    }

    /// Reads the file, creating it first if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            var: "DEV_KEYS_FILE",
            reason,
        };
        if !path.exists() {
            create(path)
                .map_err(|err| invalid(format!("cannot create {}: {err}", path.display())))?;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
        let values: HashMap<String, String> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        if let Some(missing) = VARS.iter().find(|var| !values.contains_key(**var)) {
            return Err(invalid(format!(
                "{} has no {missing}; delete the file to make a new one (data sealed with the old keys becomes unreadable)",
                path.display()
            )));
        }
        Ok(DevKeys {
            path: path.to_owned(),
            values,
        })
    }
}

/// Writes fresh keys to a temporary file, then links it into place; if another
/// process won the race, its file stays and ours is dropped.
fn create(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let suffix: [u8; 8] = crate::crypto::random_bytes();
    let tmp = path.with_extension(format!("tmp-{}", u64::from_le_bytes(suffix)));
    let mut body = String::from(
        "# Development keys made by Conveyor (never for production). Every api and worker\n\
         # started from this directory uses them; deleting this file makes encrypted data\n\
         # and issued tokens unreadable.\n",
    );
    for var in VARS {
        body.push_str(&format!(
            "{var}={}\n",
            BASE64.encode(crate::crypto::random_bytes::<32>())
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(body.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "conveyor-devkeys-{}",
            u64::from_le_bytes(crate::crypto::random_bytes())
        ));
        dir.join("nested/keys.env")
    }

    #[test]
    fn the_first_load_creates_the_file_and_later_loads_read_the_same_keys() {
        let path = scratch();
        let first = DevKeys::load_or_create(&path).expect("created");
        let second = DevKeys::load_or_create(&path).expect("read");
        for var in VARS {
            let key = first.get(var).expect("present");
            assert_eq!(BASE64.decode(&key).expect("base64").len(), 32);
            assert_eq!(second.get(var), Some(key));
        }
        assert_ne!(first.get("PII_KEY"), first.get("JWT_SIGNING_KEY"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(path.parent().and_then(Path::parent).expect("dir"));
    }

    #[test]
    fn processes_racing_to_create_the_file_agree_on_one_set_of_keys() {
        let path = scratch();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || DevKeys::load_or_create(&path).expect("load"))
            })
            .collect();
        let keys: Vec<Option<String>> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").get("PII_KEY"))
            .collect();
        assert!(
            keys.iter().all(|k| k.is_some() && *k == keys[0]),
            "{keys:?}"
        );
        let _ = std::fs::remove_dir_all(path.parent().and_then(Path::parent).expect("dir"));
    }

    #[test]
    fn a_file_missing_a_key_is_refused_not_rewritten() {
        let path = scratch();
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(
            &path,
            "PII_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        )
        .expect("write");
        let err = DevKeys::load_or_create(&path).expect_err("incomplete");
        assert!(err.to_string().contains("JWT_SIGNING_KEY"), "{err}");
        assert!(
            std::fs::read_to_string(&path)
                .expect("kept")
                .starts_with("PII_KEY=")
        );
        let _ = std::fs::remove_dir_all(path.parent().and_then(Path::parent).expect("dir"));
    }
}
