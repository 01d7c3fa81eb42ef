//! `send_counts`: messages admitted per cap scope and day, for daily caps (a campaign's,
//! an account's, a warm-up's). A message is admitted by [`take`] before it is sent and
//! handed back by [`give_back`] if it is then not sent; [`prune_before`] forgets old days.
//!
//! The day is the caller's: the local day of the window or account the cap is counted
//! in (`mail::window::SendWindow::day_of`). The table is logged, so a crash does not
//! reset a day's count and let a warming account send its cap twice; the worker's pool
//! commits without waiting for the WAL flush anyway.

use sqlx::PgExecutor;
use time::Date;
use uuid::Uuid;

/// What a daily cap counts; stored as `campaign:<uuid>` or `account:<uuid>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Campaign(Uuid),
    Account(Uuid),
}

impl Scope {
    /// The key of the scope's rows.
    pub fn key(&self) -> String {
        match self {
            Scope::Campaign(id) => format!("campaign:{id}"),
            Scope::Account(id) => format!("account:{id}"),
        }
    }
}

/// Admits one message to `scope`'s count of `day` if fewer than `cap` were admitted;
/// whether it was. One statement: the row's lock serialises concurrent takes from any
/// process, and each sees the count the previous one committed. A `cap` above
/// `i32::MAX` counts as `i32::MAX` (the column's range).
pub async fn take(
    db: impl PgExecutor<'_>,
    scope: Scope,
    day: Date,
    cap: u32,
) -> Result<bool, sqlx::Error> {
    let cap = i64::from(cap).min(i64::from(i32::MAX));
    let admitted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO send_counts AS c (scope, day, count) \
         SELECT $1, $2, 1 WHERE $3::int8 > 0 \
         ON CONFLICT (scope, day) DO UPDATE SET count = c.count + 1 \
         WHERE c.count < $3::int8 \
         RETURNING c.count",
    )
    .bind(scope.key())
    .bind(day)
    .bind(cap)
    .fetch_optional(db)
    .await?;
    Ok(admitted.is_some())
}

/// Gives back a message [`take`] admitted that was not sent; whether there was one to
/// give back (the count never goes below zero).
pub async fn give_back(
    db: impl PgExecutor<'_>,
    scope: Scope,
    day: Date,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE send_counts SET count = count - 1 \
         WHERE scope = $1 AND day = $2 AND count > 0",
    )
    .bind(scope.key())
    .bind(day)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many messages `scope` has admitted on `day`.
pub async fn count(db: impl PgExecutor<'_>, scope: Scope, day: Date) -> Result<u32, sqlx::Error> {
    let count: Option<i32> =
        sqlx::query_scalar("SELECT count FROM send_counts WHERE scope = $1 AND day = $2")
            .bind(scope.key())
            .bind(day)
            .fetch_optional(db)
            .await?;
    Ok(count.and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
}

/// Deletes every count of a day before `day`; how many rows went.
pub async fn prune_before(db: impl PgExecutor<'_>, day: Date) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM send_counts WHERE day < $1")
        .bind(day)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
