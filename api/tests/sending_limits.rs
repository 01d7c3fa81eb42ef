//! `/api/v1/me/sending-limits` over real HTTP: set (a daily cap, a warm-up, both),
//! read with today's cap and count, replace, remove; every bad field named in a 422.

mod common;

use common::{PASSWORD, Session, problem, spawn_app};
use serde_json::json;
use shared::domain::Role;
use sqlx::PgPool;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_account_sets_reads_replaces_and_removes_its_sending_limits(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, email) = app.create_account(Role::User).await;
    let session: Session = app.login(&email, PASSWORD).await;
    let token = session.access_token;
    let url = app.url("/api/v1/me/sending-limits");

    let none = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    problem(none, 404, "not_found").await;

    let today = time::OffsetDateTime::now_utc().date();
    let set = app
        .client
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({
            "daily_cap": 500,
            "warmup": {"starts_on": today.to_string(), "first_day": 50, "growth_percent": 100, "max": 1000}
        }))
        .send()
        .await
        .expect("put");
    assert_eq!(set.status(), 200);
    let view: serde_json::Value = set.json().await.expect("json");
    assert_eq!(view["time_zone"], "UTC");
    assert_eq!(view["daily_cap"], 500);
    assert_eq!(view["today"], today.to_string());
    assert_eq!(view["cap_today"], 50, "day 0 of the warm-up: {view}");
    assert_eq!(view["sent_today"], 0);
    let read: serde_json::Value = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(read, view);

    // Replaced as a whole: the warm-up left out is gone.
    let replaced: serde_json::Value = app
        .client
        .put(&url)
        .bearer_auth(&token)
        .json(&json!({"time_zone": "Asia/Tokyo", "daily_cap": 20}))
        .send()
        .await
        .expect("put")
        .json()
        .await
        .expect("json");
    assert_eq!(replaced["warmup"], serde_json::Value::Null);
    assert_eq!(replaced["cap_today"], 20);
    assert_eq!(replaced["time_zone"], "Asia/Tokyo");

    for (body, field) in [
        (
            json!({"time_zone": "Mars/Olympus", "daily_cap": 5}),
            "time_zone",
        ),
        (json!({"daily_cap": 0}), "daily_cap"),
        (json!({}), "daily_cap"),
        (
            json!({"warmup": {"starts_on": "2026-13-01", "first_day": 5, "growth_percent": 10}}),
            "warmup.starts_on",
        ),
        (
            json!({"warmup": {"starts_on": "2026-12-01", "first_day": 0, "growth_percent": 10}}),
            "warmup.first_day",
        ),
    ] {
        let response = app
            .client
            .put(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("put");
        let refused = problem(response, 422, "validation_failed").await;
        assert_eq!(refused["errors"][0]["field"], field, "{body}: {refused}");
    }

    let removed = app
        .client
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(removed.status(), 204);
    let gone = app
        .client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    problem(gone, 404, "not_found").await;
}
