//! The console's operator pages over real HTTP (a module of `console.rs`): retry every
//! dead job of a queue as an operation with its progress, schedules paused and resumed,
//! suppressions looked up across accounts and removed, and the audit log of it all.

use super::*;

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_dead_job_of_a_queue_is_retried_as_an_operation_whose_page_shows_its_progress(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let (owner, _) = app.create_account(Role::Admin).await;
    app.submit_canaries(owner, 3).await;
    let dead = app
        .bury_queued(shared::queue::QueueName::Canary, "451 4.3.0 try later")
        .await;
    assert_eq!(dead.len(), 3);
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);

    let overview = html(browser.get("/console").await, 200).await;
    assert!(
        overview.contains(r#"action="/console/queues/canary/retry-dead""#),
        "{overview}"
    );
    assert!(
        !overview.contains(r#"action="/console/queues/emails/retry-dead""#),
        "no button where nothing is dead"
    );
    let started = browser.post("/console/queues/canary/retry-dead", &[]).await;
    assert_eq!(started.status(), 303);
    let page_path = location(&started).to_owned();
    let id = page_path
        .strip_prefix("/console/operations/")
        .expect("the operation's page");
    let page = html(browser.get(&page_path).await, 200).await;
    assert!(page.contains("Retry every dead job of canary"), "{page}");
    assert!(page.contains(r#"id="operation-count">0 of 3"#), "{page}");
    assert!(page.contains(&format!(r#"data-live="/console/live/operations/{id}""#)));

    // The operation is a job of the `operations` queue, audited with the admin's id.
    let (kind, total): (String, i64) =
        sqlx::query_as("SELECT kind, total FROM admin_operations WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("operation");
    assert_eq!((kind.as_str(), total), ("bulk_retry", 3));
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE queue = 'operations' AND status = 'queued'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(queued, 1);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'bulk_retry' AND target = 'queue:canary'",
    )
    .fetch_one(&pool)
    .await
    .expect("audit");
    assert_eq!(audited, 1);

    // Its progress moves live: the stream sends the region, and again once it moved.
    let stream = reqwest::Client::new()
        .get(app.url(&format!("/console/live/operations/{id}")))
        .header("cookie", browser.cookie_header())
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    until_event(&mut body, "replace").await;
    sqlx::query(
        "UPDATE admin_operations SET done = 3, state = 'done', finished_at = now() WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(&pool)
    .await
    .expect("progress");
    until_text(&mut body, r#"id="operation-count">3 of 3"#).await;

    // Careless input: plain pages.
    html(
        browser.post("/console/queues/nope/retry-dead", &[]).await,
        404,
    )
    .await;
    html(browser.get("/console/operations/nope").await, 404).await;
    let unknown = format!("/console/operations/{}", uuid::Uuid::now_v7());
    html(browser.get(&unknown).await, 404).await;
}

/// Reads the stream until `wanted` appears in it (or fails after 15 s).
async fn until_text(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    wanted: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut text = String::new();
    while !text.contains(wanted) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("no {wanted} within 15 s: {text}"))
            .expect("the stream stays open until then")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_schedule_is_paused_and_resumed_from_the_console_and_both_are_in_the_audit_log(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let next = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
    shared::db::schedules::register(
        &pool,
        "prune_retention",
        shared::queue::QueueName::Chores,
        "every 300s",
        "UTC",
        next,
    )
    .await
    .expect("schedule");
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);

    let page = html(browser.get("/console/schedules").await, 200).await;
    assert!(
        page.contains(r#"data-schedule="prune_retention""#),
        "{page}"
    );
    assert!(page.contains("every 300s"));
    assert!(
        page.contains(r#"id="pause-schedule-prune_retention""#),
        "{page}"
    );

    let paused = browser
        .post("/console/schedules/prune_retention/pause", &[])
        .await;
    assert_eq!(paused.status(), 303);
    assert_eq!(location(&paused), "/console/schedules");
    let page = html(browser.get("/console/schedules").await, 200).await;
    assert!(page.contains("paused"), "{page}");
    assert!(
        page.contains(r#"id="resume-schedule-prune_retention""#),
        "{page}"
    );
    let row: bool =
        sqlx::query_scalar("SELECT paused FROM schedules WHERE name = 'prune_retention'")
            .fetch_one(&pool)
            .await
            .expect("schedule");
    assert!(row);
    let resumed = browser
        .post("/console/schedules/prune_retention/resume", &[])
        .await;
    assert_eq!(resumed.status(), 303);
    html(
        browser.post("/console/schedules/nope/pause", &[]).await,
        404,
    )
    .await;

    // The audit log page shows both, newest first, linked to the schedules.
    let audit = html(browser.get("/console/audit").await, 200).await;
    let resume_at = audit.find(">resume<").expect("resume in the log");
    let pause_at = audit.find(">pause<").expect("pause in the log");
    assert!(resume_at < pause_at, "newest first: {audit}");
    assert!(
        audit.contains(r#"<a href="/console/schedules">schedule:prune_retention</a>"#),
        "{audit}"
    );
    html(browser.get("/console/audit?cursor=%%%").await, 422).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_address_is_found_across_every_account_and_removed_from_one_with_an_audit_row_without_it(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let (first, _) = app.create_account(Role::User).await;
    let (second, _) = app.create_account(Role::Promoter).await;
    let address = "ada@example.org";
    for owner in [first, second] {
        api::services::suppressions::add(&app.state, owner, address)
            .await
            .expect("suppressed");
    }
    api::services::suppressions::add(&app.state, first, "grace@example.org")
        .await
        .expect("suppressed");
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);

    let empty = html(browser.get("/console/suppressions").await, 200).await;
    assert!(
        !empty.contains("data-suppression="),
        "nothing listed until asked"
    );
    // Found in both accounts' lists, in any case the operator types it.
    let found = html(
        browser
            .get("/console/suppressions?address=ADA%40example.org")
            .await,
        200,
    )
    .await;
    assert_eq!(found.matches("data-suppression=").count(), 2, "{found}");
    assert!(found.contains(&first.to_string()) && found.contains(&second.to_string()));
    assert!(!found.contains("grace@example.org"));
    // One account's list.
    let list = html(
        browser
            .get(&format!("/console/suppressions?account={first}"))
            .await,
        200,
    )
    .await;
    assert_eq!(list.matches("data-suppression=").count(), 2, "{list}");

    let entry: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM suppressions WHERE owner_id = $1 ORDER BY created_at LIMIT 1",
    )
    .bind(first)
    .fetch_one(&pool)
    .await
    .expect("entry");
    let removed = browser
        .post(
            &format!("/console/suppressions/{first}/{entry}/remove"),
            &[],
        )
        .await;
    assert_eq!(removed.status(), 303);
    assert_eq!(
        location(&removed),
        format!("/console/suppressions?account={first}")
    );
    let found = html(
        browser
            .get("/console/suppressions?address=ada%40example.org")
            .await,
        200,
    )
    .await;
    assert_eq!(found.matches("data-suppression=").count(), 1, "{found}");
    let (target, details): (String, serde_json::Value) =
        sqlx::query_as("SELECT target, details FROM audit_log WHERE action = 'unsuppress'")
            .fetch_one(&pool)
            .await
            .expect("audited");
    assert_eq!(target, format!("user:{first}"));
    assert_eq!(details["suppression_id"], entry.to_string());
    assert_eq!(details["reason"], "manual");
    assert!(
        !details.to_string().contains("ada@"),
        "never the address: {details}"
    );

    // Removed once; careless input gets a plain page.
    let again = browser
        .post(
            &format!("/console/suppressions/{first}/{entry}/remove"),
            &[],
        )
        .await;
    html(again, 404).await;
    let bad = html(
        browser
            .get("/console/suppressions?address=not-an-address")
            .await,
        422,
    )
    .await;
    assert!(bad.contains("is not an email address"), "{bad}");
    html(browser.get("/console/suppressions?account=xyz").await, 422).await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_jobs_page_lists_every_attempt_and_the_overview_shows_the_hour_and_the_alerts(
    pool: PgPool,
) {
    use shared::db::jobs;
    let app = spawn_app(pool.clone()).await;
    let (owner, _) = app.create_account(Role::Admin).await;
    app.submit_canaries(owner, 1).await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE queue = 'canary'")
        .fetch_one(&pool)
        .await
        .expect("job");
    // Attempt 1 fails and is retried, through the completer's own transitions.
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        jobs::claim(&pool, &[id], "test", now)
            .await
            .expect("claim")
            .len(),
        1
    );
    let mut conn = pool.acquire().await.expect("conn");
    let retry = jobs::Failure {
        id,
        error: "451 4.7.1 greylisted, come back later".into(),
        retry_at: Some(now),
    };
    assert_eq!(
        jobs::schedule_retry(&mut conn, std::slice::from_ref(&retry))
            .await
            .expect("retry"),
        [id]
    );
    // A redelivered outcome of the same attempt changes nothing, and adds no attempt.
    assert!(
        jobs::schedule_retry(&mut conn, &[retry])
            .await
            .expect("again")
            .is_empty()
    );
    drop(conn);
    // Attempt 2 is claimed; its worker stops, and the job is taken back (no outcome).
    sqlx::query("UPDATE jobs SET status = 'queued', attempt = 2, run_after = NULL WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .expect("taken back");
    // Attempt 3 fails for good.
    let dead = app
        .bury_queued(
            shared::queue::QueueName::Canary,
            "550 5.1.1 no such mailbox",
        )
        .await;
    assert_eq!(dead, [id]);
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);

    let page = html(browser.get(&format!("/console/jobs/{id}")).await, 200).await;
    for attempt in 1..=3 {
        assert!(
            page.contains(&format!(r#"data-attempt="{attempt}""#)),
            "attempt {attempt}: {page}"
        );
    }
    assert!(page.contains("451 4.7.1 greylisted"), "{page}");
    assert!(
        page.contains("failed, retried") && page.contains("failed, dead"),
        "{page}"
    );
    assert!(page.contains("No outcome recorded"), "{page}");
    assert_eq!(page.matches("data-attempt=").count(), 3, "{page}");

    // The overview: the last hour's chart counts both failures, and the dead job's
    // alert holds.
    let overview = html(browser.get("/console").await, 200).await;
    assert!(overview.contains(r#"data-alert="DeadJobs""#), "{overview}");
    assert!(
        overview.contains("1 jobs on canary went dead in the last 15 minutes"),
        "{overview}"
    );
    assert!(
        overview.contains("canary: 0 jobs succeeded and 2 attempts failed in the last hour"),
        "{overview}"
    );
    assert!(
        overview.contains(r#"id="dispatcher-backlog""#),
        "{overview}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn jobs_are_filtered_by_when_they_were_created_and_a_page_shows_only_identifying_payload_fields(
    pool: PgPool,
) {
    let app = spawn_app(pool.clone()).await;
    let (_, session) = app.register_user().await;
    app.send_email(
        &session.access_token,
        "ada@example.org",
        "A private subject",
    )
    .await;
    let (admin, _) = app.create_account(Role::Admin).await;
    app.submit_canaries(admin, 1).await;
    let (email_job, created): (uuid::Uuid, time::OffsetDateTime) =
        sqlx::query_as("SELECT id, created_at FROM jobs WHERE queue = 'emails'")
            .fetch_one(&pool)
            .await
            .expect("email job");
    let (email, secret) = enrolled(&app, Role::Admin).await;
    let mut browser = Browser::new(&app);
    assert_eq!(browser.sign_in(&email, &secret).await.status(), 303);

    // A window around the jobs' creation holds both; one that ended before holds none.
    let minute = |at: time::OffsetDateTime| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        )
    };
    let (from, until) = (
        minute(created - time::Duration::minutes(1)),
        minute(created + time::Duration::minutes(2)),
    );
    let window = html(
        browser
            .get(&format!("/console/jobs?from={from}&before={until}"))
            .await,
        200,
    )
    .await;
    assert_eq!(window.matches("data-job=").count(), 2, "{window}");
    assert!(
        window.contains(&format!(r#"value="{from}""#)),
        "the filter is kept: {window}"
    );
    let earlier = html(
        browser.get(&format!("/console/jobs?before={from}")).await,
        200,
    )
    .await;
    assert!(earlier.contains("No job matches."), "{earlier}");
    let later = html(
        browser.get(&format!("/console/jobs?from={until}")).await,
        200,
    )
    .await;
    assert!(later.contains("No job matches."), "{later}");
    let bad = html(browser.get("/console/jobs?from=yesterday").await, 422).await;
    assert!(
        bad.contains("Created from: yesterday is not a date and time"),
        "{bad}"
    );

    // The email's page: how many recipients, where the content is; never either.
    let page = html(
        browser.get(&format!("/console/jobs/{email_job}")).await,
        200,
    )
    .await;
    assert!(page.contains("1 to, 0 cc, 0 bcc"), "{page}");
    assert!(!page.contains("ada@example.org"), "{page}");
    assert!(!page.contains("A private subject"), "{page}");
}
