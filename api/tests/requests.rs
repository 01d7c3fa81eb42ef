//! Submitting emails and campaigns and following requests, through the api alone
//! (no worker runs here, so jobs stay queued): validation, Idempotency-Key,
//! keyset pagination, ownership, cancel and the SSE stream.

mod common;

use common::{TestApp, problem, spawn_app, spawn_app_with, test_config};
use serde_json::{Value, json};
use shared::domain::Role;
use sqlx::PgPool;

async fn post_email(
    app: &TestApp,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/emails"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("sent")
}

fn email(n: usize) -> Value {
    json!({"to": [format!("r{n}@example.org")], "subject": format!("S{n}"), "text": "hello"})
}

async fn count_requests(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM requests")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_email_is_accepted_with_location_and_stored_sealed(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let response = post_email(&app, &session.access_token, &email(1), None).await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!("/api/v1/requests/{}", body["id"].as_str().expect("id"))
    );
    assert_eq!(body["status"], "queued");
    assert_eq!(body["total"], 1);
    let payload: String = sqlx::query_scalar("SELECT payload::text FROM jobs")
        .fetch_one(&pool)
        .await
        .expect("job");
    assert!(
        !payload.contains("r1@example.org"),
        "recipients are sealed: {payload}"
    );
    let detail: Value = app
        .get_authed(&location, &session.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(detail["jobs"]["queued"], 1);
    assert_eq!(detail["pending"], 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn header_injection_and_bad_recipients_are_422(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let many: Vec<String> = (0..51).map(|i| format!("x{i}@example.org")).collect();
    let cases = [
        (
            json!({"to": ["a@example.org"], "subject": "Hi\r\nBcc: all@example.org", "text": "x"}),
            "subject",
        ),
        (
            json!({"to": ["a@example.org\r\nBcc: all@example.org"], "subject": "Hi", "text": "x"}),
            "to[0]",
        ),
        (
            json!({"to": ["Eve\nBcc: x@example.org <a@example.org>"], "subject": "Hi", "text": "x"}),
            "to[0]",
        ),
        (
            json!({"to": ["a@example.org"], "cc": ["nope"], "subject": "Hi", "text": "x"}),
            "cc[0]",
        ),
        (json!({"to": [], "subject": "Hi", "text": "x"}), "to"),
        (json!({"to": many, "subject": "Hi", "text": "x"}), "to"),
        (
            json!({"to": ["a@example.org"], "subject": "", "text": "x"}),
            "subject",
        ),
        (
            json!({"to": ["a@example.org"], "subject": "Hi", "text": "x", "priority": "high"}),
            "priority",
        ),
    ];
    for (body, field) in cases {
        let problem = problem(
            post_email(&app, &session.access_token, &body, None).await,
            422,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{field} not in {problem}");
    }
    assert_eq!(count_requests(&pool).await, 0, "nothing accepted");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idempotency_key_replays_refuses_a_different_body_and_survives_a_race(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.as_str();
    let first: Value = post_email(&app, token, &email(1), Some("key-1"))
        .await
        .json()
        .await
        .expect("json");
    let again = post_email(&app, token, &email(1), Some("key-1")).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"], "the original response");
    problem(
        post_email(&app, token, &email(2), Some("key-1")).await,
        422,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(count_requests(&pool).await, 1);

    // Ten concurrent submissions with one new key create one request.
    let race_body = email(3);
    let racers = (0..10).map(|_| post_email(&app, token, &race_body, Some("key-race")));
    let responses = futures::future::join_all(racers).await;
    let mut ids = std::collections::BTreeSet::new();
    for response in responses {
        let status = response.status().as_u16();
        assert!(status == 202 || status == 409, "{status}");
        if status == 202 {
            let body: Value = response.json().await.expect("json");
            ids.insert(body["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(count_requests(&pool).await, 2);
    // Keys are per user: another user may use the same key.
    let (_, other) = app.signed_in_user().await;
    let theirs: Value = post_email(&app, &other.access_token, &email(1), Some("key-1"))
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(theirs["id"], first["id"]);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn pages_have_no_duplicates_or_gaps_while_new_requests_arrive(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.as_str();
    let mut original = Vec::new();
    for n in 0..25 {
        let body: Value = post_email(&app, token, &email(n), None)
            .await
            .json()
            .await
            .expect("json");
        original.push(body["id"].as_str().expect("id").to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/requests?limit=7&cursor={c}"),
            None => "/api/v1/requests?limit=7".to_owned(),
        };
        let page: Value = app
            .get_authed(&path, token)
            .await
            .json()
            .await
            .expect("json");
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_owned()),
        );
        // New requests arrive between pages.
        post_email(&app, token, &email(100), None).await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    original.reverse(); // newest first
    assert_eq!(
        seen, original,
        "every original request exactly once, in order"
    );
    problem(
        app.get_authed("/api/v1/requests?limit=101", token).await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        app.get_authed("/api/v1/requests?cursor=garbage", token)
            .await,
        400,
        "validation_failed",
    )
    .await;
    problem(
        app.get_authed("/api/v1/requests?status=nope", token).await,
        400,
        "validation_failed",
    )
    .await;
    let filtered: Value = app
        .get_authed("/api/v1/requests?status=queued&kind=email&limit=100", token)
        .await
        .json()
        .await
        .expect("json");
    assert!(filtered["items"].as_array().expect("items").len() >= 25);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_user_cannot_see_another_users_request(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, alice) = app.signed_in_user().await;
    let (_, bob) = app.signed_in_user().await;
    let body: Value = post_email(&app, &alice.access_token, &email(1), None)
        .await
        .json()
        .await
        .expect("json");
    let path = format!("/api/v1/requests/{}", body["id"].as_str().expect("id"));
    problem(
        app.get_authed(&path, &bob.access_token).await,
        404,
        "not_found",
    )
    .await;
    let cancel = app
        .client
        .post(app.url(&format!("{path}/cancel")))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .expect("sent");
    problem(cancel, 404, "not_found").await;
    problem(
        app.get_authed(&format!("{path}/events"), &bob.access_token)
            .await,
        404,
        "not_found",
    )
    .await;
    let list: Value = app
        .get_authed("/api/v1/requests", &bob.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert!(list["items"].as_array().expect("items").is_empty());
    assert_eq!(
        app.get_authed(&path, &alice.access_token).await.status(),
        200
    );
}

/// Opens `GET {path}/events` and reads it to its end in the background; the 200 comes
/// after the stream subscribed, so no change from here on can be missed.
async fn open_stream(app: &TestApp, token: &str, path: &str) -> tokio::task::JoinHandle<String> {
    let events = app
        .client
        .get(app.url(&format!("{path}/events")))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    tokio::spawn(async move { events.text().await.expect("stream ends") })
}

/// The stream's text once it ended (within 10 s), and its `progress` events' data.
async fn ended_stream(reader: tokio::task::JoinHandle<String>) -> (String, Vec<Value>) {
    let text = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
        .await
        .expect("the stream ends")
        .expect("joined");
    let events = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("json event"))
        .collect();
    (text, events)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn cancel_ends_pending_jobs_and_the_event_stream_reports_it(pool: PgPool) {
    let app = spawn_app(pool).await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.clone();
    let body: Value = post_email(&app, &token, &email(1), None)
        .await
        .json()
        .await
        .expect("json");
    let path = format!("/api/v1/requests/{}", body["id"].as_str().expect("id"));

    let reader = open_stream(&app, &token, &path).await;

    let cancelled = app
        .client
        .post(app.url(&format!("{path}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(cancelled.status(), 200);
    let view: Value = cancelled.json().await.expect("json");
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["cancelled"], 1);
    let again = app
        .client
        .post(app.url(&format!("{path}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    problem(again, 409, "conflict").await;

    let (text, events) = ended_stream(reader).await;
    assert!(text.contains("event: progress"), "{text}");
    assert_eq!(
        events.first().map(|e| e["status"].clone()),
        Some(json!("queued")),
        "{text}"
    );
    let last = events.last().expect("a final event");
    assert_eq!(last["status"], "cancelled");
    assert_eq!(last["finished"], true);
}

/// Events are published by several processes and may arrive out of order: a stream
/// never sends a state older than one it sent (each carries the request's version).
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_event_stream_never_goes_backwards(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.clone();
    let body: Value = post_email(&app, &token, &email(1), None)
        .await
        .json()
        .await
        .expect("json");
    let id: uuid::Uuid = body["id"].as_str().expect("id").parse().expect("uuid");
    let path = format!("/api/v1/requests/{id}");
    let reader = open_stream(&app, &token, &path).await;

    // A late event carrying the state as it was when the stream's snapshot was read
    // (or before), with progress that would look like news: never sent.
    let row = shared::db::requests::find(&pool, id, None)
        .await
        .expect("query")
        .expect("the request");
    let mut stale = row.clone();
    stale.total = 99;
    shared::events::publish(&app.state.redis, &[stale]).await;
    // A real change after it: sent, and the stream ends with it.
    let cancelled = app
        .client
        .post(app.url(&format!("{path}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(cancelled.status(), 200);
    let (text, sent) = ended_stream(reader).await;
    assert!(
        sent.iter().all(|event| event["total"] == 1),
        "a stale state was sent: {text}"
    );
    let versions: Vec<i64> = sent
        .iter()
        .map(|event| event["version"].as_i64().expect("version"))
        .collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "{versions:?}"
    );
    assert_eq!(
        sent.last().map(|e| e["status"].clone()),
        Some(json!("cancelled"))
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn campaigns_need_the_promoter_role_and_count_distinct_recipients(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let (_, user) = app.signed_in_user().await;
    let body = json!({"name": "Spring", "subject": "Hi", "text": "x", "recipients": ["a@example.org", "A@example.org", "b@example.org"]});
    let refused = app
        .client
        .post(app.url("/api/v1/campaigns"))
        .bearer_auth(&user.access_token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    problem(refused, 403, "forbidden").await;

    let (_, email) = app.create_account(Role::Promoter).await;
    let promoter = app.login(&email, common::PASSWORD).await;
    let accepted = app
        .client
        .post(app.url("/api/v1/campaigns"))
        .bearer_auth(&promoter.access_token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.expect("json");
    assert_eq!(accepted["total"], 2, "duplicates are sent once");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(jobs, 2);
    let bad = json!({"name": "Spring", "subject": "Hi", "text": "x", "recipients": ["ok@example.org", "broken"]});
    let refused = app
        .client
        .post(app.url("/api/v1/campaigns"))
        .bearer_auth(&promoter.access_token)
        .json(&bad)
        .send()
        .await
        .expect("sent");
    let problem = problem(refused, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "recipients[1]");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_redis_unreachable_a_post_is_still_accepted(pool: PgPool) {
    let redis = format!("redis://127.0.0.1:{}", common::closed_port());
    let app = spawn_app_with(pool.clone(), test_config(&[("REDIS_URL", &redis)]), None).await;
    let (_, session) = app.signed_in_user().await;
    assert_eq!(
        post_email(&app, &session.access_token, &email(1), None)
            .await
            .status(),
        202
    );
    let undispatched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE dispatched_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        undispatched, 1,
        "committed; the dispatcher pushes it when Redis is back"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn event_streams_are_capped_per_user_and_end_with_their_session(pool: PgPool) {
    let app = spawn_app_with(
        pool,
        test_config(&[("SSE_MAX_STREAMS_PER_USER", "2")]),
        None,
    )
    .await;
    let (_, session) = app.signed_in_user().await;
    let token = session.access_token.clone();
    let body: Value = post_email(&app, &token, &email(1), None)
        .await
        .json()
        .await
        .expect("json");
    let path = format!(
        "/api/v1/requests/{}/events",
        body["id"].as_str().expect("id")
    );
    let open = || app.client.get(app.url(&path)).bearer_auth(&token).send();
    let first = open().await.expect("sent");
    let second = open().await.expect("sent");
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(app.state.events.open_streams(), 2);
    // The third of the same user is refused; another user is not affected.
    let third = open().await.expect("sent");
    assert!(third.headers().contains_key("retry-after"));
    problem(third, 429, "rate_limited").await;
    // Closing one frees its place.
    drop(second);
    common::eventually(
        std::time::Duration::from_secs(5),
        "a freed slot",
        || async { (app.state.events.open_streams() == 1).then_some(()) },
    )
    .await;
    let again = open().await.expect("sent");
    assert_eq!(again.status(), 200);
    drop(again);

    // Signing out ends the streams of that session.
    let reader = tokio::spawn(async move { first.text().await });
    let logout = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .header("x-requested-with", "test")
        .header(
            "cookie",
            format!(
                "{}={}",
                api::routes::auth::REFRESH_COOKIE,
                session.refresh_token
            ),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    let ended = tokio::time::timeout(api::services::requests::SESSION_CHECK * 3, reader)
        .await
        .expect("the stream ends after logout")
        .expect("joined")
        .expect("a clean end");
    assert!(ended.contains("event: progress"), "{ended}");
    common::eventually(
        std::time::Duration::from_secs(5),
        "no stream left",
        || async { (app.state.events.open_streams() == 0).then_some(()) },
    )
    .await;
}

const SOON: std::time::Duration = std::time::Duration::from_secs(30);

/// Holds the requests table locked against inserts (quota charges go on) until the
/// transaction returned is committed, once one submission's insert waits on it.
async fn hold_first_batch(
    app: &TestApp,
    pool: &PgPool,
    token: &str,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<u16>,
) {
    let mut lock = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE requests IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let first = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/api/v1/emails"),
            token.to_owned(),
        );
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&email(0))
                .send()
                .await;
            response.expect("sent").status().as_u16()
        })
    };
    common::eventually(
        SOON,
        "the first batch's insert waits on the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .expect("activity");
            (waiting > 0).then_some(())
        },
    )
    .await;
    (lock, first)
}

fn submit(
    app: &TestApp,
    token: &str,
    n: usize,
    request_id: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let (client, url) = (app.client.clone(), app.url("/api/v1/emails"));
    let (token, request_id) = (token.to_owned(), request_id.to_owned());
    tokio::spawn(async move {
        let response = client
            .post(url)
            .bearer_auth(token)
            .header("x-request-id", request_id)
            .json(&email(n))
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    })
}

/// Submissions that arrive while a batch commits are inserted together: one
/// transaction (one `created_at`, PostgreSQL's transaction time) for all, each with its
/// own 202, request and job. A failure of one (an insert that raises, made here by a
/// trigger) does not fail its neighbours: the batch is inserted again one by one.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn concurrent_submissions_share_one_commit_and_one_failure_fails_no_neighbour(pool: PgPool) {
    // One committer: submissions wait for it while the first batch is held.
    let app = spawn_app_with(
        pool.clone(),
        test_config(&[("DATABASE_MAX_CONNECTIONS", "2")]),
        None,
    )
    .await;
    let (_, address) = app.create_account(Role::Promoter).await;
    let token = app.login(&address, common::PASSWORD).await.access_token;

    let (lock, first) = hold_first_batch(&app, &pool, &token).await;
    let waiting: Vec<_> = (1..=20)
        .map(|n| submit(&app, &token, n, "together"))
        .collect();
    common::eventually(SOON, "20 submissions wait for the committer", || async {
        (app.state.ingest.waiting() == 20).then_some(())
    })
    .await;
    lock.commit().await.expect("release");
    assert_eq!(first.await.expect("joined"), 202);
    let mut ids = Vec::new();
    for handle in waiting {
        let (status, body) = handle.await.expect("joined");
        assert_eq!(status, 202, "{body}");
        ids.push(uuid::Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid"));
    }
    let (times, jobs): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT r.created_at), count(j.id) \
         FROM requests r JOIN jobs j ON j.request_id = r.id WHERE r.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .expect("stored");
    assert_eq!(
        (times, jobs),
        (1, 20),
        "the 20 were committed together, each with its job"
    );
    // Stored as a lone submission is (the first one went alone): the same request and
    // job columns, the same payload fields, a dispatch stamp.
    let shapes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT concat_ws('|', r.kind, r.status, r.total, r.send_at, r.callback_url, \
                          r.content IS NULL, j.queue, j.status, j.max_attempts, j.lane_owner, \
                          j.run_after, j.dispatched_at IS NOT NULL, j.attempt, \
                          (SELECT string_agg(k, ',' ORDER BY k) \
                           FROM jsonb_object_keys(j.payload) k)), count(*) \
         FROM requests r JOIN jobs j ON j.request_id = r.id GROUP BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("shapes");
    assert_eq!(shapes.len(), 1, "batched and lone rows differ: {shapes:?}");
    assert_eq!(shapes[0].1, 21, "{shapes:?}");

    // Again, with a submission whose insert fails.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.correlation_id = 'doomed' THEN RAISE EXCEPTION 'refused'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_doomed BEFORE INSERT ON requests \
         FOR EACH ROW EXECUTE FUNCTION refuse_doomed();",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let (lock, first) = hold_first_batch(&app, &pool, &token).await;
    let mut waiting: Vec<_> = (21..=39)
        .map(|n| submit(&app, &token, n, "neighbour"))
        .collect();
    waiting.push(submit(&app, &token, 40, "doomed"));
    common::eventually(SOON, "20 submissions wait for the committer", || async {
        (app.state.ingest.waiting() == 20).then_some(())
    })
    .await;
    lock.commit().await.expect("release");
    assert_eq!(first.await.expect("joined"), 202);
    let doomed_answer = waiting
        .pop()
        .expect("the doomed one")
        .await
        .expect("joined");
    assert_eq!(doomed_answer.0, 500, "{}", doomed_answer.1);
    assert_eq!(doomed_answer.1["code"], "internal", "{}", doomed_answer.1);
    let mut ids = Vec::new();
    for handle in waiting {
        let (status, body) = handle.await.expect("joined");
        assert_eq!(status, 202, "{body}");
        ids.push(uuid::Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid"));
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests r JOIN jobs j ON j.request_id = r.id WHERE r.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .expect("stored");
    assert_eq!(
        stored, 19,
        "every neighbour of the failed submission was stored"
    );
    let doomed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM requests WHERE correlation_id = 'doomed'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(doomed, 0);
}

/// Quotas in a batch: an owner's submissions that arrive together are charged one by
/// one when their sum has no room, so exactly the quota's worth is accepted and every
/// other one gets its own 429 — nothing over the quota is stored, nothing under it lost.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_batch_over_its_owner_s_quota_accepts_exactly_the_quota(pool: PgPool) {
    let app = spawn_app_with(
        pool.clone(),
        test_config(&[
            ("DATABASE_MAX_CONNECTIONS", "2"),
            ("EMAIL_QUOTA_PROMOTER_PER_HOUR", "10"),
            ("EMAIL_QUOTA_PROMOTER_PER_DAY", "100"),
        ]),
        None,
    )
    .await;
    let (_, address) = app.create_account(Role::Promoter).await;
    let token = app.login(&address, common::PASSWORD).await.access_token;
    let (lock, first) = hold_first_batch(&app, &pool, &token).await;
    let waiting: Vec<_> = (1..=14).map(|n| submit(&app, &token, n, "quota")).collect();
    common::eventually(SOON, "14 submissions wait for the committer", || async {
        (app.state.ingest.waiting() == 14).then_some(())
    })
    .await;
    lock.commit().await.expect("release");
    assert_eq!(first.await.expect("joined"), 202);
    let (mut accepted, mut refused) = (0, 0);
    for handle in waiting {
        let (status, body) = handle.await.expect("joined");
        match status {
            202 => accepted += 1,
            429 => {
                assert_eq!(body["code"], "message_quota_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(
        (accepted, refused),
        (9, 5),
        "the first and 9 more fill the quota of 10"
    );
    assert_eq!(count_requests(&pool).await, 10);
    let charged: i64 = sqlx::query_scalar("SELECT sum(messages)::int8 FROM message_quota_usage")
        .fetch_one(&pool)
        .await
        .expect("usage");
    assert_eq!(charged, 10);
}
