//! Attachments from uploads, end to end (real `api` and `worker` binaries, a clamd of
//! the test's own, storage on disk, the SMTP test server): an email whose attachment
//! is still being scanned waits (`waiting`, nothing sent) and goes out once the scan
//! finds it clean, the received part byte for byte the upload (SHA-256), with its
//! name and type; an EICAR attachment makes the email fail with the reason and no
//! message; another account's upload is 404; an infected one is refused at once.

mod common;

use std::time::Duration;

use common::{Smtp, System, free_port};
use harness::clamd::ClamdServer;
use harness::fixtures::{self, EICAR};
use harness::system::scratch_dir;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(90);

async fn system(pool: &PgPool, smtp: &Smtp, clamd: &ClamdServer) -> System {
    let root = scratch_dir("storage").display().to_string();
    let clamd_addr = clamd.address();
    let overrides = [
        ("CLAMD_ADDR", clamd_addr.as_str()),
        ("CLAMD_TIMEOUT_SECS", "10"),
        ("STORAGE_URL", root.as_str()),
        ("UPLOADS_RETRY_BASE_MS", "100"),
        ("SCANS_RETRY_BASE_MS", "100"),
    ];
    let mut system = System::new(pool, smtp.port, &overrides).await;
    system.start_api().await;
    system.promote_everyone(pool).await;
    system.start_worker().await;
    system
}

/// Uploads `bytes` as `name`; the upload's id.
async fn upload(system: &System, token: &str, name: &str, bytes: Vec<u8>) -> String {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let form = reqwest::multipart::Form::new().part("file", part);
    let response = system
        .client
        .post(format!("{}/api/v1/uploads", system.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn send_with(system: &System, attachments: Value) -> reqwest::Response {
    system
        .post(
            "/api/v1/emails",
            &json!({"to": ["ada@example.org"], "subject": "Your file", "text": "Attached.", "attachments": attachments}),
        )
        .await
}

async fn accepted(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 202, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// Polls until the request's email job is `waiting`.
async fn waits(pool: &PgPool, request: &str) {
    harness::eventually(LONG, "the email waits for the scan", || async {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM jobs WHERE request_id = $1::uuid AND queue = 'emails'",
        )
        .bind(request)
        .fetch_optional(pool)
        .await
        .expect("status");
        (status.as_deref() == Some("waiting")).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_email_waits_for_its_attachments_scan_and_then_carries_the_exact_bytes(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut clamd = ClamdServer::spawn().await;
    let system = system(&pool, &smtp, &clamd).await;

    // The scanner is down: the upload stays pending, the email waits for its scan.
    clamd.stop().await;
    let png = fixtures::small_png(42);
    let id = upload(&system, &system.token, "invoice 2026.png", png.clone()).await;
    let request = accepted(send_with(&system, json!([id])).await).await;
    waits(&pool, &request).await;
    let shown = system.request(&request).await;
    assert_eq!(shown["status"], "queued", "{shown}");
    assert_eq!(shown["jobs"]["waiting"], 1, "{shown}");
    assert!(smtp.messages().is_empty(), "nothing before the scan");

    // The scanner is back: the scan finds it clean and the email goes out.
    clamd.start().await;
    let finished = system.wait_finished(&request, LONG).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let messages = smtp.wait_for_messages(1, LONG).await;
    let message = MessageParser::default()
        .parse(messages[0].as_bytes())
        .expect("a MIME message");
    assert_eq!(message.attachment_count(), 1);
    let part = message.attachment(0).expect("the attachment");
    assert_eq!(part.attachment_name(), Some("invoice 2026.png"));
    let kind = part.content_type().expect("a type");
    assert_eq!(
        (kind.ctype(), kind.subtype()),
        ("image", Some("png")),
        "the detected type"
    );
    assert_eq!(
        Sha256::digest(part.contents()),
        Sha256::digest(&png),
        "the received bytes are the upload's"
    );
    assert_eq!(
        message.body_text(0).as_deref().map(str::trim_end),
        Some("Attached.")
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_infected_attachment_fails_the_email_and_nothing_is_sent(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let clamd = ClamdServer::spawn().await;
    let system = system(&pool, &smtp, &clamd).await;

    // Scanned while the email waits: found infected, the email fails with the reason.
    clamd.pause().await;
    let id = upload(&system, &system.token, "notes.txt", EICAR.to_vec()).await;
    let request = accepted(send_with(&system, json!([id])).await).await;
    waits(&pool, &request).await;
    clamd.resume().await;
    let finished = system.wait_finished(&request, LONG).await;
    assert_eq!(finished["status"], "failed", "{finished}");
    let error = finished["jobs"]["last_error"].as_str().expect("an error");
    assert!(error.contains("infected"), "{error}");
    assert!(error.contains(&id), "names the upload: {error}");
    assert!(smtp.messages().is_empty(), "no message was sent");

    // Now known infected: refused at submission, naming the field.
    let response = send_with(&system, json!([id])).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("json");
    assert_eq!(problem["errors"][0]["field"], "attachments[0]", "{problem}");

    // Another account's upload: not found, as if it did not exist.
    let other = "other-attacher@example.org";
    system.register(other).await;
    let token = system.login(other).await;
    let theirs = upload(&system, &token, "theirs.png", fixtures::small_png(7)).await;
    let response = send_with(&system, json!([theirs])).await;
    assert_eq!(response.status(), 404);
    let unknown = send_with(&system, json!([uuid::Uuid::now_v7().to_string()])).await;
    assert_eq!(unknown.status(), 404);
    assert!(smtp.messages().is_empty());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn attachments_up_to_the_limit_go_to_every_recipient_of_a_campaign(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let clamd = ClamdServer::spawn().await;
    let system = system(&pool, &smtp, &clamd).await;

    // Exactly ATTACHMENTS_MAX_BYTES (10 MiB by default) in two files: a text file of
    // 10 MiB less the image, and the image.
    let png = fixtures::small_png(3);
    let limit = 10 * 1024 * 1024;
    let text: Vec<u8> = (0..limit - png.len())
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[i % 38])
        .collect();
    let big = upload(&system, &system.token, "report.txt", text.clone()).await;
    let small = upload(&system, &system.token, "chart.png", png.clone()).await;
    // One byte more is refused at submission.
    let over = upload(
        &system,
        &system.token,
        "one-more.png",
        fixtures::small_png(4),
    )
    .await;
    let response = send_with(&system, json!([big, small, over])).await;
    assert_eq!(response.status(), 422);

    let response = system
        .post(
            "/api/v1/campaigns",
            &json!({
                "name": "Quarterly report",
                "subject": "The report",
                "html": "<p>Attached: the report and its chart.</p>",
                "recipients": ["a@example.org", "b@example.org", "c@example.org"],
                "attachments": [big, small]
            }),
        )
        .await;
    let request = accepted(response).await;
    let finished = system.wait_finished(&request, LONG).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let messages = smtp.wait_for_messages(3, LONG).await;
    for raw in &messages {
        let message = MessageParser::default()
            .parse(raw.as_bytes())
            .expect("a MIME message");
        assert_eq!(message.attachment_count(), 2);
        let names: Vec<Option<&str>> = (0..2)
            .map(|i| message.attachment(i).and_then(|p| p.attachment_name()))
            .collect();
        assert_eq!(names, [Some("report.txt"), Some("chart.png")]);
        let report = message.attachment(0).expect("report");
        assert_eq!(
            Sha256::digest(report.contents()),
            Sha256::digest(&text),
            "10 MiB less the image, byte for byte"
        );
        let chart = message.attachment(1).expect("chart");
        assert_eq!(Sha256::digest(chart.contents()), Sha256::digest(&png));
        assert!(
            message
                .body_text(0)
                .is_some_and(|t| t.contains("Attached: the report")),
            "a text part made from the HTML"
        );
    }
}
