//! Fairness end to end (real `api` and `worker` binaries, PostgreSQL, Redis and the
//! SMTP test server): transactional mail is not queued behind bulk mail, and two
//! promoters' campaigns take turns. The assertions count messages, not time: how many
//! of a campaign's messages went out while another message waited.

mod common;

use std::time::Duration;

use common::{Smtp, System, free_port, header};
use serde_json::{Value, json};
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(120);

async fn campaign(system: &System, token: &str, tag: &str, n: usize) -> String {
    let recipients: Vec<String> = (0..n).map(|i| format!("{tag}{i}@example.org")).collect();
    let response = system
        .post_as(
            token,
            "/api/v1/campaigns",
            &json!({"name": tag, "subject": tag, "text": "Hello", "recipients": recipients}),
        )
        .await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["total"], n);
    body["id"].as_str().expect("id").to_owned()
}

async fn succeeded(system: &System, id: &str) -> i64 {
    system.request(id).await["succeeded"]
        .as_i64()
        .expect("succeeded")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_single_email_is_not_queued_behind_a_hundred_thousand_campaign_messages(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(
        &pool,
        smtp.port,
        &[
            ("EMAILS_CONCURRENCY", "16"),
            ("EMAIL_QUOTA_PROMOTER_PER_HOUR", "1000000"),
            ("EMAIL_QUOTA_PROMOTER_PER_DAY", "1000000"),
        ],
    )
    .await;
    system.start_api().await;
    system.promote_everyone(&pool).await;
    system.start_worker().await;

    let campaign_id = campaign(&system, &system.token, "bulk", 100_000).await;
    // The campaign is draining.
    harness::eventually(LONG, "the campaign is draining", || async {
        (succeeded(&system, &campaign_id).await >= 100).then_some(())
    })
    .await;
    let before = succeeded(&system, &campaign_id).await;
    let single = system
        .send_email("urgent@example.org", "Your password was changed")
        .await;
    let request = system.wait_finished(&single, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    let after = succeeded(&system, &campaign_id).await;
    eprintln!(
        "{} campaign messages went out while the single email waited",
        after - before
    );
    // Taken ahead of the ~99,900 campaign messages still queued: only the messages
    // already in flight (concurrency 16) and those taken while its POST was answered
    // went out first. First in, first out, about 99,900 would have.
    assert!(
        after - before < 2_000,
        "{} campaign messages went out while the single email waited",
        after - before
    );
    let cancelled = system
        .post(
            &format!("/api/v1/requests/{campaign_id}/cancel"),
            &json!({}),
        )
        .await;
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn two_promoters_campaigns_take_turns(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[("EMAILS_CONCURRENCY", "4")]).await;
    system.start_api().await;
    let other = format!("other-{}", system.email);
    system.register(&other).await;
    system.promote_everyone(&pool).await;
    let other_token = system.login(&other).await;
    system.start_worker().await;

    let first = campaign(&system, &system.token, "first", 2_000).await;
    harness::eventually(LONG, "the first campaign is draining", || async {
        (succeeded(&system, &first).await >= 20).then_some(())
    })
    .await;
    let second = campaign(&system, &other_token, "second", 200).await;
    // Accepted (its jobs are in the fair lane): what the first had delivered by then.
    let arrived = smtp.messages().len();
    let request = system.wait_finished_as(&other_token, &second, LONG).await;
    assert_eq!(request["succeeded"], 200, "{request}");

    let messages = smtp.wait_for_messages(arrived + 400, LONG).await;
    let order: Vec<bool> = messages
        .iter()
        .map(|m| {
            header(m, "X-Envelope-To")
                .expect("envelope")
                .starts_with("second")
        })
        .collect();
    let first_of_second = order.iter().position(|s| *s).expect("second delivered");
    let last_of_second = order.iter().rposition(|s| *s).expect("second delivered");
    eprintln!(
        "second campaign arrived at message {arrived}, delivered from {first_of_second} to {last_of_second}"
    );
    // One for one: the second campaign's 200 messages are done within about 400
    // messages of its arrival, not after the first campaign's remaining ~1,980
    // (first come, first served), and the first campaign kept its turns meanwhile
    // rather than being pushed aside.
    assert!(
        last_of_second < arrived + 400 + 50,
        "the second campaign finished at message {last_of_second}, it arrived at {arrived}"
    );
    let first_meanwhile = order[first_of_second..=last_of_second]
        .iter()
        .filter(|s| !**s)
        .count();
    assert!(
        (150..=260).contains(&first_meanwhile),
        "{first_meanwhile} of the first campaign's messages went out between the second's first and last"
    );
    let cancelled = system
        .post(&format!("/api/v1/requests/{first}/cancel"), &json!({}))
        .await;
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
}
