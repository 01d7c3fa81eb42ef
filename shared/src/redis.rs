//! The Redis handle: a lazily connecting, auto-reconnecting multiplexed connection and
//! the key prefix that keeps deployments (and parallel tests) apart on one server.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

/// Cheap to clone; every clone shares one multiplexed connection.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: Arc<str>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Does not connect: the first command does, so the api starts while Redis is down.
    pub fn connect_lazy(config: &Config) -> Result<Self, redis::RedisError> {
        Self::connect_lazy_to(config.redis_url(), &config.redis.prefix)
    }

    pub fn connect_lazy_to(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), settings)?;
        Ok(Redis {
            client,
            manager,
            prefix: Arc::from(prefix),
        })
    }

    /// A connection for commands; clones are cheap and share the socket.
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A new connection of its own, for blocking commands (`BLMOVE`, `SUBSCRIBE`) that
    /// would stall the shared multiplexed connection. `block` is the longest a command
    /// on it may wait for Redis to answer.
    pub async fn dedicated(
        &self,
        block: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let settings = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(block + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
    }

    /// The underlying client (pub/sub connections).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `"{prefix}:{name}"`: every key Conveyor writes goes through here.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection();
        let reply: String = redis::cmd("PING").query_async(&mut conn).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected PING reply",
                reply,
            )))
        }
    }
}
