//! Roles, permissions and 2FA: the permission table, admin endpoints needing a 2FA
//! login, role changes taking effect at once, TOTP replay and recovery codes.

mod common;

use api::middleware::auth::AuthUser;
use common::{PASSWORD, TestApp, problem, session_from, spawn_app, spawn_app_with, totp_code};
use serde_json::json;
use shared::ErrorCode;
use shared::domain::{Permission, Role};
use sqlx::PgPool;

#[test]
fn each_role_against_each_permission() {
    use Permission::*;
    // (permission, user, promoter, admin)
    let table = [
        (SubmitEmail, true, true, true),
        (SubmitCampaign, false, true, true),
        (Upload, true, true, true),
        (Scan, true, true, true),
        (ReadOwnRequests, true, true, true),
        (ReadAllRequests, false, false, true),
        (ManageQueues, false, false, true),
        (ManageUsers, false, false, true),
        (ManageSuppressions, false, true, true),
    ];
    assert_eq!(
        table.len(),
        Permission::ALL.len(),
        "every permission is in the table"
    );
    for (permission, user, promoter, admin) in table {
        for (role, allowed) in [
            (Role::User, user),
            (Role::Promoter, promoter),
            (Role::Admin, admin),
        ] {
            for mfa in [false, true] {
                let caller = AuthUser(shared::domain::Principal {
                    id: uuid::Uuid::nil(),
                    role,
                    session_id: uuid::Uuid::nil(),
                    mfa,
                    email_verified: true,
                });
                let outcome = caller.require(permission).map_err(|e| e.code());
                let expected = match (allowed, permission.requires_mfa() && !mfa) {
                    (false, _) => Err(ErrorCode::Forbidden),
                    (true, true) => Err(ErrorCode::MfaRequired),
                    (true, false) => Ok(()),
                };
                assert_eq!(outcome, expected, "{role:?} {permission:?} mfa={mfa}");
            }
        }
    }
}

async fn mfa_token(app: &TestApp, email: &str) -> String {
    let response = app.login_response(email, PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert!(
        common::refresh_cookie(&response).is_none(),
        "no session before the second factor"
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["mfa_required"], true);
    body["mfa_token"].as_str().expect("mfa token").to_owned()
}

async fn login_mfa(app: &TestApp, token: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/auth/login/mfa",
        &json!({"mfa_token": token, "code": code}),
    )
    .await
}

async fn patch_role(app: &TestApp, token: &str, id: uuid::Uuid, role: &str) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/v1/admin/users/{id}")))
        .bearer_auth(token)
        .json(&json!({"role": role}))
        .send()
        .await
        .expect("sent")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn admin_endpoints_need_admin_and_a_2fa_login(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (target, target_email) = app.create_account(Role::User).await;
    let (_, promoter_email) = app.create_account(Role::Promoter).await;
    let (_, admin_email) = app.create_account(Role::Admin).await;

    let user = app.signed_in_user().await.1;
    problem(
        patch_role(&app, &user.access_token, target, "promoter").await,
        403,
        "forbidden",
    )
    .await;
    let promoter = app.login(&promoter_email, PASSWORD).await;
    problem(
        patch_role(&app, &promoter.access_token, target, "promoter").await,
        403,
        "forbidden",
    )
    .await;

    let admin = app.login(&admin_email, PASSWORD).await;
    problem(
        patch_role(&app, &admin.access_token, target, "promoter").await,
        403,
        "mfa_required",
    )
    .await;

    // The same admin, signed in again with a second factor.
    let (secret, _) = app.enable_2fa(&admin).await;
    let token = mfa_token(&app, &admin_email).await;
    // A code for the next step: the enabling code's step is spent.
    let response = login_mfa(&app, &token, &totp_code(&secret, 1)).await;
    assert_eq!(response.status(), 200);
    let admin = session_from(response).await.access_token;
    let changed = patch_role(&app, &admin, target, "promoter").await;
    assert_eq!(changed.status(), 200);
    let body: serde_json::Value = changed.json().await.expect("json");
    assert_eq!(body["role"], "promoter");
    assert!(
        body.get("email").is_none(),
        "admins do not see other users' PII"
    );

    problem(
        patch_role(&app, &admin, uuid::Uuid::now_v7(), "user").await,
        404,
        "not_found",
    )
    .await;
    let bad_role = patch_role(&app, &admin, target, "root").await;
    problem(bad_role, 422, "validation_failed").await;
    let _ = target_email;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_role_change_takes_effect_at_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (target, target_email) = app.create_account(Role::Promoter).await;
    let admin = app.admin_with_2fa().await;
    let me: serde_json::Value = app
        .get_authed("/api/v1/me", &admin)
        .await
        .json()
        .await
        .expect("json");
    let admin_id: uuid::Uuid = me["id"].as_str().expect("id").parse().expect("uuid");

    let promoter = app.login(&target_email, PASSWORD).await;
    assert_eq!(
        app.get_authed("/api/v1/me", &promoter.access_token)
            .await
            .status(),
        200
    );
    assert_eq!(patch_role(&app, &admin, target, "user").await.status(), 200);
    // The promoter's session ended: the access token is refused now, not in 15
    // minutes, and the refresh token too.
    problem(
        app.get_authed("/api/v1/me", &promoter.access_token).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(app.refresh(&promoter.refresh_token).await.status(), 401);
    // Changed back: the old token still never works again.
    assert_eq!(
        patch_role(&app, &admin, target, "promoter").await.status(),
        200
    );
    problem(
        app.get_authed("/api/v1/me", &promoter.access_token).await,
        401,
        "unauthenticated",
    )
    .await;
    // A new sign-in carries the current role.
    let again = app.login(&target_email, PASSWORD).await;
    let me: serde_json::Value = app
        .get_authed("/api/v1/me", &again.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["role"], "promoter");

    // The last admin cannot demote themselves.
    problem(
        patch_role(&app, &admin, admin_id, "user").await,
        409,
        "conflict",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_totp_code_cannot_be_replayed_and_recovery_codes_work_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, session) = app.signed_in_user().await;
    let (secret, recovery) = app.enable_2fa(&session).await;

    // The code that enabled 2FA is spent.
    let token = mfa_token(&app, &email).await;
    problem(
        login_mfa(&app, &token, &totp_code(&secret, 0)).await,
        401,
        "invalid_credentials",
    )
    .await;
    let next = totp_code(&secret, 1);
    assert_eq!(login_mfa(&app, &token, &next).await.status(), 200);
    // The MFA token is single-use, and the code is spent for any other login too.
    problem(
        login_mfa(&app, &token, &totp_code(&secret, 1)).await,
        401,
        "unauthenticated",
    )
    .await;
    let again = mfa_token(&app, &email).await;
    problem(
        login_mfa(&app, &again, &next).await,
        401,
        "invalid_credentials",
    )
    .await;

    // A recovery code (any case, with or without the dash) works exactly once.
    let code = recovery[0].to_uppercase();
    assert_eq!(login_mfa(&app, &again, &code).await.status(), 200);
    let third = mfa_token(&app, &email).await;
    problem(
        login_mfa(&app, &third, &code).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        login_mfa(&app, &third, &recovery[1].replace('-', ""))
            .await
            .status(),
        200
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_mfa_token_dies_after_five_wrong_codes(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, session) = app.signed_in_user().await;
    let (secret, _) = app.enable_2fa(&session).await;
    let token = mfa_token(&app, &email).await;
    for _ in 0..5 {
        problem(
            login_mfa(&app, &token, "000000").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    problem(
        login_mfa(&app, &token, &totp_code(&secret, 1)).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_factor_can_be_disabled_with_a_code(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, session) = app.signed_in_user().await;
    let (secret, _) = app.enable_2fa(&session).await;
    let disable = |code: String| {
        app.client
            .post(app.url("/api/v1/auth/2fa/disable"))
            .bearer_auth(&session.access_token)
            .json(&json!({"code": code}))
            .send()
    };
    problem(
        disable("123456".into()).await.expect("sent"),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        disable(totp_code(&secret, 1)).await.expect("sent").status(),
        204
    );
    // Password alone signs in again.
    assert!(!app.login(&email, PASSWORD).await.access_token.is_empty());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn second_factor_guesses_share_one_counter_per_account_across_routes(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        common::test_config(&[("SECOND_FACTOR_MAX_FAILURES", "4")]),
        None,
    )
    .await;
    let (email, session) = app.signed_in_user().await;
    let (secret, _) = app.enable_2fa(&session).await;
    // A code of none of the steps the server accepts now (previous, current, next).
    let wrong = || {
        let totp = shared::crypto::totp::Totp::from_base32(&secret).expect("secret");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let step = shared::crypto::totp::STEP_SECS;
        let accepted: Vec<String> = [now - step, now, now + step, now + 2 * step]
            .iter()
            .map(|t| totp.code_at(*t))
            .collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|code| !accepted.contains(code))
            .expect("a wrong code")
    };
    // Two wrong codes through one MFA token, one through a fresh one (a new password
    // login), one wrong current password: four failures on the same counter.
    let first = mfa_token(&app, &email).await;
    for _ in 0..2 {
        problem(
            login_mfa(&app, &first, &wrong()).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    let second = mfa_token(&app, &email).await;
    problem(
        login_mfa(&app, &second, &wrong()).await,
        401,
        "invalid_credentials",
    )
    .await;
    let password = app
        .client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&session.access_token)
        .json(&json!({"current_password": "not-the-password-at-all", "new_password": "a-brand-new-long-passphrase-77"}))
        .send()
        .await
        .expect("sent");
    problem(password, 401, "invalid_credentials").await;
    // Now even the right code is refused, on every route, with Retry-After.
    let third = mfa_token(&app, &email).await;
    let refused = login_mfa(&app, &third, &totp_code(&secret, 1)).await;
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, 429, "rate_limited").await;
    let disable = app
        .client
        .post(app.url("/api/v1/auth/2fa/disable"))
        .bearer_auth(&session.access_token)
        .json(&json!({"code": totp_code(&secret, 1)}))
        .send()
        .await
        .expect("sent");
    problem(disable, 429, "rate_limited").await;
}
