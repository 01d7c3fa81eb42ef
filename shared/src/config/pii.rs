//! Personal data at rest: the current AES-256-GCM key (`PII_KEY`), its id and the
//! retired keys that still decrypt old values.

use secrecy::ExposeSecret;

use super::env::Env;
use super::{AppEnv, ConfigError, Key256};

/// A retired PII key that still decrypts old values. `Debug` shows only its id.
#[derive(Debug)]
pub struct RetiredKey {
    pub id: String,
    pub key: Key256,
}

/// Personal data at rest: the current key and the retired ones that still decrypt.
#[derive(Debug)]
pub struct PiiConfig {
    pub key: Key256,
    pub key_id: String,
    pub previous_keys: Vec<RetiredKey>,
}

impl PiiConfig {
    pub fn cipher(&self) -> crate::crypto::pii::PiiCipher {
        let previous: Vec<(String, [u8; 32])> = self
            .previous_keys
            .iter()
            .map(|k| (k.id.clone(), *k.key.expose_secret()))
            .collect();
        crate::crypto::pii::PiiCipher::new(&self.key_id, self.key.expose_secret(), &previous)
    }

    /// `PII_KEY`: required in production; elsewhere a random key, recorded in
    /// `generated_secrets`. Read apart from the rest of the section because
    /// [`Config::from_lookup`](super::Config::from_lookup) reads it before any other
    /// section.
    pub(crate) fn read_key<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        app_env: AppEnv,
        generated_secrets: &mut Vec<&'static str>,
    ) -> Result<Key256, ConfigError> {
        env.key256(
            "PII_KEY",
            app_env,
            "the AES-256-GCM key for PII at rest, base64 of 32 random bytes: openssl rand -base64 32",
            generated_secrets,
        )
    }

    /// The rest of the section around `key` (from [`PiiConfig::read_key`]).
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
        key: Key256,
    ) -> Result<Self, ConfigError> {
        Ok(PiiConfig {
            key,
            key_id: env.key_id("PII_KEY_ID")?,
            previous_keys: env.previous_keys("PII_PREVIOUS_KEYS")?,
        })
    }
}
