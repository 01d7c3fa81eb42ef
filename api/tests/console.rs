//! The operators' console over real HTTP: sign-in with the password and the second
//! factor, the cookies it sets, the live overview, renewal through the refresh token,
//! sign-out, refusals (a user, an admin without 2FA, a form from another site) and
//! the switch. What a browser does with the pages is in `scripts/console-browser`.

mod common;
#[path = "console/operators.rs"]
mod operators;
#[path = "console/requests.rs"]
mod requests;
#[path = "console/uploads.rs"]
mod uploads;

use std::collections::HashMap;
use std::time::Duration;

use common::{PASSWORD, Session, TestApp, spawn_app, spawn_app_with, test_config, totp_code};
use futures::StreamExt as _;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use shared::domain::Role;
use sqlx::PgPool;

/// A browser's view of the console: its own cookies, no redirect followed.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Browser {
            client,
            base: app.address.clone(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps what `Set-Cookie` says (a `Max-Age=0` removes), and checks every console
    /// cookie's attributes.
    fn take_cookies(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let text = value.to_str().expect("ascii cookie");
            for attribute in ["Path=/", "HttpOnly", "Secure", "SameSite=Strict"] {
                assert!(text.contains(attribute), "{attribute} in {text}");
            }
            let (pair, _) = text.split_once(';').expect("attributes");
            let (name, value) = pair.split_once('=').expect("name=value");
            assert!(name.starts_with("__Host-conveyor_console"), "{name}");
            if text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("sent");
        self.take_cookies(response.headers());
        response
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded(form))
            .send()
            .await
            .expect("sent");
        self.take_cookies(response.headers());
        response
    }

    /// The password step, then the code: the response of the code step.
    async fn sign_in(&mut self, email: &str, secret: &str) -> reqwest::Response {
        let password = self
            .post(
                "/console/login",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(password.status(), 200);
        let page = password.text().await.expect("html");
        assert!(page.contains(r#"action="/console/login/code""#), "{page}");
        let code = totp_code(secret, 1);
        self.post("/console/login/code", &[("code", code.as_str())])
            .await
    }
}

/// A form's body, as a browser encodes it.
fn encoded(form: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

fn location(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// An account of `role` with 2FA enrolled: its id, email and TOTP secret.
async fn enrolled_account(app: &TestApp, role: Role) -> (uuid::Uuid, String, String) {
    let (id, email) = app.create_account(role).await;
    let session: Session = app.login(&email, PASSWORD).await;
    let (secret, _) = app.enable_2fa(&session).await;
    (id, email, secret)
}

/// An account of `role` with 2FA enrolled: its email and TOTP secret.
async fn enrolled(app: &TestApp, role: Role) -> (String, String) {
    let (_, email, secret) = enrolled_account(app, role).await;
    (email, secret)
}

async fn html(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(
        response.headers()["content-security-policy"],
        api::console::CSP,
        "every console page runs under the strict CSP"
    );
    response.text().await.expect("html")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_signs_in_with_the_second_factor_sees_the_queues_live_and_signs_out(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);

    let first = browser.get("/console").await;
    assert_eq!(first.status(), 303);
    assert_eq!(location(&first), "/console/login");
    let login = html(browser.get("/console/login").await, 200).await;
    assert!(login.contains(r#"<script src="/console/assets/console.js" defer>"#));
    assert!(!login.contains("<script>"), "no inline script: {login}");
    assert!(!login.contains("style="), "no inline style: {login}");

    let signed_in = browser.sign_in(&email, &secret).await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(location(&signed_in), "/console");
    assert!(browser.cookies.contains_key("__Host-conveyor_console"));
    assert!(
        browser
            .cookies
            .contains_key("__Host-conveyor_console_refresh")
    );
    assert!(!browser.cookies.contains_key("__Host-conveyor_console_mfa"));

    let overview = html(browser.get("/console").await, 200).await;
    for queue in shared::queue::QueueName::ALL {
        assert!(
            overview.contains(&format!(r#"data-queue="{}""#, queue.as_str())),
            "{queue:?} in {overview}"
        );
    }
    assert!(overview.contains(r#"data-live="/console/live/overview""#));

    // The live region's stream sends the table at once.
    let stream = browser
        .client
        .get(format!("{}/console/live/overview", browser.base))
        .header("cookie", browser.cookie_header())
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sent");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays open")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: replace\n"), "{text}");
    assert!(text.contains(r#"data-queue="emails""#), "{text}");
    drop(body);

    // The assets are embedded and revalidated.
    let script = browser.get("/console/assets/console.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/javascript")
    );
    let etag = script.headers()["etag"].clone();
    let again = browser
        .client
        .get(format!("{}/console/assets/console.js", browser.base))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 304);

    // Signing out ends the session: the old cookies open nothing.
    let kept = browser.cookies.clone();
    let out = browser.post("/console/logout", &[]).await;
    assert_eq!(out.status(), 303);
    assert_eq!(location(&out), "/console/login");
    assert!(browser.cookies.is_empty(), "{:?}", browser.cookies);
    browser.cookies = kept;
    let after = browser.get("/console").await;
    assert_eq!(after.status(), 303);
    assert_eq!(location(&after), "/console/login");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_expired_access_cookie_is_renewed_through_the_refresh_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);
    let old_refresh = browser.cookies["__Host-conveyor_console_refresh"].clone();
    // As when the access cookie's Max-Age ran out.
    browser.cookies.remove("__Host-conveyor_console");
    html(browser.get("/console").await, 200).await;
    assert!(browser.cookies.contains_key("__Host-conveyor_console"));
    let new_refresh = browser.cookies["__Host-conveyor_console_refresh"].clone();
    assert_ne!(new_refresh, old_refresh, "the refresh token rotated");
    // The spent refresh token opens nothing (and, reused, ends the session).
    let mut thief = Browser::new(&app);
    thief
        .cookies
        .insert("__Host-conveyor_console_refresh".into(), old_refresh);
    let stolen = thief.get("/console").await;
    assert_eq!(stolen.status(), 303);
    assert_eq!(location(&stolen), "/console/login");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_user_and_an_admin_without_a_second_factor_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;

    let (email, secret) = enrolled(&app, Role::User).await;
    let mut browser = Browser::new(&app);
    let refused = browser.sign_in(&email, &secret).await;
    let page = html(refused, 403).await;
    assert!(page.contains("The console is for admins"), "{page}");
    assert!(
        browser.cookies.is_empty(),
        "no session: {:?}",
        browser.cookies
    );

    let (_, admin) = app.create_account(Role::Admin).await;
    let mut browser = Browser::new(&app);
    let response = browser
        .post(
            "/console/login",
            &[("email", &admin), ("password", PASSWORD)],
        )
        .await;
    let page = html(response, 403).await;
    assert!(page.contains("two-factor authentication"), "{page}");
    assert!(browser.cookies.is_empty());

    // A wrong password: the same page, said plainly.
    let wrong = browser
        .post(
            "/console/login",
            &[("email", &admin), ("password", "not it")],
        )
        .await;
    let page = html(wrong, 401).await;
    assert!(page.contains(r#"role="alert""#), "{page}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_form_posted_from_another_site_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (email, _) = enrolled(&app, Role::Admin).await;
    let client = reqwest::Client::new();
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://attacker.example"),
    ] {
        let response = client
            .post(app.url("/console/login"))
            .header(header, value)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encoded(&[
                ("email", email.as_str()),
                ("password", PASSWORD),
            ]))
            .send()
            .await
            .expect("sent");
        let page = html(response, 403).await;
        assert!(page.contains("console's own pages"), "{page}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_console_can_be_switched_off(pool: PgPool) {
    let app = spawn_app_with(pool, test_config(&[("CONSOLE_ENABLED", "false")]), None).await;
    let response = app.get("/console/login").await;
    common::problem(response, 404, "not_found").await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_queue_is_paused_and_resumed_from_the_console_through_the_audited_service(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);
    let overview = html(browser.get("/console").await, 200).await;
    assert!(
        overview.contains(r#"action="/console/queues/canary/pause""#),
        "{overview}"
    );

    let paused = browser.post("/console/queues/canary/pause", &[]).await;
    assert_eq!(paused.status(), 303);
    assert_eq!(location(&paused), "/console");
    let set = shared::queue::pause::paused(&app.state.redis)
        .await
        .expect("redis");
    assert!(set.contains(&shared::queue::QueueName::Canary));
    let overview = html(browser.get("/console").await, 200).await;
    assert!(
        overview.contains(r#"action="/console/queues/canary/resume""#),
        "{overview}"
    );
    assert!(overview.contains(r#"id="resume-canary""#));

    let resumed = browser.post("/console/queues/canary/resume", &[]).await;
    assert_eq!(resumed.status(), 303);
    let set = shared::queue::pause::paused(&app.state.redis)
        .await
        .expect("redis");
    assert!(!set.contains(&shared::queue::QueueName::Canary));

    // Both in the audit log, as the admin API would have written them.
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, target FROM audit_log WHERE actor LIKE 'admin:%' ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    let expected: Vec<(String, String)> = vec![
        ("pause".into(), "queue:canary".into()),
        ("resume".into(), "queue:canary".into()),
    ];
    assert_eq!(actions, expected);

    // Not a queue, and not from the console's pages.
    let unknown = browser.post("/console/queues/nope/pause", &[]).await;
    html(unknown, 404).await;
    let forged = reqwest::Client::new()
        .post(app.url("/console/queues/canary/pause"))
        .header("cookie", browser.cookie_header())
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("sent");
    html(forged, 403).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn dead_jobs_are_listed_shown_retried_and_discarded_through_the_audited_services(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let (admin_id, _) = app.create_account(Role::Admin).await;
    app.submit_canaries(admin_id, 2).await;
    let dead = app
        .bury_queued(
            shared::queue::QueueName::Canary,
            "550 5.1.1 refused <ada@example.org>",
        )
        .await;
    assert_eq!(dead.len(), 2);
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);

    // The overview links the dead count to the list of those jobs.
    let overview = html(browser.get("/console").await, 200).await;
    assert!(
        overview.contains(r#"href="/console/jobs?queue=canary&amp;status=dead""#),
        "{overview}"
    );
    let list = html(
        browser.get("/console/jobs?queue=canary&status=dead").await,
        200,
    )
    .await;
    for id in &dead {
        assert!(
            list.contains(&format!(r#"data-job="{id}""#)),
            "{id} in {list}"
        );
    }
    let none = html(browser.get("/console/jobs?queue=emails").await, 200).await;
    assert!(none.contains("No job matches."));

    // One job's page: its facts and both actions.
    let (first, second) = (dead[0], dead[1]);
    let page = html(browser.get(&format!("/console/jobs/{first}")).await, 200).await;
    assert!(page.contains("550 5.1.1 refused"), "{page}");
    assert!(page.contains(&format!(r#"action="/console/jobs/{first}/retry""#)));
    assert!(page.contains(&format!(r#"action="/console/jobs/{first}/discard""#)));
    assert!(page.contains(&format!(r#"data-live="/console/live/jobs/{first}""#)));

    let retried = browser
        .post(&format!("/console/jobs/{first}/retry"), &[])
        .await;
    assert_eq!(retried.status(), 303);
    assert_eq!(location(&retried), format!("/console/jobs/{first}"));
    let status: String = sqlx::query_scalar("SELECT status::text FROM jobs WHERE id = $1")
        .bind(first)
        .fetch_one(&pool)
        .await
        .expect("job");
    assert_eq!(status, "queued");
    let discarded = browser
        .post(&format!("/console/jobs/{second}/discard"), &[])
        .await;
    assert_eq!(discarded.status(), 303);
    let page = html(browser.get(&format!("/console/jobs/{second}")).await, 200).await;
    assert!(page.contains("Discarded"), "{page}");
    assert!(
        !page.contains(r#"id="retry""#),
        "a discarded job stays dead: {page}"
    );
    // A second retry of the requeued job is refused, plainly.
    let again = browser
        .post(&format!("/console/jobs/{first}/retry"), &[])
        .await;
    let page = html(again, 409).await;
    assert!(page.contains("only dead or cancelled jobs"), "{page}");

    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, target FROM audit_log WHERE actor LIKE 'admin:%' ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    assert_eq!(
        actions,
        vec![
            ("retry".to_owned(), format!("job:{first}")),
            ("discard".to_owned(), format!("job:{second}")),
        ]
    );

    // Careless input: a clear page, never a 500.
    let bad = browser.get("/console/jobs?status=exploded").await;
    let page = html(bad, 422).await;
    assert!(page.contains("no job state named exploded"), "{page}");
    html(browser.get("/console/jobs/not-a-uuid").await, 404).await;
    html(
        browser
            .get(&format!("/console/jobs/{}", uuid::Uuid::now_v7()))
            .await,
        404,
    )
    .await;
    html(browser.get("/console/jobs?cursor=%%%").await, 422).await;
}

/// Reads the stream until an event named `name` arrives (or fails after 15 s).
async fn until_event(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    name: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let wanted = format!("event: {name}\n");
    let mut text = String::new();
    while !text.contains(&wanted) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("no {name} event within 15 s: {text}"))
            .expect("the stream stays open until then")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_live_stream_stops_when_its_session_ends_or_its_account_is_no_longer_an_admin(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    for demote in [false, true] {
        let (id, email, secret) = enrolled_account(&app, Role::Admin).await;
        let mut browser = Browser::new(&app);
        assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);
        let stream = browser
            .client
            .get(format!("{}/console/live/overview", browser.base))
            .header("cookie", browser.cookie_header())
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("sent");
        assert_eq!(stream.status(), 200);
        let mut body = stream.bytes_stream();
        until_event(&mut body, "replace").await;
        if demote {
            sqlx::query("UPDATE users SET role = 'user' WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await
                .expect("demoted");
        } else {
            assert_eq!(browser.post("/console/logout", &[]).await.status(), 303);
        }
        until_event(&mut body, "signed-out").await;
    }
}
