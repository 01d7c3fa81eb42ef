//! Error monitoring: optional Sentry, on only when `SENTRY_DSN` is set (no DSN: no
//! client, no layer, no network). Panics and `tracing::error!` events become Sentry
//! events tagged with the `request_id`, `job_id` and `queue` of the span they happen in;
//! whatever could identify a person is scrubbed before an event leaves the process.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use sentry::integrations::tracing::{EventFilter, SentryLayer, default_event_filter};
use sentry::protocol::{Event, Request};
use sentry::types::Dsn;
use sentry::{ClientOptions, Hub, HubSwitchGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Metadata, Subscriber, span};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::AppEnv;

/// Span fields copied to the Sentry scope as tags while their span is entered.
const TAG_FIELDS: [&str; 3] = ["request_id", "job_id", "queue"];
/// The spans sent as Sentry spans when traces are sampled. Sentry has no hook to scrub
/// a transaction, so only spans whose fields are known to carry no PII qualify.
const TRACED_SPANS: [&str; 2] = ["http", "job"];
/// Request headers an event may keep; every other one (authorization, cookies, …) goes.
const SAFE_HEADERS: [&str; 4] = ["accept", "content-length", "content-type", "x-request-id"];
/// Keys whose string values are replaced wherever they appear in an event.
const SENSITIVE_KEYS: [&str; 14] = [
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "session",
    "email",
    "recipient",
    "phone",
    "ip_address",
    "credential",
    "api_key",
    "apikey",
];
const REDACTED: &str = "[redacted]";

/// A Sentry setting that cannot be used; the process refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    #[error("SENTRY_DSN is not a valid Sentry DSN")]
    InvalidDsn,
    #[error("SENTRY_TRACES_SAMPLE_RATE must be a number from 0 to 1, not `{0}`")]
    InvalidTracesSampleRate(String),
}

/// Sentry's settings, read from `SENTRY_*` variables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dsn: Dsn,
    /// `SENTRY_ENVIRONMENT`, by default `APP_ENV`.
    pub environment: String,
    /// `SENTRY_RELEASE`, by default `conveyor@<version>`.
    pub release: String,
    /// `SENTRY_TRACES_SAMPLE_RATE`, 0 (no traces) by default.
    pub traces_sample_rate: f32,
}

impl Settings {
    /// `None` when `SENTRY_DSN` is unset or empty: monitoring is off.
    pub fn from_lookup(
        app_env: AppEnv,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, MonitoringError> {
        let var = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let Some(dsn) = var("SENTRY_DSN") else {
            return Ok(None);
        };
        let dsn = dsn.parse().map_err(|_| MonitoringError::InvalidDsn)?;
        let traces_sample_rate = match var("SENTRY_TRACES_SAMPLE_RATE") {
            None => 0.0,
            Some(raw) => raw
                .parse::<f32>()
                .ok()
                .filter(|rate| (0.0..=1.0).contains(rate))
                .ok_or(MonitoringError::InvalidTracesSampleRate(raw))?,
        };
        Ok(Some(Settings {
            dsn,
            environment: var("SENTRY_ENVIRONMENT").unwrap_or_else(|| app_env.as_str().to_owned()),
            release: var("SENTRY_RELEASE")
                .unwrap_or_else(|| format!("conveyor@{}", env!("CARGO_PKG_VERSION"))),
            traces_sample_rate,
        }))
    }
}

/// The client options of a service: no default PII, every event scrubbed and tagged
/// with `service`. [`init`] adds Sentry's default integrations (panics among them).
pub fn client_options(service: &'static str, settings: &Settings) -> ClientOptions {
    let mut options = ClientOptions::new()
        .release(settings.release.clone())
        .environment(settings.environment.clone())
        .send_default_pii(false)
        .before_send(move |event| scrub_event(service, event));
    options.dsn = Some(settings.dsn.clone());
    if settings.traces_sample_rate > 0.0 {
        options = options.traces_sample_rate(settings.traces_sample_rate);
    }
    options
}

/// Keeps Sentry running: dropping it flushes pending events (up to 2 s) and stops the
/// client, so a binary holds it in `main` until the process ends.
#[must_use = "monitoring stops when the guard is dropped"]
pub struct Guard {
    _client: sentry::ClientInitGuard,
}

/// Set once Sentry runs; holds whether traces are sampled.
static ACTIVE: OnceLock<bool> = OnceLock::new();

/// Starts Sentry from the process environment, before the tracing subscriber is
/// installed (so [`layer`] finds it) and before any other thread starts.
pub fn init(service: &'static str, app_env: AppEnv) -> Result<Option<Guard>, MonitoringError> {
    init_from_lookup(service, app_env, |name| std::env::var(name).ok())
}

/// [`init`] from any variable source. `Ok(None)` without a DSN: nothing is started.
pub fn init_from_lookup(
    service: &'static str,
    app_env: AppEnv,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Guard>, MonitoringError> {
    let Some(settings) = Settings::from_lookup(app_env, lookup)? else {
        return Ok(None);
    };
    let client = sentry::init(client_options(service, &settings));
    // A second init in one process keeps the first layer setting; both clients are equal.
    let _ = ACTIVE.set(settings.traces_sample_rate > 0.0);
    Ok(Some(Guard { _client: client }))
}

/// The layer that feeds Sentry from `tracing`, for the process subscriber: `None`
/// (no cost at all) unless [`init`] started Sentry.
pub fn layer<S>() -> Option<MonitoringLayer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ACTIVE.get().map(|&traces| MonitoringLayer::new(traces))
}

/// Sentry's tracing layer, plus the span tags: while a span carrying `request_id`,
/// `job_id` or `queue` is entered, the thread's Sentry scope has them as tags, so any
/// event captured there — an error log, a panic — carries them.
pub struct MonitoringLayer<S> {
    sentry: SentryLayer<S>,
}

impl<S> MonitoringLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    /// `traces`: send the `http` and `job` spans as Sentry transactions.
    pub fn new(traces: bool) -> Self {
        let sentry = sentry::integrations::tracing::layer()
            .event_filter(event_filter)
            .span_filter(move |metadata| traces && TRACED_SPANS.contains(&metadata.name()));
        MonitoringLayer { sentry }
    }
}

/// Errors are events, warnings and infos breadcrumbs — except the log line of a
/// caught panic: the panic hook already reported that panic, with its stack trace.
fn event_filter(metadata: &Metadata<'_>) -> EventFilter {
    if metadata.fields().field("panic").is_some() {
        EventFilter::Breadcrumb
    } else {
        default_event_filter(metadata)
    }
}

thread_local! {
    /// The scopes pushed by entered spans on this thread, innermost last.
    static SCOPE_GUARDS: RefCell<Vec<(span::Id, HubSwitchGuard)>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for MonitoringLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.sentry.on_new_span(attrs, id, ctx.clone());
        let mut tags = ScopeTags::default();
        attrs.record(&mut tags);
        if let Some(span) = ctx.span(id)
            && !tags.0.is_empty()
        {
            span.extensions_mut().insert(tags);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.sentry.on_record(id, values, ctx.clone());
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<ScopeTags>() {
            Some(tags) => values.record(tags),
            None => {
                let mut tags = ScopeTags::default();
                values.record(&mut tags);
                if !tags.0.is_empty() {
                    extensions.insert(tags);
                }
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.sentry.on_event(event, ctx);
    }

    // Sentry's layer switches the thread's hub first (to its span), then this one on
    // top of it; `on_exit` undoes them in the reverse order, which two separate
    // layers could not (tracing exits layers in the order it entered them).
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.sentry.on_enter(id, ctx.clone());
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(tags) = extensions.get::<ScopeTags>() else {
            return;
        };
        let hub = Arc::new(Hub::new_from_top(Hub::current()));
        hub.configure_scope(|scope| {
            for (key, value) in &tags.0 {
                scope.set_tag(key, value);
            }
        });
        let guard = HubSwitchGuard::new(hub);
        SCOPE_GUARDS.with(|guards| guards.borrow_mut().push((id.clone(), guard)));
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        let guard = SCOPE_GUARDS.with(|guards| {
            let mut guards = guards.borrow_mut();
            let index = guards.iter().rposition(|(entered, _)| entered == id)?;
            Some(guards.remove(index))
        });
        drop(guard);
        self.sentry.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.sentry.on_close(id, ctx);
    }
}

/// The [`TAG_FIELDS`] of a span.
#[derive(Default)]
struct ScopeTags(Vec<(&'static str, String)>);

impl ScopeTags {
    fn set(&mut self, field: &Field, value: String) {
        // Sentry refuses tag values past 200 characters; ids are far shorter.
        if value.is_empty() || value.len() > 200 {
            return;
        }
        match self.0.iter_mut().find(|(name, _)| *name == field.name()) {
            Some((_, old)) => *old = value,
            None => self.0.push((field.name(), value)),
        }
    }
}

impl Visit for ScopeTags {
    fn record_str(&mut self, field: &Field, value: &str) {
        if TAG_FIELDS.contains(&field.name()) {
            self.set(field, value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if TAG_FIELDS.contains(&field.name()) {
            self.set(field, format!("{value:?}"));
        }
    }
}

/// `before_send`: no user, no request body, cookies, query or private headers, no
/// email address, bearer token or JWT in any string, no value under a sensitive key.
/// An event that cannot be scrubbed is dropped, never sent as it was.
fn scrub_event(service: &'static str, mut event: Event<'static>) -> Option<Event<'static>> {
    event.user = None;
    if let Some(request) = event.request.as_mut() {
        strip_request(request);
    }
    event.tags.insert("service".to_owned(), service.to_owned());
    scrub_serialized(event)
}

fn strip_request(request: &mut Request) {
    request.data = None;
    request.cookies = None;
    request.query_string = None;
    request.env.clear();
    request
        .headers
        .retain(|name, _| SAFE_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
    if let Some(url) = request.url.as_mut() {
        url.set_query(None);
        url.set_fragment(None);
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
}

/// Scrubs every string of `item` as it would be sent.
fn scrub_serialized<T: Serialize + DeserializeOwned>(item: T) -> Option<T> {
    let mut value = serde_json::to_value(&item).ok()?;
    scrub_value(&mut value);
    serde_json::from_value(value).ok()
}

fn scrub_value(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Cow::Owned(clean) = scrub_text(text) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_value),
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    Value::String(text) if is_sensitive_key(key) => REDACTED.clone_into(text),
                    _ => scrub_value(item),
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_KEYS
        .iter()
        .any(|sensitive| key.contains(sensitive))
}

/// `text` without email addresses, bearer tokens or JWTs.
pub fn scrub_text(text: &str) -> Cow<'_, str> {
    let suspicious =
        text.contains('@') || text.contains("eyJ") || text.to_ascii_lowercase().contains("bearer");
    if !suspicious {
        return Cow::Borrowed(text);
    }
    Cow::Owned(redact_jwts(&redact_bearer_tokens(&redact_emails(text))))
}

fn redact_emails(text: &str) -> String {
    let is_local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-'".contains(&b) || b >= 0x80;
    let is_domain = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b >= 0x80;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices('@') {
        if at < copied {
            continue;
        }
        // Both ends fall next to an ASCII byte or at `copied`: char boundaries.
        let start = bytes[copied..at]
            .iter()
            .rposition(|&b| !is_local(b))
            .map_or(copied, |i| copied + i + 1);
        let end = bytes[at + 1..]
            .iter()
            .position(|&b| !is_domain(b))
            .map_or(bytes.len(), |i| at + 1 + i);
        let domain = text[at + 1..end].trim_end_matches(['.', '-']);
        let is_domain_name =
            domain.contains('.') && domain.split('.').all(|label| !label.is_empty());
        if start == at || !is_domain_name {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str("[email]");
        copied = at + 1 + domain.len();
    }
    out.push_str(&text[copied..]);
    out
}

fn redact_bearer_tokens(text: &str) -> String {
    // ASCII lowercasing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, word) in lower.match_indices("bearer") {
        let after = at + word.len();
        if at < copied {
            continue;
        }
        let rest = &text[after..];
        let token_start = after + (rest.len() - rest.trim_start().len());
        let token_len = text[token_start..]
            .find(char::is_whitespace)
            .unwrap_or(text.len() - token_start);
        if token_start == after || token_len == 0 {
            continue;
        }
        out.push_str(&text[copied..token_start]);
        out.push_str(REDACTED);
        copied = token_start + token_len;
    }
    out.push_str(&text[copied..]);
    out
}

fn redact_jwts(text: &str) -> String {
    let is_token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices("eyJ") {
        if at < copied {
            continue;
        }
        let len = text[at..].find(|c| !is_token(c)).unwrap_or(text.len() - at);
        if text[at..at + len].matches('.').count() < 2 {
            continue;
        }
        out.push_str(&text[copied..at]);
        out.push_str("[jwt]");
        copied = at + len;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_redacted() {
        assert_eq!(
            scrub_text("550 <Alice.B+x@mail.example.co.uk>: no such user."),
            "550 <[email]>: no such user."
        );
        assert_eq!(scrub_text("to bob@example.com."), "to [email].");
        assert_eq!(scrub_text("jörg@exämple.de"), "[email]");
    }

    #[test]
    fn text_without_an_address_is_kept() {
        assert_eq!(
            scrub_text("a @ sign, user@localhost"),
            "a @ sign, user@localhost"
        );
        assert!(matches!(scrub_text("request failed"), Cow::Borrowed(_)));
    }

    #[test]
    fn bearer_tokens_and_jwts_are_redacted() {
        assert_eq!(
            scrub_text("Authorization: Bearer abc.DEF-123 sent"),
            "Authorization: Bearer [redacted] sent"
        );
        assert_eq!(scrub_text("token=eyJhbGc.eyJzdWI.c2ln;"), "token=[jwt];");
    }

    #[test]
    fn sensitive_keys_lose_their_string_values() {
        let mut value = serde_json::json!({
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "x-request-id": "r1"},
            "refresh_token": "opaque",
            "attempt": 3,
        });
        scrub_value(&mut value);
        assert_eq!(value["headers"]["Authorization"], REDACTED);
        assert_eq!(value["headers"]["x-request-id"], "r1");
        assert_eq!(value["refresh_token"], REDACTED);
        assert_eq!(value["attempt"], 3);
    }
}
