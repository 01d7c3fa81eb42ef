//! Hostile input answered as a client error, never a 500: NUL characters PostgreSQL
//! cannot store, cursors naming instants it cannot represent, and invalid lists so long
//! that listing every error would amplify the request.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{PASSWORD, TestApp, problem, spawn_app, unique_email};
use serde_json::{Value, json};
use shared::domain::Role;
use sqlx::PgPool;

async fn promoter_token(app: &TestApp) -> String {
    let (_, email) = app.create_account(Role::Promoter).await;
    app.login(&email, PASSWORD).await.access_token
}

/// The one field error a 422 names.
fn only_field(body: &Value) -> &str {
    let errors = body["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 1, "{body}");
    errors[0]["field"].as_str().expect("field")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_nul_in_an_email_is_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.register_user().await;
    let valid = json!({"to": ["ada@example.org"], "subject": "Hi", "text": "Hello", "html": "<p>Hello</p>"});
    for field in ["text", "html", "subject"] {
        let mut body = valid.clone();
        body[field] = json!("before\u{0}after");
        let response = app
            .post_json_authed("/api/v1/emails", &body, &session.access_token)
            .await;
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(only_field(&problem), field, "{problem}");
    }
    let mut body = valid.clone();
    body["to"] = json!(["ada@example.org", "bob\u{0}@example.org"]);
    let response = app
        .post_json_authed("/api/v1/emails", &body, &session.access_token)
        .await;
    let problem = problem(response, 422, "validation_failed").await;
    assert_eq!(only_field(&problem), "to[1]", "{problem}");
    // Nothing was queued by the refused requests; a clean one still is.
    let response = app
        .post_json_authed("/api/v1/emails", &valid, &session.access_token)
        .await;
    assert_eq!(response.status(), 202);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_nul_in_a_campaign_is_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = promoter_token(&app).await;
    let valid = json!({"name": "Spring", "subject": "Hi", "text": "Hello", "html": "<p>Hello</p>",
                       "recipients": ["ada@example.org"]});
    for field in ["name", "text", "html", "subject"] {
        let mut body = valid.clone();
        body[field] = json!("a\u{0}b");
        let response = app
            .post_json_authed("/api/v1/campaigns", &body, &token)
            .await;
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(only_field(&problem), field, "{problem}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_nul_in_a_display_name_is_422_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": unique_email(), "password": PASSWORD, "display_name": "Ada\u{0}"}),
        )
        .await;
    let problem = problem(response, 422, "validation_failed").await;
    assert_eq!(only_field(&problem), "display_name", "{problem}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_nul_in_an_upload_description_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.register_user().await;
    let form = reqwest::multipart::Form::new()
        .text("description", "a\u{0}b")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
        );
    let response = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&session.access_token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let problem = problem(response, 400, "validation_failed").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("description")),
        "{problem}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_browser_s_crlf_line_breaks_in_a_description_are_kept_as_lf(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.register_user().await;
    let send = |description: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("description", description)
            .part(
                "file",
                reqwest::multipart::Part::bytes(description.as_bytes().to_vec())
                    .file_name("notes.txt"),
            );
        app.client
            .post(app.url("/api/v1/uploads"))
            .bearer_auth(&session.access_token)
            .multipart(form)
            .send()
    };
    let accepted = send("first line\r\nsecond line").await.expect("sent");
    assert_eq!(accepted.status(), 202);
    let body: serde_json::Value = accepted.json().await.expect("json");
    assert_eq!(body["description"], "first line\nsecond line");
    problem(
        send("a lone\rcarriage return").await.expect("sent"),
        400,
        "validation_failed",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_nul_in_a_query_value_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.register_user().await;
    for path in [
        "/api/v1/requests?kind=email%00",
        "/api/v1/uploads?cursor=%00",
    ] {
        let response = app.get_authed(path, &session.access_token).await;
        problem(response, 400, "validation_failed").await;
    }
}

fn cursor_at_secs(secs: i128) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", secs * 1_000_000_000, uuid::Uuid::now_v7()))
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_cursor_postgres_cannot_represent_is_400(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.register_user().await;
    // Year -9999 and about 5000 BC (before 4714 BC), year 300000 (past 294276).
    for secs in [-377_705_116_800, -219_928_780_800, 9_404_855_232_000] {
        for listing in ["/api/v1/requests", "/api/v1/uploads"] {
            let path = format!("{listing}?cursor={}", cursor_at_secs(secs));
            let response = app.get_authed(&path, &session.access_token).await;
            problem(response, 400, "validation_failed").await;
        }
    }
    // The earliest instant PostgreSQL holds is still a cursor.
    let path = format!(
        "/api/v1/requests?cursor={}",
        cursor_at_secs(-210_866_803_200)
    );
    assert_eq!(
        app.get_authed(&path, &session.access_token).await.status(),
        200
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_huge_invalid_recipient_list_gets_a_small_422(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.register_user().await;
    let to: Vec<String> = (0..5000).map(|i| format!("not-an-address-{i}")).collect();
    let response = app
        .post_json_authed(
            "/api/v1/emails",
            &json!({"to": to, "subject": "Hi", "text": "Hello"}),
            &session.access_token,
        )
        .await;
    assert_eq!(response.status(), 422);
    let bytes = response.bytes().await.expect("body");
    assert!(bytes.len() < 16 * 1024, "{} bytes", bytes.len());
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(only_field(&body), "to", "{body}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn field_errors_are_capped_and_the_rest_counted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = promoter_token(&app).await;
    let recipients: Vec<String> = (0..5000).map(|i| format!("not-an-address-{i}")).collect();
    let response = app
        .post_json_authed(
            "/api/v1/campaigns",
            &json!({"name": "Spring", "subject": "Hi", "text": "Hello", "recipients": recipients}),
            &token,
        )
        .await;
    assert_eq!(response.status(), 422);
    let bytes = response.bytes().await.expect("body");
    assert!(bytes.len() < 16 * 1024, "{} bytes", bytes.len());
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    let errors = body["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 100, "{body}");
    assert_eq!(errors[0]["field"], "recipients[0]");
    assert_eq!(body["errors_omitted"], 4900, "{body}");
}

/// A malformed path parameter or a missing field is named, with what it must be.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_malformed_path_parameter_or_a_missing_field_is_named(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = promoter_token(&app).await;
    let problem_of = async |path: &str| {
        let response = app.get_authed(path, &token).await;
        problem(response, 400, "validation_failed").await
    };
    let body = problem_of("/api/v1/requests/hello").await;
    assert_eq!(only_field(&body), "id", "{body}");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(message.starts_with("must be a UUID, e.g. "), "{body}");
    assert!(message.ends_with("got \"hello\""), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .starts_with("`id`: must be a UUID"),
        "{body}"
    );

    let body = problem_of("/api/v1/uploads/not-an-id/content").await;
    assert_eq!(only_field(&body), "id", "{body}");

    // An unknown queue: the parameter, and the queues there are.
    let admin = app.admin_with_2fa().await;
    let response = app
        .post_authed("/api/v1/admin/queues/xyz/pause", &admin)
        .await;
    let body = problem(response, 400, "validation_failed").await;
    assert_eq!(only_field(&body), "queue", "{body}");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("`xyz`") && message.contains("`emails`"),
        "{body}"
    );

    // A missing field of a JSON body: the field itself, required.
    let response = app
        .post_json_authed(
            "/api/v1/emails",
            &json!({"subject": "Hi", "text": "Hello"}),
            &token,
        )
        .await;
    let body = problem(response, 422, "validation_failed").await;
    assert_eq!(only_field(&body), "to", "{body}");
    assert_eq!(body["errors"][0]["message"], "is required", "{body}");
}
