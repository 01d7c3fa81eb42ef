//! Messages rendered from templates, end to end (real `api` and `worker` binaries,
//! PostgreSQL, Redis and the SMTP test server), each received message parsed with a
//! MIME parser (mail-parser): the subject, the text part and the HTML part carry the
//! recipient's values; a hostile value is escaped in the HTML part; a template with
//! no text part gets one made from its HTML and its `<style>` inlined when it asks;
//! the request records the version it was rendered from; and 10,000 recipients of
//! one campaign each get their own values.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Smtp, System, free_port};
use mail_parser::{MessageParser, MimeHeaders as _};
use serde_json::{Value, json};
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(120);

async fn promoter_system(pool: &PgPool, smtp: &Smtp, overrides: &[(&str, &str)]) -> System {
    let mut system = System::new(pool, smtp.port, overrides).await;
    system.start_api().await;
    system.promote_everyone(pool).await;
    system.start_worker().await;
    system
}

/// Posts `body` to `path`, asserting `status`; returns the JSON answer.
async fn post(system: &System, path: &str, body: &Value, status: u16) -> Value {
    let response = system.post(path, body).await;
    let code = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(code, status, "{path}: {text}");
    serde_json::from_str(&text).expect("json")
}

/// A received message's subject, text part and HTML part, and its envelope recipient.
struct Received {
    to: String,
    subject: String,
    text: String,
    html: Option<String>,
}

fn parse(raw: &str) -> Received {
    let message = MessageParser::default()
        .parse(raw.as_bytes())
        .expect("a MIME message");
    Received {
        to: common::header(raw, "X-Envelope-To")
            .unwrap_or_default()
            .to_owned(),
        subject: message.subject().unwrap_or_default().to_owned(),
        text: message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        // mail-parser offers a text part as HTML too: only a real text/html part counts.
        html: message
            .parts
            .iter()
            .any(|part| {
                part.content_type()
                    .is_some_and(|ct| ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("html")))
            })
            .then(|| message.body_html(0).map(|h| h.into_owned()))
            .flatten(),
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_templated_email_arrives_rendered_in_every_part_and_records_its_version(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let system = promoter_system(&pool, &smtp, &[]).await;

    let template = post(
        &system,
        "/api/v1/templates",
        &json!({
            "name": "invoice",
            "subject": "Invoice {{ number }} for {{ name }}",
            "html": "<html><head><style>p.total { color: #c00; }</style></head><body>\
                     <p>Hello {{ name }},</p><p class=\"total\">Total: {{ amount }}</p>\
                     {% for item in items %}<li>{{ item }}</li>{% endfor %}</body></html>",
            "inline_css": true
        }),
        201,
    )
    .await;
    let id = template["id"].as_str().expect("id");
    let hostile = "<script>alert(1)</script>";
    let accepted = post(
        &system,
        "/api/v1/emails",
        &json!({
            "to": ["Ada <ada@example.org>"],
            "template": "invoice",
            "variables": {"number": 42, "name": "Ada", "amount": "€12.50", "items": ["tea", hostile]}
        }),
        202,
    )
    .await;
    let request = system
        .wait_finished(accepted["id"].as_str().expect("id"), LONG)
        .await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(
        request["template"],
        json!({"id": id, "name": "invoice", "version": 1})
    );

    let messages = smtp.wait_for_messages(1, LONG).await;
    let received = parse(&messages[0]);
    assert_eq!(received.subject, "Invoice 42 for Ada");
    let html = received.html.expect("an HTML part");
    assert!(html.contains("Hello Ada,"), "{html}");
    assert!(html.contains("€12.50"), "{html}");
    assert!(
        // Escaped by the template; the CSS inliner writes the document out again, as
        // `&lt;/script&gt;`.
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the value is escaped: {html}"
    );
    assert!(!html.contains(hostile), "{html}");
    assert!(
        html.contains("style=\"color: #c00;\""),
        "the <style> rule is inlined: {html}"
    );
    // No text part in the template: one made from the HTML.
    assert!(received.text.contains("Hello Ada,"), "{}", received.text);
    assert!(received.text.contains("Total: €12.50"), "{}", received.text);
    assert!(!received.text.contains("<p"), "{}", received.text);

    // An edit is version 2; a message pinned to version 1 still renders version 1.
    let response = system
        .client
        .put(format!("{}/api/v1/templates/{id}", system.base))
        .bearer_auth(&system.token)
        .json(&json!({"subject": "Your invoice {{ number }}", "text": "Hi {{ name }}"}))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 200);
    let mut finished = Vec::new();
    for version in [json!(null), json!(1)] {
        let accepted = post(
            &system,
            "/api/v1/emails",
            &json!({
                "to": ["grace@example.org"],
                "template": id,
                "template_version": version,
                "variables": {"number": 7, "name": "Grace", "amount": "1", "items": []}
            }),
            202,
        )
        .await;
        finished.push(
            system
                .wait_finished(accepted["id"].as_str().expect("id"), LONG)
                .await,
        );
    }
    assert_eq!(finished[0]["template"]["version"], 2, "{}", finished[0]);
    assert_eq!(finished[1]["template"]["version"], 1, "{}", finished[1]);
    let messages = smtp.wait_for_messages(3, LONG).await;
    let subjects: Vec<String> = messages.iter().map(|m| parse(m).subject).collect();
    assert!(
        subjects.contains(&"Your invoice 7".to_owned()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"Invoice 7 for Grace".to_owned()),
        "{subjects:?}"
    );
    let plain = messages
        .iter()
        .map(|m| parse(m))
        .find(|m| m.subject == "Your invoice 7")
        .expect("version 2's message");
    assert_eq!(plain.text.trim_end(), "Hi Grace");
    assert!(plain.html.is_none(), "version 2 has no HTML part");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn ten_thousand_recipients_of_one_campaign_each_get_their_own_values(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let system = promoter_system(&pool, &smtp, &[]).await;
    post(
        &system,
        "/api/v1/templates",
        &json!({
            "name": "welcome",
            "subject": "{{ greeting }}, {{ name }}",
            "text": "Your code is {{ code }}. {{ footer }}"
        }),
        201,
    )
    .await;
    const N: usize = 10_000;
    let recipients: Vec<Value> = (0..N)
        .map(|i| {
            json!({
                "address": format!("r{i}@example.org"),
                "variables": {"name": format!("R{i}"), "code": i * 7}
            })
        })
        .collect();
    let accepted = post(
        &system,
        "/api/v1/campaigns",
        &json!({
            "name": "Welcome",
            "template": "welcome",
            "variables": {"greeting": "Welcome", "footer": "Thanks.", "name": "nobody"},
            "recipients": recipients
        }),
        202,
    )
    .await;
    assert_eq!(accepted["total"], N);
    let request = system
        .wait_finished(accepted["id"].as_str().expect("id"), LONG)
        .await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["succeeded"], N, "{request}");
    assert_eq!(request["template"]["name"], "welcome", "{request}");

    let messages = smtp.wait_for_messages(N, LONG).await;
    let mut by_recipient: HashMap<String, Received> = HashMap::new();
    for raw in &messages {
        let received = parse(raw);
        by_recipient.insert(received.to.clone(), received);
    }
    assert_eq!(by_recipient.len(), N, "one message per recipient");
    for i in 0..N {
        let received = &by_recipient[&format!("r{i}@example.org")];
        // The recipient's own `name` wins over the campaign's.
        assert_eq!(received.subject, format!("Welcome, R{i}"));
        assert_eq!(
            received.text.trim_end(),
            format!("Your code is {}. Thanks.", i * 7)
        );
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_campaign_the_template_cannot_render_for_someone_is_refused_naming_them(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let system = promoter_system(&pool, &smtp, &[]).await;
    post(
        &system,
        "/api/v1/templates",
        &json!({"name": "t", "subject": "Hi {{ name }}", "text": "{{ code }}"}),
        201,
    )
    .await;
    let refused = post(
        &system,
        "/api/v1/campaigns",
        &json!({
            "name": "C",
            "template": "t",
            "variables": {"code": 1},
            "recipients": [
                {"address": "a@example.org", "variables": {"name": "A"}},
                "b@example.org",
                {"address": "c@example.org", "variables": {"name": "C\r\nBcc: all@example.org"}}
            ]
        }),
        422,
    )
    .await;
    let fields: Vec<&str> = refused["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "recipients[1].variables.name",
            "recipients[2].variables.name"
        ],
        "{refused}"
    );
    // Nothing was queued, nothing sent.
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = 'emails'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0);
    assert!(smtp.messages().is_empty());
}
