//! Registration, login, refresh rotation, logout, password change and lockout, against
//! real PostgreSQL and Redis.

mod common;

use common::{
    PASSWORD, problem, refresh_cookie, session_from, spawn_app, spawn_app_with, test_config,
    unique_email,
};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn register_login_me_refresh_logout(pool: PgPool) {
    let app = spawn_app(pool).await;
    let email = unique_email();
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": email.to_uppercase(), "password": PASSWORD, "display_name": "Ada", "phone": "+14155550123"}),
        )
        .await;
    assert_eq!(response.status(), 202);

    let response = app.login_response(&email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    for attribute in [
        "__Secure-conveyor_refresh=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/v1/auth",
    ] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert_eq!(response.headers()["cache-control"], "no-store");
    let refresh_token = refresh_cookie(&response).expect("refresh token");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().expect("token").to_owned();

    let me: serde_json::Value = app
        .get_authed("/api/v1/me", &access)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], email, "stored normalized");
    assert_eq!(me["display_name"], "Ada");
    assert_eq!(me["role"], "user");
    assert_eq!(me["phone"], "+14155550123");
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(
        me["email_verified"], false,
        "not until the link is followed"
    );

    let refreshed = app.refresh(&refresh_token).await;
    assert_eq!(refreshed.status(), 200);
    let next = session_from(refreshed).await;
    assert_ne!(next.refresh_token, refresh_token, "rotated");
    assert_eq!(
        app.get_authed("/api/v1/me", &next.access_token)
            .await
            .status(),
        200
    );

    let logout = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .header(
            "cookie",
            format!("__Secure-conveyor_refresh={}", next.refresh_token),
        )
        .header("x-requested-with", "test")
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    let cleared = logout.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // Both tokens of the ended session are dead at once.
    problem(
        app.get_authed("/api/v1/me", &next.access_token).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        app.refresh(&next.refresh_token).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn registration_validates_every_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    let email = unique_email();
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (json!({"email": email, "password": "short"}), "password"),
        (
            json!({"email": email, "password": "x".repeat(257)}),
            "password",
        ),
        (
            json!({"email": email, "password": "password1234"}),
            "password",
        ),
        (json!({"email": email, "password": email}), "password"),
        (
            json!({"email": email, "password": PASSWORD, "phone": "555-0123"}),
            "phone",
        ),
        (
            json!({"email": email, "password": PASSWORD, "display_name": "a\u{0007}b"}),
            "display_name",
        ),
        (
            json!({"email": email, "password": PASSWORD, "role": "admin"}),
            "role",
        ),
        (json!({"email": email}), "password"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/api/v1/auth/register", &body).await;
        let problem = problem(response, 422, "validation_failed").await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            fields.contains(&field)
                || problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(field)),
            "{field} not named in {problem}"
        );
    }
    // Nothing was created by any refused request.
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.pool)
        .await
        .expect("count");
    assert_eq!(users, 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_taken_address_answers_like_a_free_one_whatever_its_case(pool: PgPool) {
    let app = spawn_app(pool).await;
    let email = unique_email();
    let first = app.register(&email, PASSWORD).await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = app
        .register(&email.to_uppercase(), "another-long-passphrase-9")
        .await;
    assert_eq!(
        again.status(),
        202,
        "no 409: registration reveals no account"
    );
    let again: serde_json::Value = again.json().await.expect("json");
    assert_eq!(first, again);
    // The first account stands, with its own password.
    app.login(&email, PASSWORD).await;
    assert_eq!(
        app.login_response(&email, "another-long-passphrase-9")
            .await
            .status(),
        401
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn wrong_password_and_unknown_email_are_indistinguishable(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, _) = app.signed_in_user().await;
    let strip = |mut body: serde_json::Value| {
        body.as_object_mut().map(|o| o.remove("request_id"));
        body
    };
    let wrong_password = problem(
        app.login_response(&email, "not-the-password-at-all").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = problem(
        app.login_response(&unique_email(), PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let malformed = problem(
        app.login_response("nobody", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(strip(wrong_password.clone()), strip(unknown));
    assert_eq!(strip(wrong_password), strip(malformed));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn passwords_are_argon2id_with_owasp_parameters_and_pii_is_encrypted(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let email = unique_email();
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "password": PASSWORD, "phone": "+442071838750"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let row: (String, Vec<u8>, Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT password_hash, email_ciphertext, email_index, phone_ciphertext FROM users",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    let (phc, email_ct, email_index, phone_ct) = row;
    let params = phc.split('$').nth(3).expect("PHC parameters");
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    let value = |key: &str| -> u32 {
        params
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .expect("parameter present")
    };
    assert!(value("m") >= 19 * 1024, "{phc}");
    assert!(value("t") >= 2, "{phc}");
    assert!(value("p") >= 1, "{phc}");
    let local = email.split('@').next().expect("local part");
    for (name, bytes) in [("email", &email_ct), ("index", &email_index)] {
        assert!(
            !String::from_utf8_lossy(bytes).contains(local),
            "{name} holds plaintext"
        );
    }
    let phone_ct = phone_ct.expect("phone stored");
    assert!(!String::from_utf8_lossy(&phone_ct).contains("2071838750"));
    // Columns that would hold plaintext hold ciphertext with the key id inside.
    assert_eq!(
        shared::crypto::pii::PiiCipher::key_id_of(&email_ct),
        Some("k1")
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn injection_shaped_values_are_stored_and_returned_verbatim(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let email = "robert'--@example.org";
    let name = "Robert'); DROP TABLE users;--";
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": email, "password": PASSWORD, "display_name": name}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let session = app.login(email, PASSWORD).await;
    let me: serde_json::Value = app
        .get_authed("/api/v1/me", &session.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], email);
    assert_eq!(me["display_name"], name);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .expect("table intact");
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn refresh_token_reuse_revokes_the_family(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, first) = app.signed_in_user().await;
    let second = session_from(app.refresh(&first.refresh_token).await).await;
    // The rotated-away token comes back: someone holds a copy.
    problem(
        app.refresh(&first.refresh_token).await,
        401,
        "unauthenticated",
    )
    .await;
    // Every token of the family is dead now, the newest included.
    problem(
        app.refresh(&second.refresh_token).await,
        401,
        "unauthenticated",
    )
    .await;
    problem(
        app.get_authed("/api/v1/me", &second.access_token).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_refreshes_with_one_token_let_exactly_one_succeed(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.signed_in_user().await;
    let attempts = (0..5).map(|_| app.refresh(&session.refresh_token));
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        4,
        "{statuses:?}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn refresh_needs_the_csrf_header_and_a_cookie(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.signed_in_user().await;
    let without_header = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header(
            "cookie",
            format!("__Secure-conveyor_refresh={}", session.refresh_token),
        )
        .send()
        .await
        .expect("sent");
    problem(without_header, 403, "forbidden").await;
    let without_cookie = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header("x-requested-with", "test")
        .send()
        .await
        .expect("sent");
    problem(without_cookie, 401, "unauthenticated").await;
    // The refused attempts did not spend the token.
    assert_eq!(app.refresh(&session.refresh_token).await.status(), 200);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_password_change_ends_every_session(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, one) = app.signed_in_user().await;
    let two = app.login(&email, PASSWORD).await;
    let new_password = "tangerine-orbit-glacier-novel-77";
    let wrong = app
        .client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&one.access_token)
        .json(&json!({"current_password": "wrong-wrong-wrong-1", "new_password": new_password}))
        .send()
        .await
        .expect("sent");
    problem(wrong, 401, "invalid_credentials").await;
    let changed = app
        .client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&one.access_token)
        .json(&json!({"current_password": PASSWORD, "new_password": new_password}))
        .send()
        .await
        .expect("sent");
    assert_eq!(changed.status(), 204);
    for session in [&one, &two] {
        problem(
            app.get_authed("/api/v1/me", &session.access_token).await,
            401,
            "unauthenticated",
        )
        .await;
        problem(
            app.refresh(&session.refresh_token).await,
            401,
            "unauthenticated",
        )
        .await;
    }
    problem(
        app.login_response(&email, PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(app.login_response(&email, new_password).await.status(), 200);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn repeated_failures_are_throttled_with_retry_after(pool: PgPool) {
    let config = test_config(&[
        ("LOGIN_MAX_FAILURES_ACCOUNT_IP", "3"),
        ("LOGIN_WINDOW_SECS", "60"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let (email, _) = app.signed_in_user().await;
    for _ in 0..3 {
        problem(
            app.login_response(&email, "wrong-password-guess").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let refused = app.login_response(&email, PASSWORD).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    problem(refused, 429, "rate_limited").await;
    // Another account from the same address is not affected.
    let (other, _) = app.signed_in_user().await;
    assert_eq!(app.login_response(&other, PASSWORD).await.status(), 200);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_lockout_ends_with_its_window(pool: PgPool) {
    let config = test_config(&[
        ("LOGIN_MAX_FAILURES_ACCOUNT_IP", "1"),
        ("LOGIN_WINDOW_SECS", "1"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let (email, _) = app.signed_in_user().await;
    problem(
        app.login_response(&email, "wrong-password-guess").await,
        401,
        "invalid_credentials",
    )
    .await;
    problem(
        app.login_response(&email, PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    harness::eventually(
        std::time::Duration::from_secs(10),
        "the lock lifts",
        || async { (app.login_response(&email, PASSWORD).await.status() == 200).then_some(()) },
    )
    .await;
}

/// The per-request session check is cached under the user's session epoch: a change
/// made behind the api's back (here, SQL that does not replace the epoch) is not seen
/// until the epoch changes — which every change the api makes does, and so does the
/// loss of the epoch in Redis.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_session_check_is_cached_under_the_users_epoch(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.as_str();
    let me: serde_json::Value = app
        .get_authed("/api/v1/me", token)
        .await
        .json()
        .await
        .expect("json");
    let user: uuid::Uuid = me["id"].as_str().expect("id").parse().expect("uuid");
    let revoke = || {
        sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1")
            .bind(user)
            .execute(&app.state.pool)
    };
    revoke().await.expect("revoke behind the api's back");
    assert_eq!(
        app.get_authed("/api/v1/me", token).await.status(),
        200,
        "served from the cache: the epoch did not change"
    );
    shared::session_epoch::bump(&app.state.redis, &[user]).await;
    problem(
        app.get_authed("/api/v1/me", token).await,
        401,
        "unauthenticated",
    )
    .await;

    // Redis loses the epoch: the next reader sets a new one, which no entry holds.
    let (_, second) = app.signed_in_user().await;
    let token = second.access_token.as_str();
    let me: serde_json::Value = app
        .get_authed("/api/v1/me", token)
        .await
        .json()
        .await
        .expect("json");
    let user: uuid::Uuid = me["id"].as_str().expect("id").parse().expect("uuid");
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE user_id = $1")
        .bind(user)
        .execute(&app.state.pool)
        .await
        .expect("revoke behind the api's back");
    assert_eq!(app.get_authed("/api/v1/me", token).await.status(), 200);
    let mut redis = app.state.redis.connection();
    let _: i64 = redis::cmd("DEL")
        .arg(shared::session_epoch::key(&app.state.redis, user))
        .query_async(&mut redis)
        .await
        .expect("DEL");
    problem(
        app.get_authed("/api/v1/me", token).await,
        401,
        "unauthenticated",
    )
    .await;
}
