//! The console's requests pages over real HTTP (a module of `console.rs`, sharing its
//! `Browser`).

use super::*;

use shared::db::{jobs, requests as request_rows};
use uuid::Uuid;

/// A signed-in admin's browser.
async fn admin_browser(app: &TestApp) -> Browser {
    let (email, secret) = enrolled(app, Role::Admin).await;
    let mut browser = Browser::new(app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);
    browser
}

/// An email sent through the API by a new user: the request's id and its owner's.
async fn email_request(app: &TestApp) -> (Uuid, Uuid) {
    let (_, session) = app.register_user().await;
    let accepted = app
        .send_email(&session.access_token, "ada@example.org", "Hello")
        .await;
    let id: Uuid = accepted["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the request's id");
    let owner: Uuid = sqlx::query_scalar("SELECT owner_id FROM requests WHERE id = $1")
        .bind(id)
        .fetch_one(&app.state.pool)
        .await
        .expect("its owner");
    (id, owner)
}

async fn job_of(pool: &PgPool, request: Uuid) -> Uuid {
    sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1")
        .bind(request)
        .fetch_one(pool)
        .await
        .expect("its job")
}

/// The request's jobs claimed and succeeded, and the request finished, through the
/// worker's own transitions.
async fn complete(app: &TestApp, request: Uuid) {
    let pool = &app.state.pool;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1")
        .bind(request)
        .fetch_all(pool)
        .await
        .expect("its jobs");
    let claimed = jobs::claim(pool, &ids, "console-test", time::OffsetDateTime::now_utc())
        .await
        .expect("claimed");
    assert_eq!(claimed.len(), ids.len());
    let mut tx = pool.begin().await.expect("begin");
    jobs::succeed(&mut tx, &ids).await.expect("succeeded");
    let finished = request_rows::finish(&mut tx, &app.state.config.queues, &[request])
        .await
        .expect("finished");
    tx.commit().await.expect("commit");
    assert_eq!(finished.requests.len(), 1);
}

/// A console stream's events, read as they come.
struct Events<S> {
    body: S,
    buffer: String,
}

impl<S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin> Events<S> {
    /// The data of the next `replace` event (its `data:` lines joined), or a failure
    /// after 15 s.
    async fn next_replace(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut name = "";
                let mut data = Vec::new();
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value;
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push(value);
                    } else if line == "data:" {
                        data.push("");
                    }
                }
                if name == "replace" {
                    return data.join("\n");
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no replace event within 15 s: {}", self.buffer))
                .expect("the stream stays open")
                .expect("bytes");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn live(
    browser: &Browser,
    path: &str,
) -> Events<impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<>> {
    let response = browser
        .client
        .get(format!("{}{path}", browser.base))
        .header("cookie", browser.cookie_header())
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    Events {
        body: response.bytes_stream(),
        buffer: String::new(),
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_admin_lists_every_accounts_requests_newest_first_and_filters_them(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (email, owner) = email_request(&app).await;
    let (canary_owner, _) = app.create_account(Role::User).await;
    let mut canaries = Vec::new();
    for _ in 0..51 {
        canaries.push(app.submit_canaries(canary_owner, 1).await);
    }
    let mut browser = admin_browser(&app).await;

    // Newest first, fifty to a page: the oldest canary is on the second page.
    let first = html(browser.get("/console/requests?kind=canary").await, 200).await;
    assert!(first.contains(r#"<a href="/console/requests" aria-current="page">"#));
    let newest = canaries[50];
    assert!(
        first.contains(&format!(r#"href="/console/requests/{newest}""#)),
        "{first}"
    );
    assert_eq!(first.matches("data-request=").count(), 50);
    assert!(!first.contains(&format!(r#"data-request="{}""#, canaries[0])));
    assert!(!first.contains(&format!(r#"data-request="{email}""#)));
    assert!(first.contains(&format!(r#"href="/console/requests?owner={canary_owner}""#)));
    let next = first
        .split(r#"rel="next""#)
        .next()
        .and_then(|before| before.rsplit(r#"href=""#).next())
        .and_then(|link| link.split('"').next())
        .expect("a link to older requests")
        .replace("&amp;", "&");
    assert!(
        next.contains("kind=canary"),
        "the filters carry over: {next}"
    );
    let second = html(browser.get(&next).await, 200).await;
    assert!(
        second.contains(&format!(r#"data-request="{}""#, canaries[0])),
        "{second}"
    );
    assert_eq!(second.matches("data-request=").count(), 1, "{second}");
    assert!(!second.contains(r#"rel="next""#));
    let everyone = html(browser.get("/console/requests").await, 200).await;
    assert!(everyone.contains(&format!(r#"data-request="{newest}""#)));

    // Each filter, and all of them together.
    let emails = html(browser.get("/console/requests?kind=email").await, 200).await;
    assert!(emails.contains(&format!(r#"data-request="{email}""#)));
    assert!(!emails.contains(&format!(r#"data-request="{newest}""#)));
    assert!(
        emails.contains(r#"<option value="email" selected>"#),
        "{emails}"
    );
    let theirs = html(
        browser
            .get(&format!("/console/requests?owner={owner}"))
            .await,
        200,
    )
    .await;
    assert!(theirs.contains(&format!(r#"data-request="{email}""#)));
    assert!(!theirs.contains(&format!(r#"data-request="{newest}""#)));
    let queued = html(
        browser
            .get(&format!(
                "/console/requests?kind=email&status=queued&owner={owner}"
            ))
            .await,
        200,
    )
    .await;
    assert!(queued.contains(&format!(r#"data-request="{email}""#)));
    complete(&app, email).await;
    let queued = html(
        browser
            .get("/console/requests?kind=email&status=queued")
            .await,
        200,
    )
    .await;
    assert!(queued.contains("No request matches."), "{queued}");
    let succeeded = html(browser.get("/console/requests?status=succeeded").await, 200).await;
    assert!(succeeded.contains(&format!(r#"data-request="{email}""#)));
    assert!(succeeded.contains(r#"class="status succeeded""#));

    // Careless input: a clear page, never a 500.
    let page = html(browser.get("/console/requests?kind=fax").await, 422).await;
    assert!(page.contains("no request kind named fax"), "{page}");
    let page = html(browser.get("/console/requests?status=done").await, 422).await;
    assert!(page.contains("no request state named done"), "{page}");
    let page = html(browser.get("/console/requests?owner=me").await, 422).await;
    assert!(page.contains("me is not a user id"), "{page}");
    html(browser.get("/console/requests?cursor=%%%").await, 422).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_requests_page_shows_its_job_counts_events_and_webhook_and_keeps_them_live(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (request, owner) = email_request(&app).await;
    let job = job_of(&pool, request).await;
    // Its completion webhook goes to a URL whose path and query hold a secret.
    sqlx::query("UPDATE requests SET callback_url = $2 WHERE id = $1")
        .bind(request)
        .bind("https://hooks.example.com/T0/B0/s3cret-path?token=s3cret-query")
        .execute(&pool)
        .await
        .expect("callback set");
    let mut browser = admin_browser(&app).await;

    let page = html(
        browser.get(&format!("/console/requests/{request}")).await,
        200,
    )
    .await;
    assert!(page.contains(&format!(r#"data-live="/console/live/requests/{request}""#)));
    assert!(page.contains(r#"id="request-status">queued<"#), "{page}");
    assert!(page.contains("1 in all: 0 succeeded, 0 failed"), "{page}");
    assert!(page.contains(&format!(r#"href="/console/jobs/{job}""#)));
    assert!(page.contains(&format!(r#"href="/console/requests?owner={owner}""#)));
    assert!(page.contains(&format!(r#"href="/console/jobs?request={request}""#)));
    assert!(page.contains("event: progress\ndata: {"), "{page}");
    assert!(page.contains("to hooks.example.com"));
    assert!(page.contains("None yet: one is made when the request finishes."));
    assert!(page.contains("none (tracing was off)"), "{page}");
    assert!(
        !page.contains("s3cret"),
        "never the callback URL past its host: {page}"
    );
    assert!(
        !page.contains("ada@example.org"),
        "never the recipient: {page}"
    );
    assert!(!page.contains("style="), "no inline style: {page}");

    // The job's page leads back to its request.
    let job_page = html(browser.get(&format!("/console/jobs/{job}")).await, 200).await;
    assert!(
        job_page.contains(&format!(r#"href="/console/requests/{request}""#)),
        "{job_page}"
    );

    // Live: the region at once, then again once the request has finished.
    let mut events = live(&browser, &format!("/console/live/requests/{request}")).await;
    let first = events.next_replace().await;
    assert!(first.contains(r#"id="request-status">queued<"#), "{first}");
    assert_eq!(first.matches("<li data-version=").count(), 1, "{first}");
    complete(&app, request).await;
    let done = loop {
        let region = events.next_replace().await;
        if region.contains(r#"id="request-status">succeeded<"#) {
            break region;
        }
    };
    assert!(done.contains("1 in all: 1 succeeded, 0 failed"), "{done}");
    assert!(
        done.contains("&quot;status&quot;:&quot;succeeded&quot;"),
        "{done}"
    );
    assert!(done.contains("&quot;finished&quot;:true"), "{done}");
    assert!(
        done.matches("<li data-version=").count() >= 2,
        "the first state and the last, newest last: {done}"
    );
    let first_event = done
        .find("&quot;status&quot;:&quot;queued&quot;")
        .expect("the first event");
    let last_event = done
        .find("&quot;status&quot;:&quot;succeeded&quot;")
        .expect("the last event");
    assert!(first_event < last_event, "newest last: {done}");
    // Its completion webhook was made with the finish: host only.
    assert!(done.contains("<td>hooks.example.com</td>"), "{done}");
    assert!(!done.contains("s3cret"), "{done}");
    let delivery: Uuid =
        sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE request_id = $1")
            .bind(request)
            .fetch_one(&pool)
            .await
            .expect("a delivery");
    assert!(done.contains(&format!(r#"href="/console/jobs/{delivery}""#)));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_malformed_or_unknown_request_id_is_the_not_found_page(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut browser = admin_browser(&app).await;
    let unknown = Uuid::now_v7();
    for path in [
        "/console/requests/not-a-uuid".to_owned(),
        format!("/console/requests/{unknown}"),
        "/console/live/requests/not-a-uuid".to_owned(),
        format!("/console/live/requests/{unknown}"),
    ] {
        let page = html(browser.get(&path).await, 404).await;
        assert!(page.contains("There is nothing at this address."), "{path}");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_requests_pages_are_for_signed_in_admins_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (request, _) = email_request(&app).await;
    let mut browser = Browser::new(&app);
    for path in [
        "/console/requests".to_owned(),
        format!("/console/requests/{request}"),
        format!("/console/live/requests/{request}"),
    ] {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(location(&response), "/console/login");
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_a_trace_url_a_request_links_the_trace_of_its_first_job(pool: PgPool) {
    let config = test_config(&[(
        "CONSOLE_TRACE_URL",
        "http://127.0.0.1:16686/trace/{trace_id}",
    )]);
    let app = spawn_app_with(pool.clone(), config, None).await;
    let (request, _) = email_request(&app).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    sqlx::query("UPDATE jobs SET trace_context = $2 WHERE request_id = $1")
        .bind(request)
        .bind(format!("00-{trace}-00f067aa0ba902b7-01"))
        .execute(&pool)
        .await
        .expect("traceparent stored");
    let mut browser = admin_browser(&app).await;
    let page = html(
        browser.get(&format!("/console/requests/{request}")).await,
        200,
    )
    .await;
    assert!(
        page.contains(&format!(
            r#"<a href="http://127.0.0.1:16686/trace/{trace}" rel="noreferrer"><code>{trace}</code></a>"#
        )),
        "{page}"
    );

    // A trace the sampler left out is named, not linked: nothing of it was recorded.
    let (unsampled, _) = email_request(&app).await;
    sqlx::query("UPDATE jobs SET trace_context = $2 WHERE request_id = $1")
        .bind(unsampled)
        .bind(format!("00-{trace}-00f067aa0ba902b7-00"))
        .execute(&pool)
        .await
        .expect("traceparent stored");
    let page = html(
        browser.get(&format!("/console/requests/{unsampled}")).await,
        200,
    )
    .await;
    assert!(
        page.contains(&format!("<code>{trace}</code> (not sampled")),
        "{page}"
    );
    assert!(!page.contains("16686"), "{page}");
}
