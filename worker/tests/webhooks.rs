//! Completion webhooks end to end, in process: the real api router and worker runtime
//! on a database of their own, and a real HTTP receiver (an axum server in the test)
//! that records what it gets. Signatures are checked with the test's own HMAC.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::app::{TestApp, problem, spawn_app_with, test_config};
use harness::system::Smtp;
use harness::{eventually, free_port};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// What deliveries may reach in these tests: the receiver on loopback, quick retries.
const FAST: &[(&str, &str)] = &[
    ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32"),
    ("WEBHOOK_RETRY_BASE_MS", "50"),
    ("WEBHOOK_MAX_ATTEMPTS", "3"),
    ("WEBHOOK_TIMEOUT_SECS", "5"),
];

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver: answers each POST with the next scripted status (200 once
/// the script is used up); `/redirect` answers 307 to `redirect_to`.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    redirect_to: Arc<Mutex<Option<String>>>,
    base: String,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut receiver = Receiver {
            base: format!("http://{}", listener.local_addr().expect("addr")),
            ..Receiver::default()
        };
        receiver
            .script
            .lock()
            .expect("lock")
            .extend(script.iter().copied());
        let router = axum::Router::new()
            .route("/redirect", post(redirect))
            .route("/{*path}", post(hook))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver.base = receiver.base.clone();
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }
}

async fn hook(
    State(receiver): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receiver.hits.lock().expect("lock").push(Hit {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let status = receiver
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    StatusCode::from_u16(status).expect("status")
}

async fn redirect(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    receiver.hits.lock().expect("lock").push(Hit {
        path: "/redirect".into(),
        headers,
        body,
    });
    let to = receiver
        .redirect_to
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or_default();
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)])
}

/// HMAC-SHA256 (RFC 2104), written here so the test does not trust the code it checks.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `hit` carries a Standard Webhooks signature made with `secret` (shown as
/// `whsec_…`).
fn signed_with(hit: &Hit, secret: &str) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let header = |name: &str| hit.headers[name].to_str().expect("ascii").to_owned();
    let mut message =
        format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).into_bytes();
    message.extend_from_slice(&hit.body);
    let expected = format!("v1,{}", BASE64.encode(hmac_sha256(&key, &message)));
    header("webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
}

async fn app(pool: PgPool, overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with(pool, test_config(overrides), None).await
}

/// A signed-in user with a webhook secret: (id, token, secret).
async fn user_with_secret(app: &TestApp) -> (Uuid, String, String) {
    let (id, email) = app.create_account(shared::domain::Role::User).await;
    let token = app.login(&email, harness::PASSWORD).await.access_token;
    let secret = new_secret(app, &token).await;
    (id, token, secret)
}

async fn new_secret(app: &TestApp, token: &str) -> String {
    let response = app.post_authed("/api/v1/me/webhook-secret", token).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    body["secret"].as_str().expect("secret").to_owned()
}

/// Canary jobs for `owner` whose request calls back `url` (set as the api would have).
async fn canary_with_callback(app: &TestApp, owner: Uuid, url: &str) -> Uuid {
    let id = app.submit_canaries(owner, 1).await;
    sqlx::query("UPDATE requests SET callback_url = $2 WHERE id = $1")
        .bind(id)
        .bind(url)
        .execute(&app.state.pool)
        .await
        .expect("callback set");
    id
}

/// The delivery of `request` once it has ended (delivered or dead).
async fn ended_delivery(app: &TestApp, request: Uuid) -> (Uuid, String, i32, Option<String>) {
    let pool = app.state.pool.clone();
    eventually(WAIT, "the webhook delivery ends", || {
        let pool = pool.clone();
        async move {
            let row: Option<(Uuid, String, i32, Option<String>)> = sqlx::query_as(
                "SELECT d.id, CASE j.status WHEN 'succeeded' THEN 'delivered' WHEN 'dead' THEN 'dead' \
                     ELSE 'pending' END, j.attempt, j.last_error \
                 FROM webhook_deliveries d JOIN jobs j ON j.id = d.id WHERE d.request_id = $1",
            )
            .bind(request)
            .fetch_optional(&pool)
            .await
            .expect("query");
            row.filter(|r| r.1 != "pending")
        }
    })
    .await
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_secret_is_shown_once_and_never_read_back(pool: PgPool) {
    let app = app(pool, &[]).await;
    let (_, email) = app.create_account(shared::domain::Role::User).await;
    let token = app.login(&email, harness::PASSWORD).await.access_token;
    let before: Value = app
        .get_authed("/api/v1/me/webhook-secret", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(before["configured"], false, "{before}");

    let response = app.post_authed("/api/v1/me/webhook-secret", &token).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["location"], "/api/v1/me/webhook-secret");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let created: Value = response.json().await.expect("json");
    let secret = created["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{created}");
    let key = BASE64.decode(&secret[6..]).expect("base64");
    assert_eq!(key.len(), 32);
    assert!(created["previous_valid_until"].is_null());

    let response = app.get_authed("/api/v1/me/webhook-secret", &token).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let shown: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(shown["configured"], true);
    assert_eq!(shown["created_at"], created["created_at"]);
    assert!(shown.get("secret").is_none(), "{shown}");
    assert!(
        !text.contains(&secret[6..]),
        "the secret is never read back"
    );
    // Stored sealed: the plaintext is not in the table.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM webhook_secrets")
        .fetch_one(&app.state.pool)
        .await
        .expect("stored");
    assert!(!stored.windows(key.len()).any(|w| w == key.as_slice()));
    assert!(!String::from_utf8_lossy(&stored).contains(&secret[6..]));

    // Rotation: a new secret; the previous one signs for a grace period.
    let rotated: Value = app
        .post_authed("/api/v1/me/webhook-secret", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(rotated["secret"], created["secret"]);
    assert!(rotated["previous_valid_until"].is_string(), "{rotated}");
    let shown: Value = app
        .get_authed("/api/v1/me/webhook-secret", &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        shown["previous_valid_until"],
        rotated["previous_valid_until"]
    );

    let anonymous = app.post_json("/api/v1/me/webhook-secret", &json!({})).await;
    problem(anonymous, 401, "unauthenticated").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_email_request_delivers_one_webhook_signed_with_the_owners_secret(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let mut overrides = FAST.to_vec();
    overrides.push(("SMTP_URL", &smtp_url));
    let app = app(pool, &overrides).await;
    let receiver = Receiver::start(&[]).await;
    let (_, token, secret) = user_with_secret(&app).await;
    let callback = receiver.url("/hooks/conveyor?tenant=7");
    let response = app
        .post_json_authed(
            "/api/v1/emails",
            &json!({"to": ["ada@example.org"], "subject": "Hooked", "text": "Hi.", "callback_url": callback}),
            &token,
        )
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("json");
    let request: Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    let worker = app.start_worker();
    let (delivery, status, attempts, _) = ended_delivery(&app, request).await;
    smtp.wait_for_messages(1, WAIT).await;
    worker.stop().await;
    assert_eq!((status.as_str(), attempts), ("delivered", 1));

    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "exactly one POST");
    let hit = &hits[0];
    assert_eq!(hit.path, "/hooks/conveyor");
    assert_eq!(hit.headers["content-type"], "application/json");
    assert!(
        hit.headers["user-agent"]
            .to_str()
            .is_ok_and(|ua| ua.starts_with("Conveyor-Webhooks/"))
    );
    assert_eq!(hit.headers["webhook-id"], delivery.to_string().as_str());
    let timestamp: i64 = hit.headers["webhook-timestamp"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("unix seconds");
    assert!((OffsetDateTime::now_utc().unix_timestamp() - timestamp).abs() < 60);
    assert!(signed_with(hit, &secret), "the signature verifies");
    assert!(!signed_with(hit, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    let mut tampered = hit.clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&hit.body).replace("succeeded", "failed"));
    assert!(
        !signed_with(&tampered, &secret),
        "a changed body does not verify"
    );

    let event: Value = serde_json::from_slice(&hit.body).expect("json body");
    assert_eq!(event["type"], "request.finished");
    assert_eq!(event["data"]["id"], accepted["id"]);
    assert_eq!(event["data"]["kind"], "email");
    assert_eq!(event["data"]["status"], "succeeded");
    assert_eq!(
        (
            event["data"]["total"].as_i64(),
            event["data"]["succeeded"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert!(event["data"]["finished_at"].is_string());
    assert_eq!(event["timestamp"], event["data"]["finished_at"]);

    let shown: Value = app
        .get_authed(&format!("/api/v1/requests/{request}"), &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["callback_url"], callback.as_str());
    assert_eq!(shown["webhook"]["status"], "delivered", "{shown}");
    assert_eq!(shown["webhook"]["attempts"], 1);
    assert_eq!(shown["webhook"]["last_status"], 200);
    assert!(shown["webhook"]["last_error"].is_null());
    let metrics = shared::telemetry::prometheus().render();
    assert!(metrics.contains(r#"conveyor_webhook_deliveries_total{outcome="delivered"}"#));
    assert!(metrics.contains("conveyor_webhook_delivery_latency_seconds_count"));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn after_a_rotation_events_are_signed_with_the_new_secret_and_the_old_one_in_grace(
    pool: PgPool,
) {
    let app = app(pool, FAST).await;
    let receiver = Receiver::start(&[]).await;
    let (owner, token, first) = user_with_secret(&app).await;
    let before = canary_with_callback(&app, owner, &receiver.url("/one")).await;
    app.run_pending_jobs().await;
    ended_delivery_with_worker(&app, before).await;
    let second = new_secret(&app, &token).await;
    let after = canary_with_callback(&app, owner, &receiver.url("/two")).await;
    app.run_pending_jobs().await;
    ended_delivery_with_worker(&app, after).await;

    let hits = receiver.hits();
    let one = hits.iter().find(|h| h.path == "/one").expect("first event");
    let two = hits
        .iter()
        .find(|h| h.path == "/two")
        .expect("second event");
    assert!(signed_with(one, &first) && !signed_with(one, &second));
    assert!(signed_with(two, &second), "the new secret signs");
    assert!(
        signed_with(two, &first),
        "the old one still signs during its grace period"
    );
    let signatures = two.headers["webhook-signature"].to_str().expect("ascii");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");

    // Once the grace period is over only the new secret signs.
    sqlx::query("UPDATE webhook_secrets SET previous_until = now() - interval '1 second'")
        .execute(&app.state.pool)
        .await
        .expect("grace over");
    let later = canary_with_callback(&app, owner, &receiver.url("/three")).await;
    app.run_pending_jobs().await;
    ended_delivery_with_worker(&app, later).await;
    let hits = receiver.hits();
    let three = hits
        .iter()
        .find(|h| h.path == "/three")
        .expect("third event");
    assert!(signed_with(three, &second) && !signed_with(three, &first));
}

/// Runs the worker until `request`'s delivery has ended; returns its status.
async fn ended_delivery_with_worker(app: &TestApp, request: Uuid) -> String {
    let worker = app.start_worker();
    let (_, status, _, _) = ended_delivery(app, request).await;
    worker.stop().await;
    status
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_receiver_answering_500_is_retried_until_it_takes_the_event(pool: PgPool) {
    let app = app(pool, FAST).await;
    let receiver = Receiver::start(&[500, 500]).await;
    let (owner, _, secret) = user_with_secret(&app).await;
    let request = canary_with_callback(&app, owner, &receiver.url("/flaky")).await;
    let worker = app.start_worker();
    let (delivery, status, attempts, last_error) = ended_delivery(&app, request).await;
    worker.stop().await;
    assert_eq!((status.as_str(), attempts), ("delivered", 3));
    assert!(last_error.is_none());
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "two refusals, then the delivery");
    for hit in &hits {
        // The same event each time: receivers deduplicate on webhook-id.
        assert_eq!(hit.headers["webhook-id"], delivery.to_string().as_str());
        assert_eq!(hit.body, hits[0].body);
        assert!(signed_with(hit, &secret));
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_receiver_that_always_fails_leaves_the_delivery_dead_after_max_attempts(pool: PgPool) {
    let app = app(pool, FAST).await;
    let receiver = Receiver::start(&[500; 10]).await;
    let (owner, token, _) = user_with_secret(&app).await;
    let request = canary_with_callback(&app, owner, &receiver.url("/down")).await;
    let worker = app.start_worker();
    let (_, status, attempts, last_error) = ended_delivery(&app, request).await;
    worker.stop().await;
    assert_eq!((status.as_str(), attempts), ("dead", 3));
    assert_eq!(receiver.hits().len(), 3);
    assert!(last_error.is_some_and(|e| e.contains("500")));
    // The delivery is a job like any other: operators list it, and may retry it.
    let admin = app.admin_with_2fa().await;
    let listed: Value = app
        .get_authed("/api/v1/admin/jobs?queue=webhooks&status=dead", &admin)
        .await
        .json()
        .await
        .expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["queue"], "webhooks");
    assert_eq!(items[0]["attempt"], 3);
    assert!(
        items[0]["request_id"].is_null(),
        "counted on no request: {listed}"
    );
    let shown: Value = app
        .get_authed(&format!("/api/v1/requests/{request}"), &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["webhook"]["status"], "dead");
    assert_eq!(shown["webhook"]["last_status"], 500);
    // The request itself is unaffected: its jobs succeeded.
    assert_eq!(shown["status"], "succeeded");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deliveries_to_loopback_private_and_metadata_addresses_are_refused(pool: PgPool) {
    // No exemption: the receiver on 127.0.0.1 is off limits too.
    let app = app(pool, &[("WEBHOOK_RETRY_BASE_MS", "50")]).await;
    let receiver = Receiver::start(&[]).await;
    let (owner, token, _) = user_with_secret(&app).await;
    let port = receiver.base.rsplit(':').next().expect("port").to_owned();
    let mut requests = Vec::new();
    for url in [
        receiver.url("/direct"),
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://localhost:{port}/by-name"),
        format!("http://[::ffff:127.0.0.1]:{port}/mapped"),
    ] {
        requests.push((url.clone(), canary_with_callback(&app, owner, &url).await));
    }
    let worker = app.start_worker();
    for (url, request) in &requests {
        let (_, status, attempts, last_error) = ended_delivery(&app, *request).await;
        assert_eq!((status.as_str(), attempts), ("dead", 1), "{url}");
        let error = last_error.unwrap_or_default();
        assert!(error.starts_with("refused: "), "{url}: {error}");
        // The owner learns that the address was refused, not what it resolved to.
        let shown: Value = app
            .get_authed(&format!("/api/v1/requests/{request}"), &token)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            shown["webhook"]["last_error"], "the callback address is not a public address",
            "{url}: {shown}"
        );
    }
    worker.stop().await;
    assert!(receiver.hits().is_empty(), "nothing reached the receiver");
    let metrics = shared::telemetry::prometheus().render();
    assert!(metrics.contains(r#"conveyor_webhook_deliveries_total{outcome="refused"}"#));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_redirect_to_a_refused_address_is_refused(pool: PgPool) {
    let app = app(pool, FAST).await;
    let receiver = Receiver::start(&[]).await;
    let (owner, _, _) = user_with_secret(&app).await;
    *receiver.redirect_to.lock().expect("lock") =
        Some("http://169.254.169.254/latest/meta-data/".into());
    let request = canary_with_callback(&app, owner, &receiver.url("/redirect")).await;
    let worker = app.start_worker();
    let (_, status, attempts, last_error) = ended_delivery(&app, request).await;
    worker.stop().await;
    assert_eq!((status.as_str(), attempts), ("dead", 1));
    let error = last_error.unwrap_or_default();
    assert!(
        error.contains("169.254.169.254") && error.starts_with("refused"),
        "{error}"
    );
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "only the allowed receiver was reached");
    assert_eq!(hits[0].path, "/redirect");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_redirect_to_an_allowed_receiver_is_followed_with_the_event(pool: PgPool) {
    let app = app(pool, FAST).await;
    let receiver = Receiver::start(&[]).await;
    let (owner, _, secret) = user_with_secret(&app).await;
    *receiver.redirect_to.lock().expect("lock") = Some(receiver.url("/moved"));
    let request = canary_with_callback(&app, owner, &receiver.url("/redirect")).await;
    let worker = app.start_worker();
    let (_, status, _, _) = ended_delivery(&app, request).await;
    worker.stop().await;
    assert_eq!(status, "delivered");
    let hits = receiver.hits();
    let paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(paths, ["/redirect", "/moved"]);
    assert!(
        signed_with(&hits[1], &secret),
        "a 307 keeps the method, body and headers"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn submissions_check_the_callback_url(pool: PgPool) {
    let app = app(pool, &[]).await;
    let (_, email) = app.create_account(shared::domain::Role::User).await;
    let token = app.login(&email, harness::PASSWORD).await.access_token;
    let email_with = |url: &str| json!({"to": ["ada@example.org"], "subject": "s", "text": "t", "callback_url": url});
    // Without a signing secret a callback cannot be signed: refused.
    let response = app
        .post_json_authed(
            "/api/v1/emails",
            &email_with("https://hooks.example.org/x"),
            &token,
        )
        .await;
    problem(response, 422, "webhook_secret_missing").await;
    new_secret(&app, &token).await;
    let long = format!("https://example.org/{}", "a".repeat(2048));
    for bad in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "https://user:secret@example.org/",
        "https://example.org/#fragment",
        "ftp://example.org/",
        "/relative/path",
        long.as_str(),
    ] {
        let response = app
            .post_json_authed("/api/v1/emails", &email_with(bad), &token)
            .await;
        let body = problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "callback_url", "{bad}: {body}");
    }
    let campaign = app.create_account(shared::domain::Role::Promoter).await.1;
    let promoter = app.login(&campaign, harness::PASSWORD).await.access_token;
    let response = app
        .post_json_authed(
            "/api/v1/campaigns",
            &json!({"name": "n", "subject": "s", "text": "t", "recipients": ["a@example.org"],
                    "callback_url": "https://hooks.example.org/c"}),
            &promoter,
        )
        .await;
    problem(response, 422, "webhook_secret_missing").await;

    let response = app
        .post_json_authed(
            "/api/v1/emails",
            &email_with("https://hooks.example.org/ok"),
            &token,
        )
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let shown: Value = app
        .get_authed(&format!("/api/v1/requests/{id}"), &token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["callback_url"], "https://hooks.example.org/ok");
    assert!(
        shown["webhook"].is_null(),
        "no delivery before the request finishes"
    );

    // Uploads take it as a form part; a bad one is refused before anything is kept.
    let response = upload_with_callback(&app, &token, 1, "http://169.254.169.254/").await;
    let body = problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "callback_url");
    let uploads: i64 = sqlx::query_scalar("SELECT count(*) FROM uploads")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(uploads, 0);
    let response = upload_with_callback(&app, &token, 2, "https://hooks.example.org/upload").await;
    assert_eq!(response.status(), 202);
    let upload: Value = response.json().await.expect("json");
    let shown: Value = app
        .get_authed(
            &format!(
                "/api/v1/requests/{}",
                upload["request_id"].as_str().expect("id")
            ),
            &token,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["callback_url"], "https://hooks.example.org/upload");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_cancelled_request_delivers_its_final_state(pool: PgPool) {
    let app = app(pool, FAST).await;
    let receiver = Receiver::start(&[]).await;
    let (owner, token, secret) = user_with_secret(&app).await;
    let request = canary_with_callback(&app, owner, &receiver.url("/cancelled")).await;
    // Finished by the api (no worker ran its job): the trigger covers it too.
    let response = app
        .post_authed(&format!("/api/v1/requests/{request}/cancel"), &token)
        .await;
    assert_eq!(response.status(), 200);
    let status = ended_delivery_with_worker(&app, request).await;
    assert_eq!(status, "delivered");
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1);
    assert!(signed_with(&hits[0], &secret));
    let event: Value = serde_json::from_slice(&hits[0].body).expect("json");
    assert_eq!(event["data"]["status"], "cancelled");
    assert_eq!(event["data"]["cancelled"], 1);
}

/// Uploads a small PNG (`seed` makes its content unique) with `callback_url` as a form
/// part.
async fn upload_with_callback(
    app: &TestApp,
    token: &str,
    seed: u8,
    callback_url: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(harness::fixtures::small_png(seed))
                .file_name(format!("{seed}.png")),
        )
        .text("callback_url", callback_url.to_owned());
    app.client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("sent")
}
