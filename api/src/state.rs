//! The state every handler can reach: cheap to clone, shared by all requests.

use std::sync::Arc;

use secrecy::ExposeSecret;
use shared::Config;
use shared::config::AuthConfig;
use shared::crypto::password::Hasher;
use shared::crypto::pii::{BlindIndex, PiiCipher};
use shared::health::Health;
use shared::redis::Redis;
use shared::storage::Storage;
use sqlx::PgPool;

use crate::services::events::EventHub;
use crate::services::factor_limit::FactorLimit;
use crate::services::lockout::Lockout;
use crate::services::session_cache::SessionCache;
use crate::services::tokens::TokenKeys;

/// Keys made once from the configuration.
#[derive(Debug)]
pub struct Security {
    pub tokens: TokenKeys,
    pub pii: PiiCipher,
    pub blind_index: BlindIndex,
    /// Every password hash and verification of this process goes through it.
    pub passwords: Hasher,
}

impl Security {
    pub fn from_config(config: &Config, auth: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Security {
            tokens: TokenKeys::from_config(auth)?,
            pii: config.pii.cipher(),
            blind_index: BlindIndex::new(auth.blind_index_key.expose_secret()),
            passwords: Hasher::new(auth.password_hash_concurrency, auth.password_hash_wait),
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
    /// Wrong second factors and current passwords per account, across routes.
    pub factor_limit: FactorLimit,
    /// Where uploads are staged, stored and quarantined.
    pub storage: Storage,
    /// Request events from Redis, fanned out to the event streams of this process.
    pub events: EventHub,
    /// Session checks of this process, valid under their users' session epochs.
    pub sessions: Arc<SessionCache>,
    /// Open while PostgreSQL is known unreachable (`middleware::breaker`).
    pub db_breaker: shared::breaker::Breaker,
    /// Submissions inserted together, one transaction and one WAL flush per batch.
    pub ingest: crate::services::group_commit::GroupCommit,
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
        let factor_limit = FactorLimit::new(
            redis.clone(),
            auth.login.window,
            auth.login.max_factor_failures,
        );
        let storage = config.storage.open()?;
        let events = EventHub::new(redis.clone(), config.http.sse_max_streams_per_user);
        // Half the pool commits batches; the rest serves charges and reads meanwhile.
        let ingest = crate::services::group_commit::GroupCommit::new(
            pool.clone(),
            redis.clone(),
            config.clone(),
            (config.database.max_connections as usize / 2).max(1),
        );
        Ok(AppState {
            config,
            auth,
            pool,
            redis,
            security,
            lockout,
            factor_limit,
            storage,
            events,
            sessions: Arc::default(),
            db_breaker: shared::breaker::Breaker::new("api", "postgres"),
            ingest,
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
