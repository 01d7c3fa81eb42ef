//! A lease in Redis: at most one holder at a time for a chore that every replica
//! could run but only one should (sampling PostgreSQL for the queue gauges). Taken
//! with `SET NX PX`, renewed by its holder before it expires, given up on shutdown.
//! A holder that stops renewing (killed, partitioned from Redis) loses it after `ttl`
//! and another replica takes it on its next try.

use std::time::Duration;

use shared::redis::Redis;

/// Extends the lease only while `ARGV[1]` still holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lease only while `ARGV[1]` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

#[derive(Clone, Debug)]
pub struct Lease {
    redis: Redis,
    key: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// The lease `name` (under the Redis prefix) as `holder` would hold it, for `ttl`
    /// from each successful [`Lease::hold`].
    pub fn new(redis: Redis, name: &str, holder: &str, ttl: Duration) -> Self {
        Lease {
            key: redis.key(&format!("lease:{name}")),
            redis,
            holder: holder.to_owned(),
            ttl,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Takes the lease if nobody holds it, or renews it if this holder does; `true`
    /// if this holder has it for the next `ttl`.
    pub async fn hold(&self) -> redis::RedisResult<bool> {
        let mut conn = self.redis.connection();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.holder)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut conn)
            .await?;
        if taken.is_some() {
            return Ok(true);
        }
        let renewed: i64 = redis::Script::new(RENEW)
            .key(&self.key)
            .arg(&self.holder)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if this holder has it, so another replica takes it at once.
    pub async fn release(&self) -> redis::RedisResult<bool> {
        let mut conn = self.redis.connection();
        let deleted: i64 = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.holder)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    /// Who holds it now, if anyone (tests and diagnostics).
    pub async fn holder(&self) -> redis::RedisResult<Option<String>> {
        let mut conn = self.redis.connection();
        redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> Redis {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        Redis::connect_lazy_to(&url, &prefix).expect("redis url")
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_it_releases() {
        let redis = redis();
        let ttl = Duration::from_secs(30);
        let a = Lease::new(redis.clone(), "chore", "a", ttl);
        let b = Lease::new(redis.clone(), "chore", "b", ttl);
        assert!(a.hold().await.expect("a takes"));
        assert!(!b.hold().await.expect("b tries"));
        assert!(a.hold().await.expect("a renews"));
        assert!(!b.release().await.expect("b cannot release a's lease"));
        assert_eq!(a.holder().await.expect("get").as_deref(), Some("a"));
        assert!(a.release().await.expect("a releases"));
        assert!(b.hold().await.expect("b takes"));
        assert!(!a.hold().await.expect("a tries"));
        assert!(b.release().await.expect("cleanup"));
    }

    #[tokio::test]
    async fn a_holder_that_stops_renewing_loses_the_lease_after_its_ttl() {
        let redis = redis();
        let a = Lease::new(redis.clone(), "chore", "a", Duration::from_millis(100));
        let b = Lease::new(redis.clone(), "chore", "b", Duration::from_secs(30));
        assert!(a.hold().await.expect("a takes"));
        assert!(!b.hold().await.expect("b tries"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !b.hold().await.expect("b tries") {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!a.hold().await.expect("a tries again"));
        assert!(b.release().await.expect("cleanup"));
    }
}
