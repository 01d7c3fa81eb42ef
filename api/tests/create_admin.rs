//! `api create-admin`: the password comes from ADMIN_PASSWORD or stdin, never argv;
//! the policy applies; the admin can then sign in.

mod common;

use std::process::Stdio;

use common::{PASSWORD, spawn_app_with, test_config};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn command(url: &str, email: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"));
    command
        .args(["create-admin", "--email", email])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("DATABASE_URL", url)
        .env("PII_KEY", KEY)
        .env("BLIND_INDEX_KEY", KEY)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

async fn run_with_stdin(mut command: tokio::process::Command, input: &str) -> std::process::Output {
    let mut child = command.spawn().expect("api runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    child.wait_with_output().await.expect("api exits")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn creates_an_admin_from_stdin_who_can_sign_in(pool: PgPool) {
    let url = common::database_url_of(&pool).await;
    let output = run_with_stdin(command(&url, "root@example.org"), &format!("{PASSWORD}\n")).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let role: String = sqlx::query_scalar("SELECT role FROM users")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(role, "admin");

    let config = test_config(&[("PII_KEY", KEY), ("BLIND_INDEX_KEY", KEY)]);
    let app = spawn_app_with(pool, config, None).await;
    let session = app.login("root@example.org", PASSWORD).await;
    let me: serde_json::Value = app
        .get_authed("/api/v1/me", &session.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["email"], "root@example.org");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn takes_the_password_from_the_environment(pool: PgPool) {
    let url = common::database_url_of(&pool).await;
    let mut command = command(&url, "ops@example.org");
    command.env("ADMIN_PASSWORD", PASSWORD);
    let output = run_with_stdin(command, "").await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn refuses_a_weak_password_and_a_taken_email(pool: PgPool) {
    let url = common::database_url_of(&pool).await;
    let weak = run_with_stdin(command(&url, "root@example.org"), "password1234\n").await;
    assert_eq!(weak.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 0);

    let first = run_with_stdin(command(&url, "root@example.org"), PASSWORD).await;
    assert!(first.status.success());
    let again = run_with_stdin(command(&url, "ROOT@example.org"), PASSWORD).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
