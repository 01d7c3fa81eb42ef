//! The state every handler can reach: cheap to clone, shared by all requests.

use std::sync::Arc;

use secrecy::ExposeSecret;
use shared::Config;
use shared::config::AuthConfig;
use shared::crypto::pii::{BlindIndex, PiiCipher};
use shared::health::Health;
use shared::redis::Redis;
use shared::storage::Storage;
use sqlx::PgPool;

use crate::services::lockout::Lockout;
use crate::services::tokens::TokenKeys;

/// Keys made once from the configuration.
#[derive(Debug)]
pub struct Security {
    pub tokens: TokenKeys,
    pub pii: PiiCipher,
    pub blind_index: BlindIndex,
}

impl Security {
    pub fn from_config(config: &Config, auth: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Security {
            tokens: TokenKeys::from_config(auth)?,
            pii: config.pii.cipher(),
            blind_index: BlindIndex::new(auth.blind_index_key.expose_secret()),
        })
    }
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<AuthConfig>,
    pub pool: PgPool,
    pub redis: Redis,
    pub security: Arc<Security>,
    pub lockout: Lockout,
    /// Where uploads are staged, stored and quarantined.
    pub storage: Storage,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        auth: Arc<AuthConfig>,
        pool: PgPool,
        redis: Redis,
    ) -> anyhow::Result<Self> {
        let security = Arc::new(Security::from_config(&config, &auth)?);
        let lockout = Lockout::new(auth.login, redis.clone());
        let storage = config.storage.open()?;
        Ok(AppState {
            config,
            auth,
            pool,
            redis,
            security,
            lockout,
            storage,
        })
    }

    /// What the readiness probe asks.
    pub fn health(&self) -> Health {
        Health {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            timeout: self.config.ops.health_timeout,
            service: "api",
            flag: shared::health::HealthFlag::default(),
        }
    }
}
