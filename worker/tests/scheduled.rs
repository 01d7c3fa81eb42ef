//! Scheduled sends end to end (real `api` and `worker` binaries, PostgreSQL, Redis and
//! the SMTP test server): a message with `send_at` goes out at its time — not before,
//! and not lost when the worker that was running at submission is replaced — and a
//! scheduled request cancelled before its time sends nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Smtp, System, free_port, header};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `send_at` `ahead` from now in whole milliseconds (as PostgreSQL and Redis keep it
/// exactly), as RFC 3339, and the same instant on the test's clock.
fn send_at(ahead: Duration) -> (String, Instant) {
    let (now, clock) = (OffsetDateTime::now_utc(), Instant::now());
    let at = now + ahead;
    let at = at
        .replace_millisecond(at.millisecond())
        .expect("a valid millisecond");
    let ahead = Duration::try_from(at - now).expect("ahead");
    (at.format(&Rfc3339).expect("formats"), clock + ahead)
}

async fn accepted(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    response.json().await.expect("json")
}

/// Polls the SMTP server until `n` messages are in; returns them and when the last
/// was first seen (within the 10 ms poll).
async fn messages_by(smtp: &Smtp, n: usize, deadline: Instant) -> (Vec<String>, Instant) {
    let within = deadline.saturating_duration_since(Instant::now());
    let what = format!("{n} messages arrive");
    harness::eventually_every(Duration::from_millis(10), within, &what, || async {
        let messages = smtp.messages();
        (messages.len() >= n).then(|| (messages, Instant::now()))
    })
    .await
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_scheduled_email_fires_on_time_after_a_worker_restart_and_a_cancelled_one_never_does(
    pool: PgPool,
) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.start_worker().await;

    let (at, due) = send_at(Duration::from_secs(3));
    let kept = accepted(
        system
            .post(
                "/api/v1/emails",
                &json!({"to": ["kept@example.org"], "subject": "On time", "text": "Hi", "send_at": at}),
            )
            .await,
    )
    .await;
    let dropped = accepted(
        system
            .post(
                "/api/v1/emails",
                &json!({"to": ["dropped@example.org"], "subject": "Never", "text": "Hi", "send_at": at}),
            )
            .await,
    )
    .await;
    assert!(!kept["send_at"].is_null(), "the 202 names the time: {kept}");
    let kept_id = kept["id"].as_str().expect("id");
    let dropped_id = dropped["id"].as_str().expect("id");

    let cancelled = system
        .post(&format!("/api/v1/requests/{dropped_id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.expect("json");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    let request = system.request(kept_id).await;
    assert_eq!(request["status"], "queued", "{request}");
    assert_eq!(
        OffsetDateTime::parse(request["send_at"].as_str().expect("send_at"), &Rfc3339)
            .expect("RFC 3339"),
        OffsetDateTime::parse(&at, &Rfc3339).expect("RFC 3339"),
    );

    // The worker that was running at submission stops before the time; another starts.
    let first = system.workers.remove(0);
    let status = first.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "the worker exits 0 on SIGTERM: {status}");
    system.start_worker().await;
    assert!(
        Instant::now() + Duration::from_millis(300) < due,
        "the restart took too long for the test to mean anything"
    );

    // Nothing before its time.
    let early = due.saturating_duration_since(Instant::now() + Duration::from_millis(100));
    harness::holds_for(
        early,
        Duration::from_millis(20),
        "a message went out before send_at",
        || async { smtp.messages().is_empty() },
    )
    .await;
    let (messages, arrived) = messages_by(&smtp, 1, due + Duration::from_secs(10)).await;
    let late = arrived.saturating_duration_since(due);
    eprintln!(
        "the scheduled email arrived {} ms after send_at",
        late.as_millis()
    );
    assert!(arrived >= due, "arrived before send_at");
    assert!(
        late < Duration::from_millis(1500),
        "arrived {} ms after send_at",
        late.as_millis()
    );
    assert_eq!(header(&messages[0], "To"), Some("kept@example.org"));
    let request = system.wait_finished(kept_id, Duration::from_secs(10)).await;
    assert_eq!(request["status"], "succeeded", "{request}");

    // Well past its time (promotion every 250 ms, redelivery timeout 3 s), the
    // cancelled one has still not gone out.
    harness::wait_out(
        Duration::from_secs(5),
        "the cancelled send, well past its time, stays unsent",
    )
    .await;
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "only the kept email went out");
    let request = system.request(dropped_id).await;
    assert_eq!(request["status"], "cancelled", "{request}");
    assert_eq!(request["jobs"]["cancelled"], 1, "{request}");
    assert_eq!(request["jobs"]["attempts"], 0, "never started: {request}");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_message_of_a_scheduled_campaign_goes_out_after_its_time(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.promote_everyone(&pool).await;
    system.start_worker().await;

    let (at, due) = send_at(Duration::from_secs(3));
    let recipients: Vec<String> = (0..20).map(|i| format!("r{i}@example.org")).collect();
    let campaign = accepted(
        system
            .post(
                "/api/v1/campaigns",
                &json!({"name": "Later", "subject": "Later", "text": "Hi", "recipients": recipients, "send_at": at}),
            )
            .await,
    )
    .await;
    assert_eq!(campaign["total"], 20);
    let id = campaign["id"].as_str().expect("id");

    let early = due.saturating_duration_since(Instant::now() + Duration::from_millis(100));
    harness::holds_for(
        early,
        Duration::from_millis(20),
        "a campaign message went out before send_at",
        || async { smtp.messages().is_empty() },
    )
    .await;
    let (_, arrived) = messages_by(&smtp, 20, due + Duration::from_secs(15)).await;
    eprintln!(
        "the campaign's 20 messages were in {} ms after send_at",
        arrived.saturating_duration_since(due).as_millis()
    );
    let request = system.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["succeeded"], 20, "{request}");
}
