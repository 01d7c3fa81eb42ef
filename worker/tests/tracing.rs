//! Tracing end to end: the real `api` and `worker` binaries export their spans over
//! OTLP/HTTP to a real receiver (testkit's, decoding OpenTelemetry's protobuf), and one
//! request's life is one trace across both processes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use common::{Smtp, System, free_port};
use harness::eventually;
use harness::otlp::{self, Receiver, Span};
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(60);

/// A webhook receiver that keeps the `traceparent` of every delivery.
async fn hook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let keep = keep.clone();
            async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if let Ok(mut seen) = keep.lock() {
                    seen.push(traceparent);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

async fn traced_system(
    pool: &PgPool,
    smtp: &Smtp,
    receiver: &Receiver,
    extra: &[(&str, &str)],
) -> System {
    let endpoint = receiver.endpoint();
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32"),
        ("LOG_FORMAT", "json"),
    ];
    env.extend_from_slice(extra);
    let mut system = System::new(pool, smtp.port, &env).await;
    system.start_api().await;
    system.start_worker().await;
    system
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} in:\n{}", otlp::tree(spans));
    found[0]
}

/// The trace whose server span is `POST <route>`, once it has `wanted` spans named so.
async fn trace_of(receiver: &Receiver, route: &str, wanted: &[&str]) -> Vec<Span> {
    eventually(WAIT, "the request's trace is exported whole", || async {
        let server = receiver
            .spans()
            .into_iter()
            .find(|s| s.name == format!("POST {route}"))?;
        let trace = receiver.trace(&server.trace_id);
        wanted
            .iter()
            .all(|name| trace.iter().any(|s| s.name == *name))
            .then_some(trace)
    })
    .await
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn one_email_with_a_callback_is_one_trace_across_the_api_the_worker_smtp_and_the_webhook(
    pool: PgPool,
) {
    let receiver = Receiver::start().await;
    let smtp = Smtp::start(free_port(), &[]).await;
    let (hook, hooks) = hook_receiver().await;
    let system = traced_system(&pool, &smtp, &receiver, &[]).await;
    let secret = system.post("/api/v1/me/webhook-secret", &json!({})).await;
    assert!(secret.status().is_success());
    let response = system
        .post(
            "/api/v1/emails",
            &json!({"to": ["reader@example.org"], "subject": "Traced", "text": "Hello", "callback_url": hook}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    system.wait_finished(&id, WAIT).await;

    let trace = trace_of(
        &receiver,
        "/api/v1/emails",
        &[
            "send emails",
            "process emails",
            "smtp send",
            "process webhooks",
            "POST",
        ],
    )
    .await;
    println!("{}", otlp::tree(&trace));
    let server = one(&trace, "POST /api/v1/emails");
    assert_eq!(server.service, "conveyor-api");
    assert_eq!(server.kind, 2, "server");
    assert_eq!(server.attr("http.route"), Some("/api/v1/emails"));
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.attr("http.response.status_code"), Some("202"));
    let sent = named(&trace, "send emails");
    let sent = sent
        .iter()
        .find(|s| s.service == "conveyor-api")
        .expect("the api's enqueue");
    assert_eq!(sent.kind, 4, "producer");
    assert_eq!(sent.attr("messaging.destination.name"), Some("emails"));
    let process = one(&trace, "process emails");
    assert_eq!(process.service, "conveyor-worker");
    assert_eq!(process.kind, 5, "consumer");
    assert_eq!(
        process.parent_span_id, sent.span_id,
        "a child of the enqueue"
    );
    assert_eq!(process.attr("messaging.destination.name"), Some("emails"));
    assert_eq!(process.attr("conveyor.job.attempt"), Some("1"));
    assert!(process.attr("messaging.message.id").is_some());
    let smtp_span = one(&trace, "smtp send");
    assert_eq!(smtp_span.parent_span_id, process.span_id);
    assert_eq!(smtp_span.kind, 3, "client");
    assert_eq!(
        smtp_span.attr("conveyor.smtp.recipient_domains"),
        Some("example.org")
    );
    assert_eq!(smtp_span.attr("conveyor.smtp.outcome"), Some("delivered"));
    assert_eq!(smtp_span.attr("smtp.reply_code"), Some("250"));
    let webhook_job = one(&trace, "process webhooks");
    let post = one(&trace, "POST");
    assert_eq!(post.parent_span_id, webhook_job.span_id);
    assert_eq!(post.kind, 3, "client");
    assert_eq!(post.attr("http.response.status_code"), Some("200"));

    // The receiver got the delivery's own span as its parent.
    let seen = hooks.lock().expect("hooks").clone();
    assert_eq!(
        seen,
        vec![format!("00-{}-{}-01", post.trace_id, post.span_id)]
    );

    // Nothing exported holds an address, a token or the message.
    for span in receiver.spans() {
        for (key, value) in &span.attributes {
            for secret in [
                "reader@example.org",
                "Hello",
                system.token.as_str(),
                "@example.org>",
            ] {
                assert!(
                    !value.contains(secret),
                    "{} {key}={value} holds {secret}",
                    span.name
                );
            }
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_retry_starts_a_new_trace_linked_to_the_enqueue(pool: PgPool) {
    let receiver = Receiver::start().await;
    // The first DATA is answered 451: the first attempt fails, the second sends.
    let smtp = Smtp::start(free_port(), &["--tempfail", "1"]).await;
    let system = traced_system(
        &pool,
        &smtp,
        &receiver,
        &[
            ("EMAILS_RETRY_BASE_MS", "50"),
            ("EMAILS_RETRY_CAP_MS", "100"),
        ],
    )
    .await;
    let id = system.send_email("reader@example.org", "Twice").await;
    system.wait_finished(&id, WAIT).await;
    let processes = eventually(WAIT, "both attempts are exported", || async {
        let processes: Vec<Span> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.name == "process emails")
            .collect();
        (processes.len() == 2).then_some(processes)
    })
    .await;
    let first = processes
        .iter()
        .find(|s| s.attr("conveyor.job.attempt") == Some("1"))
        .expect("attempt 1");
    let second = processes
        .iter()
        .find(|s| s.attr("conveyor.job.attempt") == Some("2"))
        .expect("attempt 2");
    assert_eq!(first.status, 2, "the failed attempt is an error");
    let failed_send = receiver
        .spans()
        .into_iter()
        .find(|s| s.name == "smtp send" && s.parent_span_id == first.span_id)
        .expect("the first attempt's SMTP span");
    assert_eq!(failed_send.attr("smtp.reply_code"), Some("451"));
    assert_eq!(failed_send.attr("conveyor.smtp.outcome"), Some("transient"));
    assert_ne!(second.trace_id, first.trace_id, "a trace of its own");
    assert!(second.parent_span_id.is_empty(), "a root");
    let spans = receiver.spans();
    let enqueue = spans
        .iter()
        .find(|s| s.span_id == first.parent_span_id)
        .expect("the first attempt's parent is exported");
    assert_eq!(enqueue.name, "send emails");
    assert_eq!(
        second.links,
        vec![(enqueue.trace_id.clone(), enqueue.span_id.clone())],
        "linked to the enqueue"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_clients_traceparent_is_a_parent_only_when_trusted(pool: PgPool) {
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let smtp = Smtp::start(free_port(), &[]).await;
    for trusted in [false, true] {
        let receiver = Receiver::start().await;
        let extra: &[(&str, &str)] = if trusted {
            &[("OTEL_TRUST_INCOMING", "true")]
        } else {
            &[]
        };
        let system = traced_system(&pool, &smtp, &receiver, extra).await;
        let response = system
            .client
            .post(format!("{}/api/v1/emails", system.base))
            .bearer_auth(&system.token)
            .header("traceparent", theirs)
            .json(&json!({"to": ["reader@example.org"], "subject": "Hi", "text": "Hi"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 202);
        let server = eventually(WAIT, "the server span is exported", || async {
            receiver
                .spans()
                .into_iter()
                .find(|s| s.name == "POST /api/v1/emails")
        })
        .await;
        if trusted {
            assert_eq!(server.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(server.parent_span_id, "00f067aa0ba902b7");
        } else {
            assert_ne!(server.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(server.parent_span_id.is_empty());
            assert_eq!(
                server.links,
                vec![(
                    "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
                    "00f067aa0ba902b7".to_owned()
                )]
            );
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn at_sampling_zero_only_a_trusted_clients_sampled_trace_is_recorded_and_it_is_whole(
    pool: PgPool,
) {
    let theirs = "4bf92f3577b34da6a3ce929d0e0e4736";
    let receiver = Receiver::start().await;
    let smtp = Smtp::start(free_port(), &[]).await;
    let (hook, hooks) = hook_receiver().await;
    let system = traced_system(
        &pool,
        &smtp,
        &receiver,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
            ("OTEL_TRUST_INCOMING", "true"),
        ],
    )
    .await;
    let secret = system.post("/api/v1/me/webhook-secret", &json!({})).await;
    assert!(secret.status().is_success());
    let send = |traceparent: Option<String>| {
        let mut request = system
            .client
            .post(format!("{}/api/v1/emails", system.base))
            .bearer_auth(&system.token)
            .json(&json!({"to": ["reader@example.org"], "subject": "Hi", "text": "Hi", "callback_url": hook}));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        request.send()
    };

    // Not sampled: no span, and the webhook tells its receiver so (flag 00).
    let response = send(None).await.expect("sent");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    system
        .wait_finished(body["id"].as_str().expect("id"), WAIT)
        .await;
    let first = eventually(WAIT, "the first webhook arrives", || async {
        hooks.lock().ok()?.first().cloned()
    })
    .await;
    assert!(
        first.starts_with("00-") && first.ends_with("-00"),
        "{first}"
    );
    // Its job was stored as not sampled too (a retry or a follow-up stays out).
    let stored: Vec<Option<String>> =
        sqlx::query_scalar("SELECT trace_context FROM jobs WHERE request_id = $1::text::uuid")
            .bind(body["id"].as_str().expect("id"))
            .fetch_all(&pool)
            .await
            .expect("jobs");
    assert!(!stored.is_empty());
    for context in &stored {
        let context = context.as_deref().expect("a trace context");
        assert_eq!(
            shared::otel::sampled_flag(context),
            Some(false),
            "{context}"
        );
    }

    // A trusted client's sampled trace: recorded whole, across both processes.
    let response = send(Some(format!("00-{theirs}-00f067aa0ba902b7-01")))
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let trace = trace_of(
        &receiver,
        "/api/v1/emails",
        &[
            "send emails",
            "process emails",
            "smtp send",
            "process webhooks",
            "POST",
        ],
    )
    .await;
    assert!(trace.iter().all(|s| s.trace_id == theirs));
    let post = one(&trace, "POST");
    let second = eventually(WAIT, "the second webhook arrives", || async {
        hooks.lock().ok()?.get(1).cloned()
    })
    .await;
    assert_eq!(second, format!("00-{theirs}-{}-01", post.span_id));
    // The exporter sends in the order spans end: had the first request been
    // recorded, its spans would be here before the second's.
    let strays: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != theirs)
        .collect();
    assert!(
        strays.is_empty(),
        "unsampled spans exported:\n{}",
        otlp::tree(&strays)
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_error_answer_and_the_log_lines_name_the_trace(pool: PgPool) {
    let receiver = Receiver::start().await;
    let smtp = Smtp::start(free_port(), &[]).await;
    let system = traced_system(&pool, &smtp, &receiver, &[]).await;
    let response = system
        .post(
            "/api/v1/emails",
            &json!({"to": ["not an address"], "subject": "x"}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("json");
    let trace_id = problem["trace_id"].as_str().expect("a trace_id").to_owned();
    assert_eq!(trace_id.len(), 32, "{problem}");
    let server = eventually(WAIT, "the refused request's span is exported", || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.trace_id == trace_id && s.name == "POST /api/v1/emails")
    })
    .await;
    assert_eq!(server.attr("http.response.status_code"), Some("422"));
    // The api's JSON log line of that request carries the same ids.
    let log = eventually(WAIT, "the request's log line", || async {
        system
            .api_log()
            .lines()
            .filter_map(|line| serde_json::from_str::<HashMap<String, Value>>(line).ok())
            .find(|line| line.get("trace_id").and_then(Value::as_str) == Some(&trace_id))
    })
    .await;
    assert!(
        log.get("span_id").and_then(Value::as_str).is_some(),
        "{log:?}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_uploads_trace_holds_its_verification_its_scan_and_the_verdict(pool: PgPool) {
    let receiver = Receiver::start().await;
    let smtp = Smtp::start(free_port(), &[]).await;
    let clamd = harness::clamd::ClamdServer::spawn().await;
    let clamd_addr = clamd.address();
    let storage = harness::process::scratch_dir("storage");
    let storage = storage.display().to_string();
    let system = traced_system(
        &pool,
        &smtp,
        &receiver,
        &[("CLAMD_ADDR", &clamd_addr), ("STORAGE_URL", &storage)],
    )
    .await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(harness::fixtures::small_png(7)).file_name("traced.png"),
    );
    let response = system
        .client
        .post(format!("{}/api/v1/uploads", system.base))
        .bearer_auth(&system.token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    let request = body["request_id"].as_str().expect("request").to_owned();
    system.wait_finished(&request, WAIT).await;
    let trace = trace_of(
        &receiver,
        "/api/v1/uploads",
        &[
            "process uploads",
            "process scans",
            "clamd INSTREAM",
            "storage write",
        ],
    )
    .await;
    println!("{}", otlp::tree(&trace));
    let uploads = one(&trace, "process uploads");
    let scans = one(&trace, "process scans");
    let sent = trace
        .iter()
        .find(|s| s.span_id == scans.parent_span_id)
        .expect("the scan's enqueue");
    assert_eq!(sent.name, "send scans");
    assert_eq!(
        sent.parent_span_id, uploads.span_id,
        "the scan follows the upload's job"
    );
    let clamd_span = one(&trace, "clamd INSTREAM");
    assert_eq!(clamd_span.attr("conveyor.scan.verdict"), Some("clean"));
}
