//! The api on a Redis Cluster (`REDIS_CLUSTER_URLS`): the login throttle's scripts
//! (four keys per call, one hash slot), the rate limiter, the second-factor limit and
//! the MFA token, and the in-process worker draining a queue. The test cluster is
//! `REDIS_CLUSTER_TEST_URLS` (started by `scripts/test`); without it these skip,
//! saying so.

mod common;

use common::{PASSWORD, TestApp, problem, spawn_app_with, test_config, unique_email};
use sqlx::PgPool;

/// The api in process on the test cluster, with `overrides`; `None`: skipped.
async fn app_on_the_cluster(pool: PgPool, overrides: &[(&str, &str)]) -> Option<TestApp> {
    let urls = harness::redis_cluster_urls()?;
    let mut vars = vec![("REDIS_CLUSTER_URLS", urls.as_str())];
    vars.extend_from_slice(overrides);
    let app = spawn_app_with(pool, test_config(&vars), None).await;
    assert!(app.state.redis.is_cluster());
    Some(app)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_burst_of_wrong_passwords_on_the_cluster_gets_no_more_verifications_than_the_limit(
    pool: PgPool,
) {
    let Some(app) = app_on_the_cluster(
        pool,
        &[
            ("RATE_LIMIT_AUTH", "10000/60"),
            ("LOGIN_MAX_FAILURES_ACCOUNT_IP", "5"),
            ("LOGIN_WINDOW_SECS", "60"),
        ],
    )
    .await
    else {
        return;
    };
    let email = unique_email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    // A right password first: its attempt is given back (the SETTLE script).
    assert_eq!(app.login_response(&email, PASSWORD).await.status(), 200);
    let attempts = (0..20).map(|_| app.login_response(&email, "wrong-password-guess"));
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let verified = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(verified, 5, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    problem(
        app.login_response(&email, PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_past_the_budget_on_the_cluster_get_429(pool: PgPool) {
    let Some(app) = app_on_the_cluster(pool, &[("RATE_LIMIT_READ", "7/60")]).await else {
        return;
    };
    let responses = futures::future::join_all((0..20).map(|_| app.get("/api/v1"))).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let limited = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!((ok, limited), (7, 13));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_2fa_login_and_the_second_factor_limit_work_on_the_cluster(pool: PgPool) {
    let Some(app) = app_on_the_cluster(
        pool,
        &[
            ("RATE_LIMIT_AUTH", "10000/60"),
            ("SECOND_FACTOR_MAX_FAILURES", "2"),
        ],
    )
    .await
    else {
        return;
    };
    // Enrolment and a login with a code: the MFA token's key and the factor limit.
    let token = app.admin_with_2fa().await;
    assert!(!token.is_empty());
    // Wrong current passwords count on the same per-account counter.
    let (_, session) = app.signed_in_user().await;
    let wrong = || {
        app.client
            .post(app.url("/api/v1/auth/password"))
            .bearer_auth(&session.access_token)
            .json(&serde_json::json!({
                "current_password": "not-the-password-at-all",
                "new_password": "another-strong-passphrase-77"
            }))
            .send()
    };
    let first = wrong().await.expect("sent").status().as_u16();
    let second = wrong().await.expect("sent").status().as_u16();
    assert_ne!(first, 429);
    assert_ne!(second, 429);
    problem(wrong().await.expect("sent"), 429, "rate_limited").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_in_process_worker_drains_a_queue_on_the_cluster(pool: PgPool) {
    let Some(app) = app_on_the_cluster(pool, &[]).await else {
        return;
    };
    let (owner, _) = app.create_account(shared::domain::Role::User).await;
    let request = app.submit_canaries(owner, 50).await;
    app.run_pending_jobs().await;
    let row = shared::db::requests::find(&app.state.pool, request, None)
        .await
        .expect("query")
        .expect("the request");
    assert_eq!(row.succeeded, 50, "{row:?}");
    assert!(row.finished_at.is_some());
}
