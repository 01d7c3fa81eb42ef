//! The suppression list API through the api alone: who may use it, adding (by
//! address, idempotent), finding by address, paging, removing, one account never
//! seeing another's list; the unsubscribe and inbound report endpoints' refusals.

mod common;

use common::{PASSWORD, TestApp, problem, spawn_app, spawn_app_with, test_config};
use serde_json::{Value, json};
use shared::domain::Role;
use sqlx::PgPool;

async fn promoter(app: &TestApp) -> String {
    let (_, email) = app.create_account(Role::Promoter).await;
    app.login(&email, PASSWORD).await.access_token
}

async fn add(app: &TestApp, token: &str, address: &str) -> reqwest::Response {
    app.post_json_authed("/api/v1/suppressions", &json!({"address": address}), token)
        .await
}

async fn delete(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/api/v1/suppressions/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_promoter_manages_its_own_list(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let token = promoter(&app).await;

    let response = add(&app, &token, "Ada@Example.org").await;
    assert_eq!(response.status(), 201);
    let entry: Value = response.json().await.expect("json");
    assert_eq!(entry["address"], "ada@example.org");
    assert_eq!(entry["reason"], "manual");
    // The same address, spelled otherwise: the existing entry.
    let response = add(&app, &token, "ada@EXAMPLE.org").await;
    assert_eq!(response.status(), 200);
    let again: Value = response.json().await.expect("json");
    assert_eq!(again["id"], entry["id"]);

    let stored: Vec<u8> = sqlx::query_scalar("SELECT address FROM suppressions")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert!(
        !String::from_utf8_lossy(&stored).contains("ada"),
        "sealed at rest"
    );

    for n in 0..4 {
        assert_eq!(
            add(&app, &token, &format!("r{n}@example.org"))
                .await
                .status(),
            201
        );
    }
    let page: Value = app
        .get_authed("/api/v1/suppressions?limit=3", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"].as_array().expect("items").len(), 3);
    assert_eq!(
        page["items"][0]["address"], "r3@example.org",
        "newest first"
    );
    let cursor = page["next_cursor"].as_str().expect("more");
    let rest: Value = app
        .get_authed(
            &format!("/api/v1/suppressions?limit=3&cursor={cursor}"),
            &token,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rest["items"].as_array().expect("items").len(), 2);
    assert!(rest["next_cursor"].is_null());

    let found: Value = app
        .get_authed("/api/v1/suppressions?address=ADA@example.org", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["items"][0]["id"], entry["id"]);

    // Another promoter sees none of it and cannot remove it.
    let other = promoter(&app).await;
    let theirs: Value = app
        .get_authed("/api/v1/suppressions?address=ada@example.org", &other)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["items"], json!([]));
    let id = entry["id"].as_str().expect("id");
    problem(delete(&app, &other, id).await, 404, "not_found").await;

    assert_eq!(delete(&app, &token, id).await.status(), 204);
    problem(delete(&app, &token, id).await, 404, "not_found").await;
    let gone: Value = app
        .get_authed("/api/v1/suppressions?address=ada@example.org", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(gone["items"], json!([]));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn users_may_not_and_bad_input_is_a_clear_error(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, user) = app.signed_in_user().await;
    problem(
        app.get_authed("/api/v1/suppressions", &user.access_token)
            .await,
        403,
        "forbidden",
    )
    .await;
    let token = promoter(&app).await;
    problem(
        add(&app, &token, "not an address").await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        app.get_authed("/api/v1/suppressions?address=nope", &token)
            .await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        app.get_authed("/api/v1/suppressions?cursor=garbage", &token)
            .await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        delete(&app, &token, "not-a-uuid").await,
        400,
        "validation_failed",
    )
    .await;
    // Unsubscribe tokens the api did not make.
    problem(
        app.get("/api/v1/unsubscribe/bm90LWEtdG9rZW4").await,
        404,
        "not_found",
    )
    .await;
    let response = app
        .client
        .post(app.url("/api/v1/unsubscribe/bm90LWEtdG9rZW4"))
        .send()
        .await
        .expect("sent");
    problem(response, 404, "not_found").await;
    // Campaign statistics of something that is not the caller's campaign.
    problem(
        app.get_authed(
            &format!("/api/v1/campaigns/{}/stats", uuid::Uuid::new_v4()),
            &token,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn inbound_reports_are_off_without_a_token_and_refused_with_a_wrong_one(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let response = app
        .client
        .post(app.url("/api/v1/inbound/reports"))
        .body("x")
        .send()
        .await
        .expect("sent");
    problem(response, 401, "unauthenticated").await;
    let response = app
        .client
        .post(app.url("/api/v1/inbound/reports"))
        .bearer_auth("anything")
        .body("x")
        .send()
        .await
        .expect("sent");
    problem(response, 404, "not_found").await;

    let app = spawn_app_with(
        pool,
        test_config(&[("INBOUND_REPORTS_TOKEN", "t0ken")]),
        None,
    )
    .await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer t0ke"),
        Some("t0ken"),
    ] {
        let mut request = app
            .client
            .post(app.url("/api/v1/inbound/reports"))
            .body("x");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        problem(request.send().await.expect("sent"), 401, "unauthenticated").await;
    }
    let response = app
        .client
        .post(app.url("/api/v1/inbound/reports"))
        .bearer_auth("t0ken")
        .body("Subject: hello\r\n\r\nnot a report")
        .send()
        .await
        .expect("sent");
    problem(response, 422, "validation_failed").await;
}
