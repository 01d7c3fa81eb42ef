//! The general rate limiter: a budget per route group and caller, in Redis (GCRA in
//! one script), 429 with `Retry-After` and the IETF `RateLimit` headers past it,
//! atomic under a burst, per user, and open when Redis is unreachable.

mod common;

use common::{closed_port, problem, spawn_app_with, test_config};
use sqlx::PgPool;

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn reads_past_the_budget_get_429_with_rate_limit_headers(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[("RATE_LIMIT_READ", "5/60")]), None).await;
    for expected_remaining in (0..5).rev() {
        let response = app.get("/api/v1").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-policy"), "\"read\";q=5;w=60");
        assert!(
            header(&response, "ratelimit")
                .starts_with(&format!("\"read\";r={expected_remaining};")),
            "{}",
            header(&response, "ratelimit")
        );
    }
    let refused = app.get("/api/v1").await;
    let retry_after: u64 = header(&refused, "retry-after")
        .parse()
        .expect("Retry-After");
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    assert!(header(&refused, "ratelimit").starts_with("\"read\";r=0;t="));
    problem(refused, 429, "rate_limited").await;
    // Health probes are never limited; another group has its own budget.
    assert_eq!(app.get("/health/live").await.status(), 200);
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains("conveyor_rate_limited_total{group=\"read\"}"),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_parallel_burst_gets_exactly_the_budget(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[("RATE_LIMIT_READ", "7/60")]), None).await;
    let responses = futures::future::join_all((0..30).map(|_| app.get("/api/v1"))).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let limited = responses.iter().filter(|r| r.status() == 429).count();
    assert_eq!((ok, limited), (7, 23));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn each_user_has_their_own_budget(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[("RATE_LIMIT_READ", "3/60")]), None).await;
    let (_, alice) = app.signed_in_user().await;
    let (_, bob) = app.signed_in_user().await;
    for _ in 0..3 {
        assert_eq!(
            app.get_authed("/api/v1/me", &alice.access_token)
                .await
                .status(),
            200
        );
    }
    problem(
        app.get_authed("/api/v1/me", &alice.access_token).await,
        429,
        "rate_limited",
    )
    .await;
    // Bob, from the same address, still has his.
    assert_eq!(
        app.get_authed("/api/v1/me", &bob.access_token)
            .await
            .status(),
        200
    );
    // A forged token does not spend Alice's budget: it counts against the address.
    let forged = format!("{}x", bob.access_token);
    assert_eq!(app.get_authed("/api/v1/me", &forged).await.status(), 401);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_redis_unreachable_requests_pass_unlimited(pool: PgPool) {
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let app = spawn_app_with(
        pool,
        test_config(&[("REDIS_URL", &redis), ("RATE_LIMIT_READ", "1/60")]),
        None,
    )
    .await;
    for _ in 0..3 {
        let response = app.get("/api/v1").await;
        assert_eq!(response.status(), 200);
        assert!(header(&response, "ratelimit").is_empty());
    }
    let metrics = shared::telemetry::prometheus().render();
    assert!(
        metrics.contains("conveyor_rate_limit_skipped_total{group=\"read\"}"),
        "{metrics}"
    );
}
