//! The state every handler can reach: cheap to clone, shared by all requests.

use std::sync::Arc;

use shared::Config;
use shared::health::Health;
use shared::redis::Redis;
use sqlx::PgPool;

#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub redis: Redis,
}

impl AppState {
    pub fn new(config: Arc<Config>, pool: PgPool, redis: Redis) -> Self {
        AppState {
            config,
            pool,
            redis,
        }
    }

    /// What the readiness probe asks.
    pub fn health(&self) -> Health {
        Health {
            pool: self.pool.clone(),
            redis: self.redis.clone(),
            timeout: self.config.health_timeout,
            service: "api",
        }
    }
}
