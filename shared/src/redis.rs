//! The Redis handle: one server through a lazily connecting, auto-reconnecting
//! multiplexed connection, or a Redis Cluster through its seed nodes; and the key
//! prefix that keeps deployments (and parallel tests) apart on one Redis.
//!
//! Callers do not care which: [`Connection`] implements `redis::aio::ConnectionLike`,
//! so `AsyncCommands`, pipelines and `Script::invoke_async` work on both. On a
//! cluster every multi-key command, script and pipeline must stay in one hash slot:
//! keys that are used together share a hash tag (see [`hash_tag`] and the key layout in
//! `queue::transport`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret as _;
use tokio::sync::OnceCell;

use crate::breaker::Breaker;
use crate::config::{Config, RedisServer};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cheap to clone; every clone shares one multiplexed connection (one per node on a
/// cluster) and one circuit breaker: once a command finds Redis unreachable, commands
/// on the shared connection fail at once (an I/O error, as if Redis had answered that
/// way) instead of each waiting out the timeouts, until a probe (`PING`, every 250 ms)
/// is answered. Callers already treat a Redis error as Redis being down (the limiter
/// lets the request through, the dispatcher pushes later). Dedicated connections
/// (blocking fetches) are not behind it, nor is a Redis Cluster: its nodes fail one at
/// a time, and one node down must not stop commands to the others.
#[derive(Clone)]
pub struct Redis {
    server: Server,
    prefix: Arc<str>,
    breaker: Option<Breaker>,
}

#[derive(Clone)]
enum Server {
    Single {
        client: redis::Client,
        manager: ConnectionManager,
    },
    Cluster(Arc<Cluster>),
}

/// A cluster's seed nodes and the shared connection, made on first use.
struct Cluster {
    seeds: Vec<redis::Client>,
    client: ClusterClient,
    shared: OnceCell<ClusterConnection>,
    /// The seed the next pub/sub connection tries first, so a dead node is not
    /// retried before the others.
    next_seed: AtomicUsize,
}

impl Cluster {
    async fn connection(&self) -> redis::RedisResult<ClusterConnection> {
        self.shared
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.server {
            Server::Single { .. } => "single",
            Server::Cluster(_) => "cluster",
        };
        f.debug_struct("Redis")
            .field("mode", &mode)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `{tag}`: Redis Cluster hashes only this part of a key that contains it, so keys
/// with the same tag share a hash slot (and a node) and may be used together in one
/// script, transaction or pipeline.
pub fn hash_tag(tag: &str) -> String {
    format!("{{{tag}}}")
}

/// True when every key hashes to one Redis Cluster slot: what a script, a
/// transaction or a pipeline on a cluster requires of the keys it uses.
pub fn same_slot<S: AsRef<str>>(keys: &[S]) -> bool {
    let mut slots = keys
        .iter()
        .map(|key| redis::cluster_routing::Slot::for_key(key.as_ref()));
    match slots.next() {
        Some(first) => slots.all(|slot| slot == first),
        None => true,
    }
}

fn cluster_builder(seeds: &[redis::Client]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.iter().map(|seed| seed.get_connection_info().clone()))
        .connection_timeout(CONNECT_TIMEOUT)
        .retries(3)
        .max_retry_wait(500)
}

impl Redis {
    /// Does not connect: the first command does, so the api starts while Redis is down.
    pub fn connect_lazy(config: &Config) -> Result<Self, redis::RedisError> {
        match &config.redis.server {
            RedisServer::Single { url } => {
                Self::connect_lazy_to(url.expose_secret(), &config.redis.prefix)
            }
            RedisServer::Cluster { seeds } => {
                tracing::info!(
                    seeds = seeds.len(),
                    "Redis Cluster mode (REDIS_CLUSTER_URLS); REDIS_URL is not used"
                );
                let seeds: Vec<&str> = seeds.iter().map(|s| s.expose_secret()).collect();
                Self::connect_lazy_to_cluster(&seeds, &config.redis.prefix)
            }
        }
    }

    pub fn connect_lazy_to(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), settings)?;
        Ok(Redis {
            server: Server::Single { client, manager },
            prefix: Arc::from(prefix),
            breaker: Some(Breaker::new(crate::telemetry::service(), "redis")),
        })
    }

    /// A Redis Cluster reached through `seeds` (any of its nodes; the others are
    /// discovered). Does not connect either.
    pub fn connect_lazy_to_cluster<S: AsRef<str>>(
        seeds: &[S],
        prefix: &str,
    ) -> Result<Self, redis::RedisError> {
        let seeds = seeds
            .iter()
            .map(|url| redis::Client::open(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Redis Cluster needs at least one seed node",
            )));
        }
        let client = cluster_builder(&seeds)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()?;
        Ok(Redis {
            server: Server::Cluster(Arc::new(Cluster {
                seeds,
                client,
                shared: OnceCell::new(),
                next_seed: AtomicUsize::new(0),
            })),
            prefix: Arc::from(prefix),
            breaker: None,
        })
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.server, Server::Cluster(_))
    }

    /// A connection for commands; clones are cheap and share the socket(s). Behind
    /// the breaker.
    pub fn connection(&self) -> Connection {
        Connection {
            kind: self.shared_kind(),
            breaker: self.breaker.clone(),
        }
    }

    fn shared_kind(&self) -> Kind {
        match &self.server {
            Server::Single { manager, .. } => Kind::Single(manager.clone()),
            Server::Cluster(cluster) => match cluster.shared.get() {
                Some(conn) => Kind::Cluster(conn.clone()),
                None => Kind::LazyCluster(Arc::clone(cluster)),
            },
        }
    }

    /// A new connection of its own, for blocking commands (`BLMOVE`) that would stall
    /// the shared multiplexed connection. `block` is the longest a command on it may
    /// wait for Redis to answer. On a cluster: a cluster connection of its own, whose
    /// response timeout outlasts `block` too.
    pub async fn dedicated(&self, block: Duration) -> redis::RedisResult<Connection> {
        let response_timeout = block + RESPONSE_TIMEOUT;
        match &self.server {
            Server::Single { client, .. } => {
                let settings = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&settings)
                    .await?;
                Ok(Connection {
                    kind: Kind::Multiplexed(conn),
                    breaker: None,
                })
            }
            Server::Cluster(cluster) => {
                let conn = cluster_builder(&cluster.seeds)
                    .response_timeout(response_timeout)
                    .build()?
                    .get_async_connection()
                    .await?;
                Ok(Connection {
                    kind: Kind::Cluster(conn),
                    breaker: None,
                })
            }
        }
    }

    /// A pub/sub connection. On a cluster, to one seed node: classic `PUBLISH` reaches
    /// every node of a cluster, so a subscriber on any node hears every channel. Seeds
    /// are tried in turn, starting after the one the previous call used.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match &self.server {
            Server::Single { client, .. } => client.get_async_pubsub().await,
            Server::Cluster(cluster) => {
                let first = cluster.next_seed.fetch_add(1, Ordering::Relaxed);
                let mut last_error = None;
                for i in 0..cluster.seeds.len() {
                    let seed = &cluster.seeds[(first + i) % cluster.seeds.len()];
                    match tokio::time::timeout(CONNECT_TIMEOUT, seed.get_async_pubsub()).await {
                        Ok(Ok(pubsub)) => return Ok(pubsub),
                        Ok(Err(err)) => last_error = Some(err),
                        Err(_) => {
                            last_error = Some(redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "timed out connecting to a seed node",
                            )));
                        }
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no seed node"))
                }))
            }
        }
    }

    /// `"{prefix}:{name}"`: every key Conveyor writes goes through here.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// PING; on a cluster every primary must answer.
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

/// A connection to Redis, whichever kind: cheap to clone, usable wherever redis-rs
/// takes an async connection.
#[derive(Clone)]
pub struct Connection {
    kind: Kind,
    /// The shared connection's breaker (`None`: a dedicated connection).
    breaker: Option<Breaker>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Single(_) => "single",
            Kind::Multiplexed(_) => "dedicated",
            Kind::Cluster(_) | Kind::LazyCluster(_) => "cluster",
        };
        f.debug_tuple("Connection").field(&kind).finish()
    }
}

#[derive(Clone)]
enum Kind {
    /// The shared, auto-reconnecting connection to one server.
    Single(ConnectionManager),
    /// A dedicated connection to one server.
    Multiplexed(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
    /// The shared cluster connection as it was when this handle was taken: not made
    /// yet. The first command makes it; later handles are `Cluster`.
    LazyCluster(Arc<Cluster>),
}

/// The error of a command not sent because Redis is known unreachable.
fn known_unreachable() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "Redis is unreachable (circuit open; probing)",
    ))
}

/// Whether `err` says Redis could not be reached (not an answer Redis gave).
fn unreachable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
}

impl Connection {
    /// Runs `command` unless the breaker is open; a failure that says Redis is
    /// unreachable opens it, with a probe on a connection that bypasses it.
    fn guarded<'a, T: Send + 'a>(
        &'a mut self,
        command: impl FnOnce(&'a mut Kind) -> RedisFuture<'a, T>,
    ) -> RedisFuture<'a, T> {
        let Some(breaker) = self.breaker.clone() else {
            return command(&mut self.kind);
        };
        if breaker.is_open() {
            return Box::pin(async { Err(known_unreachable()) });
        }
        let probe_kind = self.kind.clone();
        let sent = command(&mut self.kind);
        Box::pin(async move {
            let result = sent.await;
            if let Err(err) = &result
                && unreachable(err)
            {
                breaker.trip(move || {
                    let mut probe = Connection {
                        kind: probe_kind.clone(),
                        breaker: None,
                    };
                    async move {
                        let ping = redis::cmd("PING");
                        let pong = ping.query_async::<String>(&mut probe);
                        matches!(
                            tokio::time::timeout(crate::breaker::RETRY_AFTER, pong).await,
                            Ok(Ok(_))
                        )
                    }
                });
            }
            result
        })
    }
}

impl ConnectionLike for Kind {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Kind::Single(conn) => conn.req_packed_command(cmd),
            Kind::Multiplexed(conn) => conn.req_packed_command(cmd),
            Kind::Cluster(conn) => conn.req_packed_command(cmd),
            Kind::LazyCluster(cluster) => {
                let cluster = Arc::clone(cluster);
                Box::pin(async move {
                    let mut conn = cluster.connection().await?;
                    conn.req_packed_command(cmd).await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Kind::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Kind::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Kind::LazyCluster(cluster) => {
                let cluster = Arc::clone(cluster);
                Box::pin(async move {
                    let mut conn = cluster.connection().await?;
                    conn.req_packed_commands(pipeline, offset, count).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Kind::Single(conn) => conn.get_db(),
            Kind::Multiplexed(conn) => conn.get_db(),
            Kind::Cluster(_) | Kind::LazyCluster(_) => 0,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.guarded(move |kind| kind.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.guarded(move |kind| kind.req_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.kind.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_tag_makes_keys_share_a_slot() {
        use redis::cluster_routing::Slot;
        let redis = Redis::connect_lazy_to("redis://127.0.0.1:1", "p").expect("url");
        let tag = hash_tag("emails");
        let a = redis.key(&format!("queue:{tag}:ready"));
        let b = redis.key(&format!("queue:{tag}:inflight:w1"));
        assert_eq!(a, "p:queue:{emails}:ready");
        assert_eq!(Slot::for_key(&a), Slot::for_key(&b));
        assert!(same_slot(&[&a, &b]));
        assert!(
            !same_slot(&["p:queue:emails:ready", "p:queue:emails:inflight:w1"]),
            "without a tag these two are apart"
        );
        assert!(same_slot::<&str>(&[]));
    }
}
