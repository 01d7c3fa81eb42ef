//! DKIM signing of outgoing mail: the signing domain (`d=`), the selector (`s=`) and
//! the private key, from `DKIM_DOMAIN`, `DKIM_SELECTOR` and `DKIM_PRIVATE_KEY` (PEM
//! text; a literal `\n` stands for a line break) or `DKIM_PRIVATE_KEY_FILE` (a path).
//! None of them set: mail is not signed. Some set, an unreadable file or a key that is
//! neither RSA of 2048 to 4096 bits nor Ed25519: a configuration error at startup.

use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;

use super::ConfigError;
use super::env::Env;

/// The signature algorithm, decided by the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// `rsa-sha256`
    Rsa,
    /// `ed25519-sha256` (RFC 8463)
    Ed25519,
}

impl DkimAlgorithm {
    /// The key type of the DNS record's `k=` tag.
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The signature's `a=` tag.
    pub fn signature_tag(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa-sha256",
            DkimAlgorithm::Ed25519 => "ed25519-sha256",
        }
    }
}

/// A decoded DKIM private key. Both kinds wipe their secret on drop; `Debug` shows
/// only the kind.
#[derive(Clone)]
pub enum DkimKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DkimKey::Rsa(key) => write!(f, "DkimKey::Rsa({} bits, [REDACTED])", key.n().bits()),
            DkimKey::Ed25519(_) => f.write_str("DkimKey::Ed25519([REDACTED])"),
        }
    }
}

impl DkimKey {
    pub fn algorithm(&self) -> DkimAlgorithm {
        match self {
            DkimKey::Rsa(_) => DkimAlgorithm::Rsa,
            DkimKey::Ed25519(_) => DkimAlgorithm::Ed25519,
        }
    }

    /// Decodes a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or Ed25519, what
    /// `openssl genpkey` writes) or PKCS#1 (`BEGIN RSA PRIVATE KEY`). The error says
    /// why, never showing the key.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        let pem = pem.trim();
        let label = pem
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.split_once("-----"))
            .map(|(label, _)| label)
            .ok_or("not a PEM key (it must start with -----BEGIN PRIVATE KEY-----)")?;
        match label {
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|err| format!("not a valid PKCS#1 RSA key ({err})"))
                .and_then(Self::rsa),
            "PRIVATE KEY" => {
                let (_, document) = rsa::pkcs8::SecretDocument::from_pem(pem)
                    .map_err(|err| format!("not a valid PEM key ({err})"))?;
                let info = rsa::pkcs8::PrivateKeyInfo::try_from(document.as_bytes())
                    .map_err(|err| format!("not a valid PKCS#8 key ({err})"))?;
                match info.algorithm.oid {
                    RSA_ENCRYPTION => rsa::RsaPrivateKey::from_pkcs8_der(document.as_bytes())
                        .map_err(|err| format!("not a valid RSA key ({err})"))
                        .and_then(Self::rsa),
                    ED25519 => ed25519_dalek::SigningKey::from_pkcs8_der(document.as_bytes())
                        .map(|key| DkimKey::Ed25519(Box::new(key)))
                        .map_err(|err| format!("not a valid Ed25519 key ({err})")),
                    oid => Err(format!(
                        "a key of algorithm {oid} is not supported (RSA or Ed25519 only)"
                    )),
                }
            }
            "ENCRYPTED PRIVATE KEY" => {
                Err("the key is encrypted; give it without a passphrase".to_owned())
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                Err("this is a public key; the private key is needed".to_owned())
            }
            other => Err(format!(
                "a `{other}` PEM block is not supported (RSA or Ed25519 private keys only)"
            )),
        }
    }

    fn rsa(key: rsa::RsaPrivateKey) -> Result<Self, String> {
        let bits = key.n().bits();
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(format!(
                "the RSA key has {bits} bits; DKIM keys must have {MIN_RSA_BITS} to \
                 {MAX_RSA_BITS} (RFC 8301)"
            ));
        }
        key.validate()
            .map_err(|err| format!("the RSA key is inconsistent ({err})"))?;
        Ok(DkimKey::Rsa(Box::new(key)))
    }
}

const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 4096;
const RSA_ENCRYPTION: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ED25519: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");

/// How outgoing mail is signed.
#[derive(Debug, Clone)]
pub struct DkimConfig {
    /// The signing domain (`d=`); the DNS record lives under it.
    pub domain: String,
    /// The selector (`s=`): the record is `{selector}._domainkey.{domain}`.
    pub selector: String,
    /// Decided by the key.
    pub algorithm: DkimAlgorithm,
    key: DkimKey,
}

const VARS: [&str; 4] = [
    "DKIM_DOMAIN",
    "DKIM_SELECTOR",
    "DKIM_PRIVATE_KEY",
    "DKIM_PRIVATE_KEY_FILE",
];

impl DkimConfig {
    /// Checks the domain and selector and decodes the key.
    pub fn new(domain: &str, selector: &str, private_key_pem: &str) -> Result<Self, ConfigError> {
        let domain = dns_name("DKIM_DOMAIN", domain, true)?;
        let selector = dns_name("DKIM_SELECTOR", selector, false)?;
        let key = DkimKey::from_pem(private_key_pem).map_err(|reason| ConfigError::Invalid {
            var: "DKIM_PRIVATE_KEY",
            reason,
        })?;
        Ok(DkimConfig {
            domain,
            selector,
            algorithm: key.algorithm(),
            key,
        })
    }

    /// `None` when no `DKIM_*` variable is set.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = Env { lookup: &lookup };
        if VARS.iter().all(|var| env.get(var).is_none()) {
            return Ok(None);
        }
        let required = |var: &'static str| {
            env.get(var).ok_or(ConfigError::Invalid {
                var,
                reason: "must be set when DKIM signing is configured (DKIM_DOMAIN, \
                         DKIM_SELECTOR and DKIM_PRIVATE_KEY or DKIM_PRIVATE_KEY_FILE)"
                    .to_owned(),
            })
        };
        let domain = required("DKIM_DOMAIN")?;
        let selector = required("DKIM_SELECTOR")?;
        let (var, pem) = match (
            env.get("DKIM_PRIVATE_KEY"),
            env.get("DKIM_PRIVATE_KEY_FILE"),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    var: "DKIM_PRIVATE_KEY_FILE",
                    reason: "set either DKIM_PRIVATE_KEY or DKIM_PRIVATE_KEY_FILE, not both"
                        .to_owned(),
                });
            }
            (Some(text), None) => ("DKIM_PRIVATE_KEY", text.replace("\\n", "\n")),
            (None, Some(path)) => {
                let path = path.trim();
                let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Invalid {
                    var: "DKIM_PRIVATE_KEY_FILE",
                    reason: format!("cannot read `{path}`: {err}"),
                })?;
                ("DKIM_PRIVATE_KEY_FILE", text)
            }
            (None, None) => {
                return Err(ConfigError::Invalid {
                    var: "DKIM_PRIVATE_KEY",
                    reason: "DKIM_PRIVATE_KEY or DKIM_PRIVATE_KEY_FILE must be set when \
                             DKIM_DOMAIN or DKIM_SELECTOR is"
                        .to_owned(),
                });
            }
        };
        let mut config = Self::new(&domain, &selector, &pem);
        if let Err(ConfigError::Invalid { var: key_var, .. }) = &mut config
            && *key_var == "DKIM_PRIVATE_KEY"
        {
            *key_var = var;
        }
        config.map(Some)
    }

    /// The private key. Never log it (its `Debug` does not show it).
    pub fn key(&self) -> &DkimKey {
        &self.key
    }
}

/// A domain name (at least two labels) or a selector (one or more labels): labels of
/// 1 to 63 letters, digits, `-` and `_`, not starting or ending with `-`.
fn dns_name(var: &'static str, raw: &str, domain: bool) -> Result<String, ConfigError> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let labels = name.split('.').count();
    let valid = name.len() <= 253 && name.split('.').all(label_ok) && (!domain || labels >= 2);
    if valid {
        Ok(name)
    } else {
        Err(ConfigError::Invalid {
            var,
            reason: format!(
                "`{}` is not a {}",
                raw.trim(),
                if domain {
                    "domain name (e.g. example.com)"
                } else {
                    "selector (letters, digits, - and _, e.g. conveyor2025)"
                }
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn dkim(vars: &[(&str, &str)]) -> Result<Option<DkimConfig>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DkimConfig::from_lookup(|k| map.get(k).cloned())
    }

    fn invalid_var(result: Result<Option<DkimConfig>, ConfigError>) -> (&'static str, String) {
        match result {
            Err(ConfigError::Invalid { var, reason }) => (var, reason),
            other => panic!("expected an invalid variable, got {other:?}"),
        }
    }

    // RFC 8032 section 7.1, test 1: a published test key, as PKCS#8 PEM.
    const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
        -----END PRIVATE KEY-----\n";

    fn rsa_pem(bits: usize) -> String {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits).expect("key");
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem")
            .to_string()
    }

    #[test]
    fn unset_means_no_signing() {
        assert!(dkim(&[]).expect("valid").is_none());
        assert!(dkim(&[("DKIM_DOMAIN", "  ")]).expect("blank").is_none());
    }

    #[test]
    fn partial_settings_name_the_missing_variable() {
        let (var, _) = invalid_var(dkim(&[("DKIM_DOMAIN", "example.com")]));
        assert_eq!(var, "DKIM_SELECTOR");
        let (var, reason) = invalid_var(dkim(&[
            ("DKIM_DOMAIN", "example.com"),
            ("DKIM_SELECTOR", "s1"),
        ]));
        assert_eq!(var, "DKIM_PRIVATE_KEY");
        assert!(reason.contains("DKIM_PRIVATE_KEY_FILE"), "{reason}");
        let (var, _) = invalid_var(dkim(&[("DKIM_PRIVATE_KEY", ED25519_PEM)]));
        assert_eq!(var, "DKIM_DOMAIN");
        let (var, _) = invalid_var(dkim(&[
            ("DKIM_DOMAIN", "example.com"),
            ("DKIM_SELECTOR", "s1"),
            ("DKIM_PRIVATE_KEY", ED25519_PEM),
            ("DKIM_PRIVATE_KEY_FILE", "/etc/hostname"),
        ]));
        assert_eq!(var, "DKIM_PRIVATE_KEY_FILE");
    }

    #[test]
    fn invalid_keys_and_names_are_refused_without_showing_the_key() {
        let base = [("DKIM_DOMAIN", "example.com"), ("DKIM_SELECTOR", "s1")];
        let with = |key_var: &'static str, value: &str| {
            let mut vars = base.to_vec();
            vars.push((key_var, value));
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            DkimConfig::from_lookup(|k| map.get(k).cloned())
        };
        let (var, reason) = invalid_var(with("DKIM_PRIVATE_KEY", "s3cret-not-pem"));
        assert_eq!(var, "DKIM_PRIVATE_KEY");
        assert!(reason.contains("not a PEM key"), "{reason}");
        assert!(!reason.contains("s3cret"), "{reason}");
        let (_, reason) = invalid_var(with(
            "DKIM_PRIVATE_KEY",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ));
        assert!(
            reason.contains("PKCS#8") || reason.contains("PEM"),
            "{reason}"
        );
        // RSA below 2048 bits.
        let (_, reason) = invalid_var(with("DKIM_PRIVATE_KEY", &rsa_pem(1024)));
        assert!(reason.contains("1024 bits"), "{reason}");
        // An EC (P-256) key.
        let p256 = "-----BEGIN PRIVATE KEY-----\n\
            MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAaQiLl1PPVb/1/vI\n\
            owmmRTPXnuJHBQvHk9+vmm5Ve4ahRANCAAQ7ATbezIP2xNv1/TPDWKbzqu1OyhAI\n\
            SEDG6f7Yh1HNBxBu2fduF+3meC7uM+nQBm7xt0c9i1bRksyhSKVgsaRl\n\
            -----END PRIVATE KEY-----\n";
        let (_, reason) = invalid_var(with("DKIM_PRIVATE_KEY", p256));
        assert!(reason.contains("1.2.840.10045.2.1"), "{reason}");
        let (var, reason) = invalid_var(with("DKIM_PRIVATE_KEY_FILE", "/nonexistent/dkim.pem"));
        assert_eq!(var, "DKIM_PRIVATE_KEY_FILE");
        assert!(reason.contains("/nonexistent/dkim.pem"), "{reason}");
        let (var, _) = invalid_var(dkim(&[
            ("DKIM_DOMAIN", "example.com; x=1"),
            ("DKIM_SELECTOR", "s1"),
            ("DKIM_PRIVATE_KEY", ED25519_PEM),
        ]));
        assert_eq!(var, "DKIM_DOMAIN");
        let (var, _) = invalid_var(dkim(&[
            ("DKIM_DOMAIN", "example.com"),
            ("DKIM_SELECTOR", "bad selector"),
            ("DKIM_PRIVATE_KEY", ED25519_PEM),
        ]));
        assert_eq!(var, "DKIM_SELECTOR");
    }

    #[test]
    fn valid_keys_give_their_algorithm() {
        let escaped = ED25519_PEM.replace('\n', "\\n");
        let cfg = dkim(&[
            ("DKIM_DOMAIN", "Mail.Example.com."),
            ("DKIM_SELECTOR", "conveyor-2025"),
            ("DKIM_PRIVATE_KEY", &escaped),
        ])
        .expect("valid")
        .expect("configured");
        assert_eq!(cfg.domain, "mail.example.com");
        assert_eq!(cfg.selector, "conveyor-2025");
        assert_eq!(cfg.algorithm, DkimAlgorithm::Ed25519);
        let DkimKey::Ed25519(key) = cfg.key() else {
            panic!("an Ed25519 key");
        };
        // RFC 8032's public key of that test key.
        assert_eq!(
            key.verifying_key().to_bytes()[..4],
            [0xd7, 0x5a, 0x98, 0x01]
        );
        assert!(!format!("{cfg:?}").contains("MC4CAQAw"));

        let dir = std::env::temp_dir().join(format!("dkim-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("rsa.pem");
        let pem = rsa_pem(2048);
        std::fs::write(&path, &pem).expect("write");
        let cfg = dkim(&[
            ("DKIM_DOMAIN", "example.com"),
            ("DKIM_SELECTOR", "s1"),
            ("DKIM_PRIVATE_KEY_FILE", path.to_str().expect("utf-8 path")),
        ])
        .expect("valid")
        .expect("configured");
        assert_eq!(cfg.algorithm, DkimAlgorithm::Rsa);
        assert_eq!(
            format!("{:?}", cfg.key()),
            "DkimKey::Rsa(2048 bits, [REDACTED])"
        );
        // The same key as PKCS#1 (`BEGIN RSA PRIVATE KEY`).
        let DkimKey::Rsa(rsa_key) = cfg.key() else {
            panic!("an RSA key");
        };
        let pkcs1 = {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            rsa_key
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::CRLF)
                .expect("pem")
                .to_string()
        };
        let again = DkimConfig::new("example.com", "s1", &pkcs1).expect("PKCS#1");
        assert_eq!(again.algorithm, DkimAlgorithm::Rsa);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
