//! Email verification and message quotas: a self-registered account cannot relay
//! mail until its address is confirmed through a single-use link sent through the
//! emails queue; registration says nothing about whether an address is taken; each
//! account's messages per hour and per day are bounded by role.

mod common;

use std::time::Duration;

use common::{PASSWORD, TestApp, problem, spawn_app, spawn_app_with, test_config, unique_email};
use serde_json::{Value, json};
use shared::domain::Role;
use sqlx::PgPool;
use uuid::Uuid;

async fn user_id(app: &TestApp, token: &str) -> Uuid {
    let me: Value = app
        .get_authed("/api/v1/me", token)
        .await
        .json()
        .await
        .expect("json");
    me["id"].as_str().expect("id").parse().expect("uuid")
}

async fn me(app: &TestApp, token: &str) -> Value {
    app.get_authed("/api/v1/me", token)
        .await
        .json()
        .await
        .expect("json")
}

fn email_body(to: &[&str]) -> Value {
    json!({"to": to, "subject": "Hello", "text": "Hi there."})
}

async fn post_email(app: &TestApp, token: &str, to: &[&str]) -> reqwest::Response {
    app.post_json_authed("/api/v1/emails", &email_body(to), token)
        .await
}

/// A self-registered (unverified) account, signed in: its session, id and the token of
/// the verification link queued for it.
async fn registered(app: &TestApp) -> (common::Session, Uuid, String) {
    let email = unique_email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    let session = app.login(&email, PASSWORD).await;
    let id = user_id(app, &session.access_token).await;
    let token = app.verification_token(id).await.expect("a link");
    (session, id, token)
}

async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/api/v1/auth/verify-email", &json!({"token": token}))
        .await
}

/// Account-email requests of `owner`: (name, job payload as text).
async fn account_emails(app: &TestApp, owner: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT r.name, j.payload::text FROM requests r JOIN jobs j ON j.request_id = r.id \
         WHERE r.owner_id = $1 AND r.kind = 'account_email' ORDER BY j.created_at",
    )
    .bind(owner)
    .fetch_all(&app.state.pool)
    .await
    .expect("query")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_unverified_account_signs_in_but_sends_nothing_until_its_link_is_followed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let email = unique_email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    let session = app.login(&email, PASSWORD).await;
    let token = session.access_token.as_str();
    assert_eq!(me(&app, token).await["email_verified"], false);

    problem(
        post_email(&app, token, &["bob@example.org"]).await,
        403,
        "email_unverified",
    )
    .await;
    problem(
        app.upload(token, "a.txt", None, b"hello".to_vec()).await,
        403,
        "email_unverified",
    )
    .await;
    let campaign = app
        .post_json_authed(
            "/api/v1/campaigns",
            &json!({"name": "n", "subject": "s", "text": "t", "recipients": ["a@example.org"]}),
            token,
        )
        .await;
    problem(campaign, 403, "forbidden").await; // a user may not send campaigns at all
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM requests WHERE kind <> 'account_email'")
            .fetch_one(&app.state.pool)
            .await
            .expect("count");
    assert_eq!(count, 0, "nothing was queued");

    // The link went out through the emails queue, as an account email of the user's,
    // with neither the address nor the token readable in the jobs table.
    let id = user_id(&app, token).await;
    let mails = account_emails(&app, id).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].0, "email verification");
    let link_token = app.verification_token(id).await.expect("a link");
    assert!(!mails[0].1.contains(&link_token), "token sealed");
    assert!(!mails[0].1.contains(email.split('@').next().expect("local")));

    let first = verify(&app, &link_token).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("json");
    assert_eq!(
        first,
        json!({"email_verified": true, "already_verified": false})
    );
    // The same access token may send now: the check reads the account, not the token.
    assert_eq!(me(&app, token).await["email_verified"], true);
    assert_eq!(
        post_email(&app, token, &["bob@example.org"]).await.status(),
        202
    );
    // Following the link again changes nothing and says so.
    let again: Value = verify(&app, &link_token).await.json().await.expect("json");
    assert_eq!(again["already_verified"], true);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn bad_expired_and_other_accounts_tokens_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (session, _, token) = registered(&app).await;

    for bad in [
        "nope".to_owned(),
        "A".repeat(43),
        format!("{}x", &token[..42]),
        "a\u{0}".repeat(20),
    ] {
        problem(verify(&app, &bad).await, 422, "validation_failed").await;
    }
    sqlx::query("UPDATE email_verifications SET expires_at = now() - interval '1 second'")
        .execute(&app.state.pool)
        .await
        .expect("expire");
    problem(verify(&app, &token).await, 422, "validation_failed").await;
    assert_eq!(
        me(&app, &session.access_token).await["email_verified"],
        false
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_link_page_only_shows_a_button_and_the_form_post_confirms(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (session, _, token) = registered(&app).await;

    let page = app
        .get(&format!("/api/v1/auth/verify-email?token={token}"))
        .await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"));
    let html = page.text().await.expect("text");
    assert!(html.contains("<form method=\"post\" action=\"verify-email\">"));
    assert!(html.contains(&token));
    // Opening the link (as a mail scanner would) confirmed nothing.
    assert_eq!(
        me(&app, &session.access_token).await["email_verified"],
        false
    );

    let hostile = app
        .get("/api/v1/auth/verify-email?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
        .await;
    let hostile = problem(hostile, 400, "validation_failed").await.to_string();
    assert!(
        !hostile.contains("script"),
        "nothing of the input is echoed: {hostile}"
    );
    problem(
        app.get("/api/v1/auth/verify-email").await,
        400,
        "validation_failed",
    )
    .await;

    let confirmed = app
        .client
        .post(app.url("/api/v1/auth/verify-email"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("sent");
    assert_eq!(confirmed.status(), 200);
    assert!(
        confirmed
            .text()
            .await
            .expect("text")
            .contains("Email address confirmed")
    );
    assert_eq!(
        me(&app, &session.access_token).await["email_verified"],
        true
    );

    let refused = app
        .client
        .post(app.url("/api/v1/auth/verify-email"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "A".repeat(43)))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.expect("text").contains("not valid"));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn registering_a_taken_address_tells_its_owner_once_per_interval(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (owner, email) = app.create_account(Role::User).await;
    let free = app.register(&unique_email(), PASSWORD).await;
    assert_eq!(free.status(), 202);
    let free_headers: Vec<String> = free.headers().keys().map(|k| k.to_string()).collect();
    let free_body: Value = free.json().await.expect("json");

    let taken = app.register(&email, "a-different-passphrase-7").await;
    assert_eq!(taken.status(), 202);
    let taken_headers: Vec<String> = taken.headers().keys().map(|k| k.to_string()).collect();
    assert_eq!(taken_headers, free_headers);
    assert_eq!(taken.json::<Value>().await.expect("json"), free_body);

    let mails = account_emails(&app, owner).await;
    assert_eq!(mails.len(), 1, "the owner is told");
    assert_eq!(mails[0].0, "registration notice");
    let payload: shared::jobs::email::EmailJob =
        serde_json::from_str(&mails[0].1).expect("an email job");
    let notice = payload
        .sealed_content
        .expect("sealed")
        .open(&app.state.security.pii)
        .expect("opens");
    assert!(
        notice.text.contains("Nothing was changed"),
        "{}",
        notice.text
    );
    assert!(notice.text.contains("sign in with your existing password"));

    // A second attempt within ACCOUNT_MAIL_INTERVAL_SECS answers the same and sends nothing.
    assert_eq!(
        app.register(&email, "a-different-passphrase-7")
            .await
            .status(),
        202
    );
    assert_eq!(account_emails(&app, owner).await.len(), 1, "no mail flood");
    // The owner's password is untouched.
    app.login(&email, PASSWORD).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_new_link_can_be_asked_for_at_most_once_per_interval(pool: PgPool) {
    let config = test_config(&[("ACCOUNT_MAIL_INTERVAL_SECS", "0")]);
    let app = spawn_app_with(pool.clone(), config, None).await;
    let (session, id, first) = registered(&app).await;
    let resend = app
        .post_json_authed(
            "/api/v1/auth/verify-email/resend",
            &json!({}),
            &session.access_token,
        )
        .await;
    assert_eq!(resend.status(), 202);
    let second = app.verification_token(id).await.expect("a new link");
    assert_ne!(first, second);
    assert_eq!(account_emails(&app, id).await.len(), 2);
    assert_eq!(verify(&app, &second).await.status(), 200);
    let done = app
        .post_json_authed(
            "/api/v1/auth/verify-email/resend",
            &json!({}),
            &session.access_token,
        )
        .await;
    problem(done, 409, "conflict").await;

    // With the default interval (300 s), a resend right after registering waits.
    let app = spawn_app(pool).await;
    let email = unique_email();
    app.register(&email, PASSWORD).await;
    let session = app.login(&email, PASSWORD).await;
    let early = app
        .post_json_authed(
            "/api/v1/auth/verify-email/resend",
            &json!({}),
            &session.access_token,
        )
        .await;
    let retry_after: u64 = early.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((290..=300).contains(&retry_after), "{retry_after}");
    problem(early, 429, "rate_limited").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn accounts_never_confirmed_are_deleted_after_their_ttl(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let stale = unique_email();
    app.register(&stale, PASSWORD).await;
    let fresh = unique_email();
    app.register(&fresh, PASSWORD).await;
    let (verified_id, _) = app.create_account(Role::User).await;
    // The first registration (ids are time-ordered) and the verified account are old.
    sqlx::query(
        "UPDATE users SET created_at = now() - interval '8 days' WHERE id = $1 \
         OR id = (SELECT id FROM users WHERE email_verified_at IS NULL ORDER BY id LIMIT 1)",
    )
    .bind(verified_id)
    .execute(&pool)
    .await
    .expect("age two accounts");
    let pruner = shared::maintenance::retention::Pruner::new(
        pool.clone(),
        app.state.redis.clone(),
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(7 * 86_400),
    );
    let pruned = pruner.round().await.expect("prune");
    assert_eq!(pruned.unverified_accounts, 1);
    let left: Vec<bool> =
        sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("users");
    assert_eq!(left.len(), 2, "the verified and the young account stay");
    // The address of the deleted account can be registered again, by its real owner.
    assert_eq!(
        app.register(&stale, "the-real-owner-says-hi-5")
            .await
            .status(),
        202
    );
    app.login(&stale, "the-real-owner-says-hi-5").await;
}

fn quota_config(per_hour: &str, per_day: &str) -> common::TestConfig {
    test_config(&[
        ("EMAIL_QUOTA_USER_PER_HOUR", per_hour),
        ("EMAIL_QUOTA_USER_PER_DAY", per_day),
    ])
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_hourly_quota_counts_recipients_and_says_when_to_retry(pool: PgPool) {
    let app = spawn_app_with(pool, quota_config("5", "1000"), None).await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.as_str();
    let three = ["a@example.org", "b@example.org", "c@example.org"];
    assert_eq!(post_email(&app, token, &three).await.status(), 202);
    let over = post_email(&app, token, &three).await;
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after > 0 && retry_after <= 7200, "{retry_after}");
    let body = problem(over, 429, "message_quota_exceeded").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("5 per hour"),
        "{body}"
    );
    // What fits still goes: 3 + 2 = 5.
    assert_eq!(
        post_email(&app, token, &["d@example.org", "e@example.org"])
            .await
            .status(),
        202
    );
    problem(
        post_email(&app, token, &["f@example.org"]).await,
        429,
        "message_quota_exceeded",
    )
    .await;
    // More recipients than the whole quota can never fit: 422, not "retry later".
    let six: Vec<String> = (0..6).map(|i| format!("r{i}@example.org")).collect();
    let six: Vec<&str> = six.iter().map(String::as_str).collect();
    let (_, other) = app.signed_in_user().await;
    problem(
        post_email(&app, &other.access_token, &six).await,
        422,
        "validation_failed",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_parallel_burst_cannot_overrun_the_quota(pool: PgPool) {
    let app = spawn_app_with(pool, quota_config("5", "1000"), None).await;
    let (_, session) = app.signed_in_user().await;
    let sends = (0..12).map(|i| {
        let to = format!("p{i}@example.org");
        let token = session.access_token.clone();
        let app = &app;
        async move {
            post_email(app, &token, &[to.as_str()])
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(sends).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM requests WHERE kind = 'email'")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(queued, 5, "refused submissions left nothing behind");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idempotent_replay_is_not_charged_again(pool: PgPool) {
    let app = spawn_app_with(pool, quota_config("2", "1000"), None).await;
    let (_, session) = app.signed_in_user().await;
    let send = || {
        app.client
            .post(app.url("/api/v1/emails"))
            .bearer_auth(&session.access_token)
            .header("idempotency-key", "once")
            .json(&email_body(&["a@example.org", "b@example.org"]))
            .send()
    };
    let first: Value = send().await.expect("sent").json().await.expect("json");
    let replay = send().await.expect("sent");
    assert_eq!(replay.status(), 202, "a replay of an accepted request");
    assert_eq!(
        replay.json::<Value>().await.expect("json")["id"],
        first["id"]
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_daily_quota_counts_the_last_24_hours(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), quota_config("100", "10"), None).await;
    let (_, session) = app.signed_in_user().await;
    let id = user_id(&app, &session.access_token).await;
    // Nine messages three to five hours ago: within the day, outside the hour.
    sqlx::query(
        "INSERT INTO message_quota_usage (owner_id, hour, messages) VALUES \
         ($1, date_trunc('hour', now()) - interval '5 hours', 4), \
         ($1, date_trunc('hour', now()) - interval '3 hours', 5), \
         ($1, date_trunc('hour', now()) - interval '30 hours', 500)",
    )
    .bind(id)
    .execute(&pool)
    .await
    .expect("earlier usage");
    let token = session.access_token.as_str();
    assert_eq!(
        post_email(&app, token, &["a@example.org"]).await.status(),
        202
    );
    let over = post_email(&app, token, &["b@example.org"]).await;
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    // The first of those hours leaves the 24-hour window in about 19 hours.
    assert!(
        (18 * 3600..=20 * 3600).contains(&retry_after),
        "{retry_after}"
    );
    problem(over, 429, "message_quota_exceeded").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn campaigns_charge_one_message_per_distinct_recipient(pool: PgPool) {
    let config = test_config(&[
        ("EMAIL_QUOTA_PROMOTER_PER_HOUR", "3"),
        ("EMAIL_QUOTA_PROMOTER_PER_DAY", "100"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let (_, email) = app.create_account(Role::Promoter).await;
    let session = app.login(&email, PASSWORD).await;
    let campaign = |recipients: Vec<&'static str>| {
        let body = json!({"name": "spring", "subject": "s", "text": "t", "recipients": recipients});
        let token = session.access_token.clone();
        let app = &app;
        async move {
            app.post_json_authed("/api/v1/campaigns", &body, &token)
                .await
        }
    };
    let first = campaign(vec!["a@example.org", "b@example.org", "A@example.org"]).await;
    assert_eq!(first.status(), 202, "two distinct recipients");
    problem(
        campaign(vec!["c@example.org", "d@example.org"]).await,
        429,
        "message_quota_exceeded",
    )
    .await;
    assert_eq!(campaign(vec!["c@example.org"]).await.status(), 202);
}
