//! Error monitoring against Sentry's own test transport: what an error log or a panic
//! becomes, which tags it carries, and that nothing identifying a person leaves.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use sentry::protocol::{Event, Level, Map, Request, User};
use sentry::test::with_captured_events_options;
use sentry::types::Uuid;
use shared::AppEnv;
use shared::monitoring::{self, MonitoringError, MonitoringLayer, Settings};
use tracing_subscriber::layer::SubscriberExt as _;

const EMAIL: &str = "alice.smith@example.com";
const TOKEN: &str = "s3cr3t-t0ken-42";
const REQUEST_ID: &str = "4f6c1a52-9f0e-4a8b-b3a1-0c6a7d9e2b11";
const JOB_ID: &str = "0b8e0f1e-7a5d-4c7e-9f51-3f1c9a2d6e77";

fn settings() -> Settings {
    let vars = HashMap::from([("SENTRY_DSN", "https://public@sentry.invalid/1")]);
    Settings::from_lookup(AppEnv::Test, |name| vars.get(name).map(|v| (*v).to_owned()))
        .expect("valid settings")
        .expect("a DSN is set")
}

/// Runs `f` under a subscriber with the monitoring layer and a test client bound to the
/// thread, and returns the events that would have been sent.
fn captured(options: sentry::ClientOptions, f: impl FnOnce()) -> Vec<Event<'static>> {
    let subscriber = tracing_subscriber::registry().with(MonitoringLayer::new(false));
    with_captured_events_options(|| tracing::subscriber::with_default(subscriber, f), options)
}

fn assert_no_pii(event: &Event<'static>) {
    let json = serde_json::to_string(event).expect("serializable event");
    assert!(!json.contains(EMAIL), "the email address leaked: {json}");
    assert!(
        !json.contains("alice.smith"),
        "part of the address leaked: {json}"
    );
    assert!(!json.contains(TOKEN), "the bearer token leaked: {json}");
    assert!(event.user.is_none(), "a user was sent: {json}");
}

#[test]
fn an_error_in_a_request_span_is_one_event_tagged_with_the_request_id_and_no_pii() {
    let options = monitoring::client_options("api", &settings());
    let events = captured(options, || {
        let span = tracing::info_span!(
            "http",
            method = "POST",
            path = "/api/v1/emails",
            request_id = %REQUEST_ID,
            account = EMAIL,
            authorization = %format!("Bearer {TOKEN}"),
        );
        let _entered = span.enter();
        tracing::info!(recipient = EMAIL, "rendering the message for {EMAIL}");
        tracing::warn!(header = %format!("Bearer {TOKEN}"), "a retry");
        tracing::error!(
            error = %format!("smtp said 550 <{EMAIL}> unknown (auth Bearer {TOKEN})"),
            authorization = %format!("Bearer {TOKEN}"),
            code = "internal",
            "request failed for {EMAIL} with Bearer {TOKEN}"
        );
    });

    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event.level, Level::Error);
    assert_eq!(
        event.tags.get("request_id").map(String::as_str),
        Some(REQUEST_ID)
    );
    assert_eq!(event.tags.get("service").map(String::as_str), Some("api"));
    assert_eq!(event.environment.as_deref(), Some("test"));
    assert!(
        event
            .message
            .as_deref()
            .is_some_and(|m| m.contains("[email]")),
        "the message is kept, scrubbed: {:?}",
        event.message
    );
    assert_eq!(event.breadcrumbs.len(), 2, "info and warn are breadcrumbs");
    assert_no_pii(event);
}

#[test]
fn tags_leave_the_scope_with_their_span() {
    let options = monitoring::client_options("api", &settings());
    let events = captured(options, || {
        tracing::info_span!("http", request_id = %REQUEST_ID).in_scope(|| {});
        tracing::error!("outside any request");
    });

    assert_eq!(events.len(), 1);
    assert!(
        !events[0].tags.contains_key("request_id"),
        "{:?}",
        events[0].tags
    );
}

#[test]
fn with_traces_on_the_span_still_tags_and_every_hub_is_restored_on_exit() {
    let mut settings = settings();
    settings.traces_sample_rate = 1.0;
    let options = monitoring::client_options("api", &settings);
    let subscriber = tracing_subscriber::registry().with(MonitoringLayer::new(true));
    let events = with_captured_events_options(
        || {
            tracing::subscriber::with_default(subscriber, || {
                let before = sentry::Hub::current();
                tracing::info_span!("http", request_id = %REQUEST_ID).in_scope(|| {
                    tracing::info_span!("job", queue = "emails", job_id = %JOB_ID)
                        .in_scope(|| tracing::error!("failed inside a job inside a request"));
                });
                assert!(Arc::ptr_eq(&before, &sentry::Hub::current()));
            });
        },
        options,
    );

    assert_eq!(events.len(), 1);
    let tags = &events[0].tags;
    assert_eq!(tags.get("request_id").map(String::as_str), Some(REQUEST_ID));
    assert_eq!(tags.get("job_id").map(String::as_str), Some(JOB_ID));
    assert_eq!(tags.get("queue").map(String::as_str), Some("emails"));
}

#[test]
fn a_panic_in_a_job_is_captured_with_its_job_id_queue_and_request_id() {
    // `init` adds Sentry's default integrations to these options, the panic hook among them.
    let options = sentry::apply_defaults(monitoring::client_options("worker", &settings()));
    let events = captured(options, || {
        let span = tracing::info_span!(
            "job",
            queue = "emails",
            job_id = %JOB_ID,
            request_id = %REQUEST_ID,
            attempt = 1
        );
        let _entered = span.enter();
        let caught = std::panic::catch_unwind(|| panic!("cannot render for {EMAIL}"));
        assert!(caught.is_err());
        // What the api's panic handler logs next: the panic hook already reported it.
        tracing::error!(panic = "cannot render", "handler panicked");
    });

    assert_eq!(events.len(), 1, "one event per panic: {events:#?}");
    let event = &events[0];
    assert_eq!(event.level, Level::Fatal);
    let exception = event.exception.last().expect("the panic as an exception");
    assert_eq!(exception.ty, "panic");
    assert_eq!(
        exception.value.as_deref(),
        Some("cannot render for [email]")
    );
    assert_eq!(event.tags.get("job_id").map(String::as_str), Some(JOB_ID));
    assert_eq!(event.tags.get("queue").map(String::as_str), Some("emails"));
    assert_eq!(
        event.tags.get("request_id").map(String::as_str),
        Some(REQUEST_ID)
    );
    assert_eq!(
        event.tags.get("service").map(String::as_str),
        Some("worker")
    );
    assert_no_pii(event);
}

#[test]
fn user_request_body_cookies_and_authorization_are_stripped() {
    let options = monitoring::client_options("api", &settings());
    let events = captured(options, || {
        let mut headers = Map::new();
        headers.insert("Authorization".to_owned(), format!("Bearer {TOKEN}"));
        headers.insert("Cookie".to_owned(), format!("refresh={TOKEN}"));
        headers.insert("X-Forwarded-For".to_owned(), "203.0.113.9".to_owned());
        headers.insert("x-request-id".to_owned(), REQUEST_ID.to_owned());
        let mut extra = Map::new();
        extra.insert("refresh_token".to_owned(), TOKEN.into());
        sentry::capture_event(Event {
            message: Some("something broke".to_owned()),
            user: Some(User {
                email: Some(EMAIL.to_owned()),
                ip_address: Some("203.0.113.9".parse().expect("an ip")),
                ..User::default()
            }),
            request: Some(Request {
                url: format!("https://api.example.com/api/v1/emails?to={EMAIL}")
                    .parse()
                    .ok(),
                method: Some("POST".to_owned()),
                data: Some(format!(r#"{{"to":"{EMAIL}"}}"#)),
                query_string: Some(format!("to={EMAIL}")),
                cookies: Some(format!("refresh={TOKEN}")),
                headers,
                ..Request::default()
            }),
            extra,
            ..Event::default()
        });
    });

    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_no_pii(event);
    let json = serde_json::to_string(event).expect("serializable event");
    assert!(
        !json.contains("203.0.113.9"),
        "an ip address leaked: {json}"
    );
    let request = event.request.as_ref().expect("the request stays, stripped");
    assert!(request.data.is_none() && request.cookies.is_none());
    assert_eq!(
        request.url.as_ref().map(|u| u.as_str()),
        Some("https://api.example.com/api/v1/emails")
    );
    assert_eq!(request.headers.keys().collect::<Vec<_>>(), ["x-request-id"]);
}

#[test]
fn without_a_dsn_init_returns_none_and_nothing_is_sent() {
    for dsn in [None, Some(""), Some("  ")] {
        let guard = monitoring::init_from_lookup("api", AppEnv::Production, |name| {
            (name == "SENTRY_DSN")
                .then(|| dsn.map(str::to_owned))
                .flatten()
        })
        .expect("no DSN is valid");
        assert!(guard.is_none(), "{dsn:?}");
    }
    assert!(
        sentry::Hub::current().client().is_none(),
        "no client was bound"
    );
    assert_eq!(
        sentry::capture_message("nowhere to go", Level::Error),
        Uuid::nil()
    );

    // The subscriber exactly as `telemetry::init_tracing` builds it with the layer: no
    // layer at all, so even a bound client hears nothing from `tracing`.
    let layer = monitoring::layer();
    assert!(layer.is_none());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::sink),
        );
    let events = with_captured_events_options(
        || {
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!("request failed");
            });
        },
        monitoring::client_options("api", &settings()),
    );
    assert!(events.is_empty(), "{events:#?}");
}

#[test]
fn a_bad_dsn_or_sample_rate_is_a_configuration_error() {
    let lookup = |vars: HashMap<&'static str, &'static str>| {
        move |name: &str| vars.get(name).map(|v| (*v).to_owned())
    };
    let bad_dsn = Settings::from_lookup(
        AppEnv::Development,
        lookup(HashMap::from([("SENTRY_DSN", "not a dsn")])),
    );
    assert!(matches!(bad_dsn, Err(MonitoringError::InvalidDsn)));
    for rate in ["2", "-0.1", "NaN", "often"] {
        let bad_rate = Settings::from_lookup(
            AppEnv::Development,
            lookup(HashMap::from([
                ("SENTRY_DSN", "https://public@sentry.invalid/1"),
                ("SENTRY_TRACES_SAMPLE_RATE", rate),
            ])),
        );
        assert!(
            matches!(bad_rate, Err(MonitoringError::InvalidTracesSampleRate(_))),
            "{rate}"
        );
    }
    let defaults = Settings::from_lookup(
        AppEnv::Development,
        lookup(HashMap::from([(
            "SENTRY_DSN",
            "https://public@sentry.invalid/1",
        )])),
    )
    .expect("valid")
    .expect("on");
    assert_eq!(defaults.environment, "development");
    assert_eq!(defaults.traces_sample_rate, 0.0);
    assert!(defaults.release.starts_with("conveyor@"));
}

/// Takes one HTTP request on `listener` (waiting at most `within` for it to connect)
/// and answers 200; returns its request line and body.
fn receive_one_request(listener: &TcpListener, within: Duration) -> (String, String) {
    let accepting = listener.try_clone().expect("listener handle");
    let (connected, connection) = std::sync::mpsc::channel();
    // A blocking accept, told to the test through the channel; a thread still waiting
    // when the test gives up ends with the test process.
    std::thread::spawn(move || {
        let _ = connected.send(accepting.accept());
    });
    let (stream, _) = connection
        .recv_timeout(within)
        .expect("something reached the DSN's server in time")
        .expect("accept");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).expect("request line");
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("content-length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .expect("response");
    (request_line, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn an_error_reaches_the_dsn_server_through_the_real_transport_scrubbed() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let dsn = format!(
        "http://public@127.0.0.1:{}/1",
        listener.local_addr().expect("address").port()
    );
    let settings = Settings::from_lookup(AppEnv::Test, |name| {
        (name == "SENTRY_DSN").then(|| dsn.clone())
    })
    .expect("valid settings")
    .expect("a DSN is set");
    // What `init` builds (default integrations, reqwest transport), bound to this
    // thread only so that no other test sees it.
    let options = sentry::apply_defaults(monitoring::client_options("api", &settings));
    let client = Arc::new(sentry::Client::from(options));
    let hub = Arc::new(sentry::Hub::new(Some(client.clone()), Arc::default()));
    let server =
        std::thread::spawn(move || receive_one_request(&listener, Duration::from_secs(20)));

    sentry::Hub::run(hub, || {
        let subscriber = tracing_subscriber::registry().with(MonitoringLayer::new(false));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("http", request_id = %REQUEST_ID, account = EMAIL);
            let _entered = span.enter();
            tracing::error!(error = %format!("Bearer {TOKEN}"), "request failed for {EMAIL}");
        });
    });
    assert!(client.flush(Some(Duration::from_secs(10))), "flushed");

    let (request_line, body) = server.join().expect("the server thread");
    assert!(
        request_line.starts_with("POST /api/1/envelope/"),
        "{request_line}"
    );
    assert!(body.contains(REQUEST_ID), "{body}");
    assert!(!body.contains(EMAIL) && !body.contains(TOKEN), "{body}");
}
