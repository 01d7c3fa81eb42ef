//! `message_quota_usage`: messages submitted per owner and clock hour, checked and
//! charged before a submission is inserted ([`charge`]), given back if the insert
//! fails ([`refund`]).
//!
//! The table is UNLOGGED: a transaction that writes only unlogged tables commits
//! without waiting for a WAL flush, so the row lock that serialises one owner's
//! concurrent charges is held for microseconds, not for a disk flush — with the
//! charge inside the submission's durable commit, one busy sender's submissions
//! queued behind each other's fsync (about 1,500 a second on the bench machine,
//! whatever the hardware could do in parallel). The price: PostgreSQL empties an
//! unlogged table after a crash (not after a clean restart), and standbys do not
//! have it, so a crash or a failover forgets the current windows' usage: each sender
//! may then send up to one more quota. Submissions themselves stay durable.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// A message quota to charge: `messages` more in the owner's current hour, refused
/// when the sliding hour would pass `per_hour` or the sliding 24 hours `per_day`
/// (the whole hours in the window plus the share of the oldest hour still in it;
/// the api's `services::quotas` computes the same windows for `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimit {
    pub messages: i64,
    pub per_hour: i64,
    pub per_day: i64,
}

/// Charges `limit.messages` to `owner`'s current hour if the result fits both windows;
/// returns the hour charged (to [`refund`]), or `None` when refused (nothing written).
/// The owner's row of the current hour is locked by the upsert, so the check sees
/// every committed charge and a burst cannot overrun the quota.
pub async fn charge(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    limit: QuotaLimit,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    // `older`: the owner's usage in the 24 hours before the current one, as the
    // previous hour, the 23 hours after the oldest, and the oldest. A new row is
    // inserted only if the charge alone fits; an existing one is updated only if its
    // total does.
    sqlx::query_scalar(
        "WITH clock AS ( \
             SELECT date_trunc('hour', now()) AS cur, \
                    (extract(epoch FROM now()) - extract(epoch FROM date_trunc('hour', now()))) / 3600.0 AS into_hour), \
         older AS ( \
             SELECT c.cur, 1.0 - c.into_hour AS left_of_oldest, \
                    coalesce(sum(u.messages) FILTER (WHERE u.hour = c.cur - interval '1 hour'), 0)::float8 AS prev, \
                    coalesce(sum(u.messages) FILTER (WHERE u.hour > c.cur - interval '24 hours'), 0)::float8 AS day_whole, \
                    coalesce(sum(u.messages) FILTER (WHERE u.hour = c.cur - interval '24 hours'), 0)::float8 AS day_oldest \
             FROM clock c LEFT JOIN message_quota_usage u \
               ON u.owner_id = $1 AND u.hour >= c.cur - interval '24 hours' AND u.hour < c.cur \
             GROUP BY c.cur, c.into_hour) \
         INSERT INTO message_quota_usage AS q (owner_id, hour, messages) \
         SELECT $1, o.cur, $2::int8 FROM older o \
         WHERE $2 + o.prev * o.left_of_oldest <= $3::int8 \
           AND $2 + o.day_whole + o.day_oldest * o.left_of_oldest <= $4::int8 \
         ON CONFLICT (owner_id, hour) DO UPDATE SET messages = q.messages + EXCLUDED.messages \
         WHERE q.messages + EXCLUDED.messages + (SELECT prev * left_of_oldest FROM older) <= $3 \
           AND q.messages + EXCLUDED.messages \
               + (SELECT day_whole + day_oldest * left_of_oldest FROM older) <= $4 \
         RETURNING q.hour",
    )
    .bind(owner)
    .bind(limit.messages)
    .bind(limit.per_hour)
    .bind(limit.per_day)
    .fetch_optional(db)
    .await
}

/// Gives back a charge whose submission was not stored.
pub async fn refund(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    hour: OffsetDateTime,
    messages: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE message_quota_usage SET messages = greatest(messages - $3, 0) \
         WHERE owner_id = $1 AND hour = $2",
    )
    .bind(owner)
    .bind(hour)
    .bind(messages)
    .execute(db)
    .await?;
    Ok(())
}

/// The owner's usage in the current hour and the 24 before it, as (hour start in unix
/// seconds, messages), and PostgreSQL's clock (unix seconds).
pub async fn recent_usage(
    db: impl PgExecutor<'_>,
    owner: Uuid,
) -> Result<(Vec<(i64, i64)>, f64), sqlx::Error> {
    let rows: Vec<(Option<i64>, Option<i64>, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM u.hour)::int8, u.messages, extract(epoch FROM now())::float8 \
         FROM (SELECT 1) AS one \
         LEFT JOIN message_quota_usage u ON u.owner_id = $1 \
          AND u.hour >= date_trunc('hour', now()) - interval '24 hours'",
    )
    .bind(owner)
    .fetch_all(db)
    .await?;
    let now = rows.first().map_or(0.0, |row| row.2);
    let usage = rows
        .into_iter()
        .filter_map(|(hour, messages, _)| Some((hour?, messages?)))
        .collect();
    Ok((usage, now))
}
