//! `recovery_codes`: one-time 2FA fallbacks, stored hashed.

use sqlx::PgExecutor;
use uuid::Uuid;

/// Replaces a user's codes (call inside the transaction that enables 2FA).
pub async fn replace(
    db: &mut sqlx::PgConnection,
    user_id: Uuid,
    hashes: &[Vec<u8>],
) -> Result<(), sqlx::Error> {
    delete_all(&mut *db, user_id).await?;
    let ids: Vec<Uuid> = hashes.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO recovery_codes (id, user_id, code_hash) SELECT id, $2, hash FROM UNNEST($1::uuid[], $3::bytea[]) AS t(id, hash)",
    )
    .bind(&ids)
    .bind(user_id)
    .bind(hashes)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Uses a code once; `false` if it is unknown or already used.
pub async fn consume(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(hash)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete_all(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}
