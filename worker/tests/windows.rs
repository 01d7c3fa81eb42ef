//! Send windows and daily caps end to end (real `api` and `worker` binaries,
//! PostgreSQL, Redis and the SMTP test server): a campaign's messages wait for its
//! window across a worker restart and go out once it opens, none before; a daily cap
//! holds across two workers, the rest waiting (no attempt spent) for the next day,
//! with the reason on the campaign's view.

mod common;

use std::time::{Duration, SystemTime};

use common::{Smtp, System, free_port};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;

const LONG: Duration = Duration::from_secs(150);

async fn promoter_system(pool: &PgPool, smtp: &Smtp) -> System {
    let mut system = System::new(pool, smtp.port, &[]).await;
    system.start_api().await;
    system.promote_everyone(pool).await;
    system
}

async fn campaign(system: &System, extra: Value, recipients: usize) -> String {
    let mut body = json!({
        "name": "Windowed",
        "subject": "Hello",
        "text": "Hi",
        "recipients": (0..recipients).map(|i| format!("w{i}@example.org")).collect::<Vec<_>>(),
    });
    for (key, value) in extra.as_object().expect("object") {
        body[key] = value.clone();
    }
    let response = system.post("/api/v1/campaigns", &body).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 202, "{text}");
    let accepted: Value = serde_json::from_str(&text).expect("json");
    accepted["id"].as_str().expect("id").to_owned()
}

/// The receipt time of each message the SMTP test server wrote (its file's mtime).
fn arrivals(smtp: &Smtp) -> Vec<SystemTime> {
    std::fs::read_dir(&smtp.dir)
        .expect("the server's directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .collect()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_campaign_waits_for_its_window_across_a_worker_restart(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = promoter_system(&pool, &smtp).await;
    system.start_worker().await;

    // A window opening at the next whole minute at least 15 s away (UTC, every day).
    let now = OffsetDateTime::now_utc();
    let minute = now
        .replace_second(0)
        .expect("second")
        .replace_nanosecond(0)
        .expect("ns");
    let mut opens = minute + time::Duration::minutes(1);
    if opens - now < time::Duration::seconds(15) {
        opens += time::Duration::minutes(1);
    }
    let fmt = |t: OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    if opens.hour() >= 23 && opens.minute() >= 57 {
        // Too near midnight for a same-day window: the next day's tests cover it.
        return;
    }
    let id = campaign(
        &system,
        json!({"send_window": {
            "time_zone": "UTC",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "start": fmt(opens),
            "end": fmt(opens + time::Duration::minutes(3)),
        }}),
        5,
    )
    .await;
    let request = system.request(&id).await;
    let send_at = OffsetDateTime::parse(
        request["send_at"].as_str().expect("the window's opening"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(send_at, opens, "{request}");

    // Restarted before the window opens: the messages still wait for it.
    let worker = system.workers.pop().expect("worker");
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
    system.start_worker().await;
    assert!(
        smtp.messages().is_empty(),
        "nothing before the window opens"
    );

    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    let arrived = arrivals(&smtp);
    assert_eq!(arrived.len(), 5);
    let opened = SystemTime::from(opens);
    assert!(
        arrived.iter().all(|t| *t >= opened),
        "every message after {opens}: {arrived:?}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_daily_cap_holds_across_two_workers_and_the_rest_wait_with_a_reason(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = promoter_system(&pool, &smtp).await;
    system.start_worker().await;
    system.start_worker().await;

    let id = campaign(&system, json!({"daily_cap": 7}), 30).await;
    // 7 sent; the other 23 wait for tomorrow (UTC), none dead, no attempt spent.
    harness::eventually(LONG, "7 sent and 23 waiting for tomorrow", || async {
        let (sent, waiting): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), \
                    count(*) FILTER (WHERE status = 'retrying' AND attempt = 0 \
                                     AND run_after > now() + interval '1 minute') \
             FROM jobs WHERE request_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("counts");
        (sent == 7 && waiting == 23).then_some(())
    })
    .await;
    assert_eq!(smtp.messages().len(), 7);
    let reasons: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT DISTINCT deferred_reason FROM jobs WHERE request_id = $1::uuid AND status = 'retrying'",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await
    .expect("reasons");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0]
            .as_deref()
            .is_some_and(|r| r.contains("daily cap of 7")),
        "{reasons:?}"
    );
    let stats: Value = system
        .get_as(&system.token, &format!("/api/v1/campaigns/{id}/stats"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(stats["waiting"][0]["messages"], 23, "{stats}");
    assert!(
        stats["waiting"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("daily cap of 7")),
        "{stats}"
    );
}
