//! What bounds sign-in under load and attack: the password-hashing gate, the atomic
//! login throttle under a burst, and a per-account limit that an attacker cannot turn
//! against the owner. Real PostgreSQL and Redis, through the api's router.

mod common;

use common::{PASSWORD, TestApp, problem, spawn_app_with, test_config, unique_email};
use sqlx::PgPool;

/// Every test here sends bursts from one address: the general auth budget must not be
/// what answers.
const AUTH_BUDGET: (&str, &str) = ("RATE_LIMIT_AUTH", "10000/60");

/// A login as if from `ip` (with `TRUST_FORWARDED_FOR=true`).
async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request sent")
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Statuses of `responses`, each 429 checked for a problem body and a `Retry-After`.
async fn statuses_checking_refusals(responses: Vec<reqwest::Response>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        if status == 429 {
            let wait = retry_after(&response).expect("a 429 carries Retry-After");
            assert!(wait >= 1, "Retry-After {wait}");
            problem(response, 429, "rate_limited").await;
        }
        statuses.push(status);
    }
    statuses
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn logins_beyond_the_hashing_capacity_are_refused_with_retry_after(pool: PgPool) {
    let config = test_config(&[
        AUTH_BUDGET,
        ("PASSWORD_HASH_CONCURRENCY", "1"),
        ("PASSWORD_HASH_WAIT_MS", "1"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    // Unknown emails, each its own account: only the hashing gate can refuse them.
    let emails: Vec<String> = (0..40).map(|_| unique_email()).collect();
    let attempts = emails
        .iter()
        .map(|email| app.login_response(email, PASSWORD));
    let responses = futures::future::join_all(attempts).await;
    let statuses = statuses_checking_refusals(responses).await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "nothing was refused: {statuses:?}");
    assert!(statuses.contains(&401), "nothing was hashed: {statuses:?}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn hashing_one_at_a_time_still_serves_every_patient_caller(pool: PgPool) {
    let config = test_config(&[
        AUTH_BUDGET,
        ("PASSWORD_HASH_CONCURRENCY", "1"),
        ("PASSWORD_HASH_WAIT_MS", "20000"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let emails: Vec<String> = (0..4).map(|_| unique_email()).collect();
    let registrations = emails.iter().map(|email| app.register(email, PASSWORD));
    for response in futures::future::join_all(registrations).await {
        assert_eq!(response.status(), 202);
    }
    let logins = emails
        .iter()
        .map(|email| app.login_response(email, PASSWORD));
    for response in futures::future::join_all(logins).await {
        assert_eq!(response.status(), 200);
    }
    problem(
        app.login_response(&emails[0], "not-the-password-at-all")
            .await,
        401,
        "invalid_credentials",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_burst_of_wrong_passwords_gets_no_more_verifications_than_the_limit(pool: PgPool) {
    let config = test_config(&[
        AUTH_BUDGET,
        ("LOGIN_MAX_FAILURES_ACCOUNT_IP", "5"),
        ("LOGIN_WINDOW_SECS", "60"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let email = unique_email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    let attempts = (0..30).map(|i| {
        app.login_response(
            &email,
            if i % 2 == 0 {
                "wrong-guess-one-1"
            } else {
                "wrong-guess-two-2"
            },
        )
    });
    let responses = futures::future::join_all(attempts).await;
    let statuses = statuses_checking_refusals(responses).await;
    let refused_as_wrong = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        refused_as_wrong <= 5,
        "{refused_as_wrong} guesses verified: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // The window is spent: even the right password waits.
    problem(
        app.login_response(&email, PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_correct_password_gives_its_attempt_back(pool: PgPool) {
    let config = test_config(&[
        AUTH_BUDGET,
        ("LOGIN_MAX_FAILURES_ACCOUNT_IP", "2"),
        ("LOGIN_WINDOW_SECS", "60"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let email = unique_email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    // Far more successful sign-ins than the limit: none of them is spent as a failure.
    for _ in 0..5 {
        assert_eq!(app.login_response(&email, PASSWORD).await.status(), 200);
    }
    for _ in 0..2 {
        problem(
            app.login_response(&email, "wrong-password-guess").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    problem(
        app.login_response(&email, PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
}

/// The owner signs in from `OWNER_IP`; then five wrong passwords come from each of
/// four other addresses, filling the per-account limit (20).
const OWNER_IP: &str = "198.51.100.5";
const ATTACKER_IPS: [&str; 4] = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"];

async fn account_under_distributed_attack(pool: PgPool) -> (TestApp, String) {
    let config = test_config(&[
        AUTH_BUDGET,
        ("TRUST_FORWARDED_FOR", "true"),
        ("LOGIN_MAX_FAILURES_ACCOUNT_IP", "5"),
        ("LOGIN_MAX_FAILURES_ACCOUNT", "20"),
        ("LOGIN_WINDOW_SECS", "300"),
    ]);
    let app = spawn_app_with(pool, config, None).await;
    let email = unique_email();
    assert_eq!(app.register(&email, PASSWORD).await.status(), 202);
    assert_eq!(
        login_from(&app, OWNER_IP, &email, PASSWORD).await.status(),
        200
    );
    for ip in ATTACKER_IPS {
        for _ in 0..5 {
            problem(
                login_from(&app, ip, &email, "wrong-password-guess").await,
                401,
                "invalid_credentials",
            )
            .await;
        }
    }
    (app, email)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn guesses_from_elsewhere_do_not_lock_the_owner_out_of_a_known_address(pool: PgPool) {
    let (app, email) = account_under_distributed_attack(pool).await;
    assert_eq!(
        login_from(&app, OWNER_IP, &email, PASSWORD).await.status(),
        200
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_new_address_cannot_guess_past_the_account_limit(pool: PgPool) {
    let (app, email) = account_under_distributed_attack(pool).await;
    let fresh = "203.0.113.99";
    // Refused before any verification: even the right password tells it nothing.
    for password in ["wrong-password-guess", PASSWORD] {
        let refused = login_from(&app, fresh, &email, password).await;
        let wait = retry_after(&refused).expect("Retry-After");
        assert!((1..=300).contains(&wait), "{wait}");
        problem(refused, 429, "rate_limited").await;
    }
    // Each attacking address is at its own limit too.
    problem(
        login_from(&app, ATTACKER_IPS[0], &email, PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_known_address_still_has_its_own_strict_limit(pool: PgPool) {
    let (app, email) = account_under_distributed_attack(pool).await;
    for _ in 0..5 {
        problem(
            login_from(&app, OWNER_IP, &email, "wrong-password-guess").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    problem(
        login_from(&app, OWNER_IP, &email, PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
}
