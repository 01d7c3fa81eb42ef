//! Migrations apply cleanly to an empty database, twice, and through the `api
//! migrate` command.

mod common;

use sqlx::PgPool;

async fn applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .expect("migrations table")
}

#[sqlx::test(migrations = false)]
async fn migrations_apply_to_an_empty_database_and_are_idempotent(pool: PgPool) {
    shared::db::migrate(&pool).await.expect("first run");
    let expected = i64::try_from(
        shared::db::MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count(),
    )
    .expect("count fits");
    assert_eq!(applied(&pool).await, expected);
    shared::db::migrate(&pool)
        .await
        .expect("second run is a no-op");
    assert_eq!(applied(&pool).await, expected);
}

#[sqlx::test(migrations = false)]
async fn migrations_revert_and_reapply(pool: PgPool) {
    shared::db::migrate(&pool).await.expect("up");
    shared::db::MIGRATOR
        .undo(&pool, 0)
        .await
        .expect("down to nothing");
    assert_eq!(applied(&pool).await, 0);
    shared::db::migrate(&pool).await.expect("up again");
    assert!(applied(&pool).await > 0);
}

#[sqlx::test(migrations = false)]
async fn api_migrate_command_migrates_and_exits_zero(pool: PgPool) {
    let url = common::database_url_of(&pool).await;
    for _ in 0..2 {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
            .arg("migrate")
            .env_clear()
            .env("APP_ENV", "test")
            .env("DATABASE_URL", &url)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .output()
            .await
            .expect("api runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(applied(&pool).await > 0);
}
