//! Waiting for a condition with a deadline, as testkit's `eventually`, but answering
//! an error instead of panicking: a scenario that times out is reported as failed and
//! the suite goes on to the next.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` (every 100 ms) until it returns `Some`, or fails after `within`.
pub async fn until<T, F, Fut>(within: Duration, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    until_every(Duration::from_millis(100), within, what, check).await
}

/// [`until`] at `pause`, for a caller that measures when the condition came true.
pub async fn until_every<T, F, Fut>(
    pause: Duration,
    within: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("not within {within:?}: {what}");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Polls (every `pause`) until every request of `ids` has finished, or fails after
/// `within`.
pub async fn all_final(
    db: &sqlx::PgPool,
    ids: &[uuid::Uuid],
    pause: Duration,
    within: Duration,
    what: &str,
) -> anyhow::Result<()> {
    until_every(pause, within, what, || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests WHERE id = ANY($1) AND finished_at IS NULL",
        )
        .bind(ids)
        .fetch_one(db)
        .await
        .ok()?;
        (open == 0).then_some(())
    })
    .await
}
