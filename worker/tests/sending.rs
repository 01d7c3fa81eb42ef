//! Sending like a real sender, end to end (real `api` and `worker` binaries,
//! PostgreSQL, Redis and the SMTP test server): a recipient the server refuses for
//! good is suppressed and never sent to again; campaign mail carries a one-click
//! unsubscribe link whose GET only shows a page and whose POST suppresses; campaign
//! statistics count what happened.

mod common;

use std::time::Duration;

use common::{Smtp, System, free_port, header};
use serde_json::{Value, json};
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(60);

async fn promoter_system(pool: &PgPool, smtp: &Smtp, overrides: &[(&str, &str)]) -> System {
    let mut system = System::new(pool, smtp.port, overrides).await;
    system.start_api().await;
    system.promote_everyone(pool).await;
    system.start_worker().await;
    system
}

async fn suppressions(system: &System) -> Vec<Value> {
    let response = system.get_as(&system.token, "/api/v1/suppressions").await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.expect("json");
    page["items"].as_array().expect("items").clone()
}

async fn campaign(system: &System, recipients: &[&str]) -> String {
    let response = system
        .post(
            "/api/v1/campaigns",
            &json!({"name": "News", "subject": "News", "text": "Hello", "recipients": recipients}),
        )
        .await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn stats(system: &System, id: &str) -> Value {
    let response = system
        .get_as(&system.token, &format!("/api/v1/campaigns/{id}/stats"))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_address_that_bounced_is_not_sent_to_again(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--reject", "gone"]).await;
    let system = promoter_system(&pool, &smtp, &[]).await;

    // A permanent refusal of the only recipient: dead, and the address suppressed.
    let first = system.send_email("gone@example.org", "Hello").await;
    let request = system.wait_finished(&first, LONG).await;
    assert_eq!(request["status"], "failed", "{request}");
    let listed = suppressions(&system).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], "gone@example.org");
    assert_eq!(listed[0]["reason"], "bounce");
    assert!(
        listed[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("550") && !d.contains("gone@")),
        "the SMTP reply, without the address: {}",
        listed[0]
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT address FROM suppressions")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert!(
        !String::from_utf8_lossy(&stored).contains("gone"),
        "the address is sealed at rest"
    );

    // The second request is suppressed: nothing reaches the server.
    let second = system.send_email("Gone <GONE@example.org>", "Again").await;
    let request = system.wait_finished(&second, LONG).await;
    assert_eq!(request["status"], "suppressed", "{request}");
    assert_eq!(request["suppressed"], 1, "{request}");
    assert_eq!(request["jobs"]["suppressed"], 1, "{request}");

    // With another recipient the message goes to that one only.
    let response = system
        .post(
            "/api/v1/emails",
            &json!({"to": ["ada@example.org"], "cc": ["gone@example.org"], "subject": "Mixed", "text": "Hi"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let mixed: Value = response.json().await.expect("json");
    let request = system
        .wait_finished(mixed["id"].as_str().expect("id"), LONG)
        .await;
    assert_eq!(request["status"], "succeeded", "{request}");
    let messages = smtp.wait_for_messages(1, LONG).await;
    assert_eq!(messages.len(), 1, "only the mixed message was sent");
    assert_eq!(
        header(&messages[0], "X-Envelope-To"),
        Some("ada@example.org")
    );
    assert_eq!(
        header(&messages[0], "Cc"),
        None,
        "the suppressed Cc is left out"
    );

    // Removed from the list, the address is sent to again (and refused again).
    let id = listed[0]["id"].as_str().expect("id");
    let response = system
        .client
        .delete(format!("{}/api/v1/suppressions/{id}", system.base))
        .bearer_auth(&system.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert!(suppressions(&system).await.is_empty());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn one_click_unsubscribe_suppresses_on_post_and_not_on_get(pool: PgPool) {
    use shared::config::DkimAlgorithm;
    let smtp = Smtp::start(free_port(), &[]).await;
    let key = harness::dkim::openssl_key(DkimAlgorithm::Rsa);
    let record = (
        "mail._domainkey.conveyor.test".to_owned(),
        format!(
            "v=DKIM1; k=rsa; p={}",
            harness::dkim::openssl_public_key(&key, DkimAlgorithm::Rsa)
        ),
    );
    let system = promoter_system(
        &pool,
        &smtp,
        &[
            ("DKIM_DOMAIN", "conveyor.test"),
            ("DKIM_SELECTOR", "mail"),
            ("DKIM_PRIVATE_KEY", key.as_str()),
        ],
    )
    .await;

    let first = campaign(&system, &["ada@example.org", "grace@example.org"]).await;
    let request = system.wait_finished(&first, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    let messages = smtp.wait_for_messages(2, LONG).await;
    let to_ada = messages
        .iter()
        .find(|m| header(m, "X-Envelope-To") == Some("ada@example.org"))
        .expect("ada's message");
    assert_eq!(
        header(to_ada, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let link = header(to_ada, "List-Unsubscribe").expect("List-Unsubscribe");
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .expect("<url>");
    assert!(
        url.starts_with(&format!("{}/api/v1/unsubscribe/", system.base)),
        "{url}"
    );
    assert!(
        !url.contains("ada"),
        "the token does not reveal the address"
    );
    // Signed, the one-click headers included, as an independent verifier sees it.
    let signature = header(to_ada, "DKIM-Signature").expect("DKIM-Signature");
    assert!(signature.contains("d=conveyor.test"), "{signature}");
    assert!(harness::dkim::verifies(
        harness::dkim::without_envelope_line(to_ada.as_bytes()),
        &record
    ));
    let altered = to_ada.replace(
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        "List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
    );
    assert_ne!(&altered, to_ada);
    assert!(
        !harness::dkim::verifies(
            harness::dkim::without_envelope_line(altered.as_bytes()),
            &record
        ),
        "List-Unsubscribe-Post is covered by the signature"
    );

    // A GET (a mail scanner following the link) shows a page and changes nothing.
    let page = system.client.get(url).send().await.expect("get");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("<form method=\"post\"")
    );
    assert!(suppressions(&system).await.is_empty());

    // The provider's one-click POST: no login, no cookie.
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200, "idempotent");
    }
    let listed = suppressions(&system).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], "ada@example.org");
    assert_eq!(listed[0]["reason"], "unsubscribe");
    let counted = stats(&system, &first).await;
    assert_eq!(counted["delivered"], 2, "{counted}");
    assert_eq!(counted["unsubscribed"], 1, "{counted}");

    // An altered token does nothing.
    let mut altered = url.to_owned();
    let last = altered.pop().expect("char");
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let response = reqwest::Client::new()
        .post(&altered)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 404);

    // The next campaign skips her.
    let second = campaign(&system, &["ada@example.org", "grace@example.org"]).await;
    let request = system.wait_finished(&second, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["succeeded"], 1, "{request}");
    assert_eq!(request["suppressed"], 1, "{request}");
    let counted = stats(&system, &second).await;
    assert_eq!(counted["suppressed"], 1, "{counted}");
    assert_eq!(counted["delivered"], 1, "{counted}");
    harness::wait_out(
        Duration::from_millis(500),
        "nothing more reaches the suppressed address",
    )
    .await;
    assert_eq!(smtp.messages().len(), 3, "grace twice, ada once");
}

/// When each message arrived (the file's modification time), by envelope domain.
fn arrivals(smtp: &Smtp, domain: &str) -> Vec<std::time::SystemTime> {
    let mut times: Vec<std::time::SystemTime> = std::fs::read_dir(&smtp.dir)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .ok()
                .and_then(|m| header(&m, "X-Envelope-To").map(|to| to.ends_with(domain)))
                .unwrap_or(false)
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .collect();
    times.sort();
    times
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_domains_pace_holds_across_two_workers_and_other_domains_go_on(pool: PgPool) {
    const RATE: usize = 4;
    const PACED: usize = 24;
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = promoter_system(
        &pool,
        &smtp,
        &[
            ("EMAIL_DOMAIN_PACE", "paced.test=4:2"),
            ("EMAILS_CONCURRENCY", "8"),
        ],
    )
    .await;
    system.start_worker().await;
    let mut recipients: Vec<String> = (0..PACED).map(|i| format!("r{i}@paced.test")).collect();
    recipients.extend((0..10).map(|i| format!("r{i}@example.org")));
    let refs: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let id = campaign(&system, &refs).await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["succeeded"], PACED + 10, "{request}");

    let paced = arrivals(&smtp, "@paced.test");
    let other = arrivals(&smtp, "@example.org");
    assert_eq!((paced.len(), other.len()), (PACED, 10));
    // Arrivals per wall-clock second, for the log only: a message admitted at the end
    // of one second arrives in the next (under load, several do), so buckets are no
    // measure of the rate; the span below is.
    let mut per_second = std::collections::BTreeMap::new();
    for t in &paced {
        let second = t
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        *per_second.entry(second).or_insert(0usize) += 1;
    }
    eprintln!("arrivals per second at paced.test: {per_second:?}");
    let span = paced[PACED - 1].duration_since(paced[0]).expect("ordered");
    // 24 messages at 4/s across both workers take six distinct seconds: from the
    // first to the last more than 4 s; at 4/s per worker they would take three
    // (under 3 s).
    assert!(
        span >= Duration::from_millis(3_900),
        "{PACED} messages at {RATE}/s took only {span:?}"
    );
    assert!(
        other[9] < paced[PACED - 1],
        "the other domain's messages did not wait for the paced domain's"
    );
    for (n, worker) in system.workers.iter().enumerate() {
        assert!(
            worker.log_text().contains("job succeeded"),
            "worker {n} sent nothing, so pacing across workers was not exercised"
        );
    }
}

fn report(fixture: &str, job_id: &str, recipient: &str) -> String {
    std::fs::read_to_string(
        harness::workspace()
            .join("shared/testkit/fixtures")
            .join(fixture),
    )
    .expect("fixture")
    .replace("{JOB_ID}", job_id)
    .replace("{RECIPIENT}", recipient)
}

async fn post_report(system: &System, token: &str, body: String) -> reqwest::Response {
    system
        .client
        .post(format!("{}/api/v1/inbound/reports", system.base))
        .bearer_auth(token)
        .header("content-type", "message/rfc822")
        .body(body)
        .send()
        .await
        .expect("post")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_dsn_and_an_arf_report_suppress_the_right_address(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let system =
        promoter_system(&pool, &smtp, &[("INBOUND_REPORTS_TOKEN", "s3cret-inbound")]).await;
    let id = campaign(
        &system,
        &["ada@example.org", "grace@example.org", "lin@example.org"],
    )
    .await;
    system.wait_finished(&id, LONG).await;
    let messages = smtp.wait_for_messages(3, LONG).await;
    let job_of = |to: &str| -> String {
        let message = messages
            .iter()
            .find(|m| header(m, "X-Envelope-To") == Some(to))
            .expect("message");
        let message_id = header(message, "Message-ID").expect("Message-ID");
        message_id
            .trim_matches(['<', '>'])
            .strip_suffix("@conveyor")
            .expect("a Conveyor Message-ID")
            .to_owned()
    };

    // Without the token, or with another, nothing is read.
    let dsn = report("dsn.eml", &job_of("ada@example.org"), "ada@example.org");
    assert_eq!(
        post_report(&system, "wrong", dsn.clone()).await.status(),
        401
    );
    // A report naming an address the message was not sent to changes nothing.
    let forged = report("dsn.eml", &job_of("ada@example.org"), "someone@example.org");
    let outcome: Value = post_report(&system, "s3cret-inbound", forged)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(outcome["suppressed"], 0, "{outcome}");
    assert!(suppressions(&system).await.is_empty());

    let outcome: Value = post_report(&system, "s3cret-inbound", dsn.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(outcome["kind"], "delivery_status", "{outcome}");
    assert_eq!(outcome["suppressed"], 1, "{outcome}");
    // Read twice (a retried delivery of the report): nothing more.
    let again: Value = post_report(&system, "s3cret-inbound", dsn)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["suppressed"], 0, "{again}");

    let arf = report("arf.eml", &job_of("grace@example.org"), "grace@example.org");
    let response = post_report(&system, "s3cret-inbound", arf).await;
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.expect("json");
    assert_eq!(outcome["kind"], "feedback", "{outcome}");
    assert_eq!(outcome["suppressed"], 1, "{outcome}");

    let mut listed: Vec<(String, String)> = suppressions(&system)
        .await
        .iter()
        .map(|s| {
            (
                s["address"].as_str().expect("address").to_owned(),
                s["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("ada@example.org".to_owned(), "bounce".to_owned()),
            ("grace@example.org".to_owned(), "complaint".to_owned())
        ]
    );
    let counted = stats(&system, &id).await;
    assert_eq!(counted["bounced"], 1, "{counted}");
    assert_eq!(counted["complained"], 1, "{counted}");
    assert_eq!(counted["delivered"], 3, "{counted}");

    // Not a report: 422, never a 500.
    let response = post_report(&system, "s3cret-inbound", "Subject: hi\r\n\r\nhello".into()).await;
    assert_eq!(response.status(), 422);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_deferral_pauses_its_domain_and_not_the_others(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--defer", "busy"]).await;
    let system = promoter_system(&pool, &smtp, &[("EMAIL_DOMAIN_BACKOFF_SECS", "3")]).await;
    let busy = system.send_email("busy@slow.test", "Deferred").await;
    // Wait until the server has deferred it once.
    harness::eventually(LONG, "the server deferred it once", || async {
        let request = system.request(&busy).await;
        request["jobs"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("450"))
            .then_some(())
    })
    .await;
    let t0 = std::time::SystemTime::now();
    let slow = system.send_email("ok@slow.test", "Same domain").await;
    let other = system.send_email("ok@other.test", "Other domain").await;
    system.wait_finished(&other, LONG).await;
    system.wait_finished(&slow, LONG).await;
    let after = |domain: &str| {
        arrivals(&smtp, domain)[0]
            .duration_since(t0)
            .unwrap_or_default()
    };
    assert!(
        after("@other.test") < Duration::from_millis(1_500),
        "another domain waited {:?}",
        after("@other.test")
    );
    assert!(
        after("@slow.test") >= Duration::from_millis(2_000),
        "the deferred domain was not paused: {:?}",
        after("@slow.test")
    );
    let request = system.request(&busy).await;
    assert_eq!(request["status"], "running", "still retried: {request}");
}
