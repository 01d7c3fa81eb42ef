//! The Redis section: one server or a Redis Cluster, and the prefix of every key
//! Conveyor writes.

use secrecy::SecretString;

use super::ConfigError;
use super::env::Env;

#[derive(Debug)]
pub struct RedisConfig {
    pub server: RedisServer,
    /// Prefix of every Redis key Conveyor writes, so deployments (and tests) can share
    /// one Redis without seeing each other.
    pub prefix: String,
}

/// Where Redis is: one server (`REDIS_URL`), or a Redis Cluster reached through its
/// seed nodes (`REDIS_CLUSTER_URLS`, which wins: `REDIS_URL` is then ignored).
#[derive(Debug)]
pub enum RedisServer {
    Single { url: SecretString },
    Cluster { seeds: Vec<SecretString> },
}

impl RedisConfig {
    pub(crate) fn read<F: Fn(&str) -> Option<String>>(
        env: &Env<'_, F>,
    ) -> Result<Self, ConfigError> {
        Ok(RedisConfig {
            server: match env.redis_cluster_urls("REDIS_CLUSTER_URLS")? {
                Some(seeds) => RedisServer::Cluster { seeds },
                None => RedisServer::Single {
                    url: env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?,
                },
            },
            prefix: env.redis_prefix()?,
        })
    }
}
