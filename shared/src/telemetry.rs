//! Logs and metrics: the `tracing` subscriber (pretty in development, JSON in
//! production, filtered by `RUST_LOG`) and the process-wide Prometheus recorder.
//! Every metric name Conveyor emits is declared in [`metric`], the one list the
//! dashboards and the book's metrics table (docs/src/reference/metrics.md) draw from.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;
use crate::domain::Role;
use crate::queue::QueueName;

/// Every metric Conveyor emits, by name.
pub mod metric {
    /// Counter: HTTP requests answered, by `method`, `route` (the matched route
    /// template, or `unmatched`) and `status`.
    pub const HTTP_REQUESTS_TOTAL: &str = "conveyor_http_requests_total";
    /// Histogram (seconds): HTTP request latency, by `method`, `route`, `status`.
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "conveyor_http_request_duration_seconds";
    /// Gauge: HTTP requests being served right now.
    pub const HTTP_REQUESTS_IN_FLIGHT: &str = "conveyor_http_requests_in_flight";
    /// Gauge: 1 when the dependency (`dependency` = postgres | redis) answered the
    /// last readiness check, 0 when it did not; by `service` (api | worker).
    pub const DEPENDENCY_UP: &str = "conveyor_dependency_up";
    /// Counter: jobs committed (outbox), by `queue`. Emitted by the api.
    pub const JOBS_ENQUEUED_TOTAL: &str = "conveyor_jobs_enqueued_total";
    /// Counter: job ids pushed to Redis by `source` (`request`, `dispatcher`,
    /// `reconciler`) and `queue`. Emitted by the api.
    pub const JOBS_DISPATCHED_TOTAL: &str = "conveyor_jobs_dispatched_total";
    /// Gauge: jobs committed but not yet pushed, as the last dispatcher round saw them.
    pub const DISPATCHER_BACKLOG: &str = "conveyor_dispatcher_backlog";
    /// Counter: jobs a worker started, by `queue`.
    pub const JOBS_STARTED_TOTAL: &str = "conveyor_jobs_started_total";
    /// Counter: attempts that ended, by `queue` and `outcome` (`succeeded`,
    /// `retried`, `dead`).
    pub const JOBS_FINISHED_TOTAL: &str = "conveyor_jobs_finished_total";
    /// Histogram (seconds): attempt duration, by `queue` and `outcome`.
    pub const JOB_DURATION_SECONDS: &str = "conveyor_job_duration_seconds";
    /// Counter: deliveries of a job that was not claimable (duplicates), by `queue`.
    pub const JOBS_DUPLICATE_TOTAL: &str = "conveyor_jobs_duplicate_total";
    /// Gauge: ids in Redis by `queue` and `state` (`ready`, `delayed`).
    pub const QUEUE_DEPTH: &str = "conveyor_queue_depth";
    /// Counter: finished requests (with their jobs) deleted past `RETENTION_DAYS`.
    pub const REQUESTS_PRUNED_TOTAL: &str = "conveyor_requests_pruned_total";
    /// Counter: files received by `POST /uploads`, by `outcome` (`accepted`,
    /// `duplicate`).
    pub const UPLOADS_TOTAL: &str = "conveyor_uploads_total";
    /// Counter: bytes of files accepted by `POST /uploads`.
    pub const UPLOAD_BYTES_TOTAL: &str = "conveyor_upload_bytes_total";
    /// Counter: scan verdicts, by `verdict` (`clean`, `infected`).
    pub const SCANS_TOTAL: &str = "conveyor_scans_total";
    /// Counter: scans that could not reach a verdict (scanner or storage unavailable).
    pub const SCAN_ERRORS_TOTAL: &str = "conveyor_scan_errors_total";
    /// Counter: bytes scanned.
    pub const SCANNED_BYTES_TOTAL: &str = "conveyor_scanned_bytes_total";
    /// Histogram: one scan (inspectors and clamd), by `verdict`.
    pub const SCAN_DURATION_SECONDS: &str = "conveyor_scan_duration_seconds";
    /// Counter: rules matched by infected verdicts, by `rule`.
    pub const SCAN_RULE_MATCHES_TOTAL: &str = "conveyor_scan_rule_matches_total";
    /// Counter: requests refused by the general rate limiter, by `group`.
    pub const RATE_LIMITED_TOTAL: &str = "conveyor_rate_limited_total";
    /// Counter: requests let through unchecked because Redis was unreachable, by `group`.
    pub const RATE_LIMIT_SKIPPED_TOTAL: &str = "conveyor_rate_limit_skipped_total";
    pub const DEPENDENCY_BREAKER_OPEN: &str = "conveyor_dependency_breaker_open";
    pub const QUEUE_BLOCKED: &str = "conveyor_queue_blocked";
    /// Counter: submissions refused by the message quota, by `role`.
    pub const MESSAGE_QUOTA_REFUSED_TOTAL: &str = "conveyor_message_quota_refused_total";
    /// Counter: account emails queued, by `kind` (`verification`, `notice`), and those
    /// not sent because the address had one lately (`kind="throttled"`).
    pub const ACCOUNT_EMAILS_TOTAL: &str = "conveyor_account_emails_total";
    /// Counter: password hashes and verifications refused because every hashing slot
    /// stayed taken for `PASSWORD_HASH_WAIT_MS` (`PasswordError::Busy`, answered 429).
    pub const PASSWORD_HASH_REJECTIONS_TOTAL: &str = "conveyor_password_hash_rejections_total";
    /// Counter: attempts that ran past their queue's timeout (`<QUEUE>_TIMEOUT_SECS`),
    /// by `queue`; each also counts in `conveyor_jobs_finished_total` as retried or dead.
    pub const JOBS_TIMED_OUT_TOTAL: &str = "conveyor_jobs_timed_out_total";
    /// Histogram (seconds): queue latency, from when a job became runnable (committed,
    /// or its retry fell due) to when a worker started it, by `queue`.
    pub const QUEUE_LATENCY_SECONDS: &str = "conveyor_queue_latency_seconds";
    /// Histogram: submissions committed in one transaction by the api's group commit.
    pub const INGEST_BATCH_SIZE: &str = "conveyor_ingest_batch_size";
    /// Gauge: jobs in PostgreSQL by `queue` and `state` (`queued`, `running`,
    /// `retrying`, `dead` — not discarded), sampled by one worker at a time (the holder
    /// of a Redis lease); 0 or absent on the others, so aggregate with `max` by queue.
    pub const QUEUE_JOBS: &str = "conveyor_queue_jobs";
    /// Gauge: age in seconds of the oldest queued job (by its creation), by `queue`
    /// (0: none); sampled with `conveyor_queue_jobs`.
    pub const QUEUE_OLDEST_AGE_SECONDS: &str = "conveyor_queue_oldest_age_seconds";
    /// Gauge: 1 while the queue is paused by an operator, by `queue`.
    pub const QUEUE_PAUSED: &str = "conveyor_queue_paused";
    /// Gauge: worker processes consuming the queue (live heartbeats), by `queue`;
    /// sampled with `conveyor_queue_jobs`.
    pub const WORKERS_ALIVE: &str = "conveyor_workers_alive";
    /// Gauge: 1 while this worker process's consumer of `queue` is running, 0 once
    /// it has stopped (a consumer that died while the process lives).
    pub const WORKER_CONSUMER_UP: &str = "conveyor_worker_consumer_up";
    /// Counter: email deliveries by `outcome` (`sent`, `deferred` — a transient SMTP
    /// failure, retried —, `rejected` — permanent —, `suppressed` — every recipient
    /// on the sender's suppression list, not sent — and `paced` — held back by its
    /// recipient domain's pace, run again later).
    pub const EMAILS_TOTAL: &str = "conveyor_emails_total";
    /// Counter: what happened to sent mail afterwards, by `kind` (`bounced`: a
    /// recipient refused for good, during the send or by a DSN; `complained`: an ARF
    /// report; `unsubscribed`: a one-click unsubscribe). Once per message and kind.
    pub const EMAIL_EVENTS_TOTAL: &str = "conveyor_email_events_total";
    /// Gauge: complaints per delivered message of each recent campaign (running or
    /// finished in the last 7 days), by `campaign` (the request id).
    pub const CAMPAIGN_COMPLAINT_RATIO: &str = "conveyor_campaign_complaint_ratio";
    /// Gauge: messages delivered by each recent campaign, by `campaign`.
    pub const CAMPAIGN_DELIVERED: &str = "conveyor_campaign_delivered";
    /// Counter: operator actions through the admin API or CLI, by `action`.
    pub const ADMIN_ACTIONS_TOTAL: &str = "conveyor_admin_actions_total";
    /// Gauge: HTTP connections the api listener holds open now.
    pub const HTTP_CONNECTIONS: &str = "conveyor_http_connections";
    /// Counter: connections the api closed because a deadline passed, by `reason`
    /// (`header_timeout`: no complete request head in time; `idle_timeout`: a
    /// kept-alive connection sent no new request in time).
    pub const HTTP_CONNECTIONS_TIMED_OUT_TOTAL: &str = "conveyor_http_connections_timed_out_total";
    /// Counter: accept errors of the api listener (EMFILE and the like), each
    /// followed by a short backoff.
    pub const HTTP_ACCEPT_ERRORS_TOTAL: &str = "conveyor_http_accept_errors_total";
    /// Counter: completion webhook attempts by `outcome`: `delivered` (2xx), `retried`
    /// (an error or non-2xx answer, tried again later), `dead` (the last attempt
    /// failed), `refused` (the URL or a redirect led to an address deliveries may not
    /// reach: dead at once).
    pub const WEBHOOK_DELIVERIES_TOTAL: &str = "conveyor_webhook_deliveries_total";
    /// Histogram (seconds): from a request's `finished_at` to the 2xx of its
    /// completion webhook (retries included).
    pub const WEBHOOK_DELIVERY_LATENCY_SECONDS: &str = "conveyor_webhook_delivery_latency_seconds";
    /// Gauge: always 1, labelled with `service` and `version`; tells which build runs.
    pub const BUILD_INFO: &str = "conveyor_build_info";
}

/// Installs the global `tracing` subscriber of `service` (`api`, `worker`): logs, the
/// Sentry layer when monitoring is on, and the OpenTelemetry layer when tracing is on
/// ([`crate::otel`]; then every JSON log line inside a span carries its `trace_id` and
/// `span_id`). Safe to call more than once (tests do); only the first call takes
/// effect.
pub fn init_tracing(format: LogFormat, service: &str) {
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Per span, only what the spans declare: no thread, source location or
    // busy/idle timings. Spans of sampled trees only ([`crate::otel::SampledFilter`]),
    // for the OpenTelemetry layer and the stamping of ids on JSON log lines alike: a
    // log event is a log line (carrying the trace's ids), not also a span event.
    let otel = crate::otel::tracer(service).map(|tracer| {
        let ids = matches!(format, LogFormat::Json).then_some(crate::otel::TraceIdsLayer);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .and_then(ids)
            .with_filter(crate::otel::SampledFilter::from_env())
    });
    // The spans written for traces only (target `conveyor_trace`: statements, Redis,
    // SMTP, clamd, storage, the webhook's POST, the enqueue) do not exist when tracing
    // is off, and are never a log line's context: a log line names its request or job.
    if otel.is_none()
        && let Ok(off) = format!("{}=off", crate::otel::TRACE_ONLY).parse()
    {
        filter = filter.add_directive(off);
    }
    let log_context = tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target() == crate::otel::TRACE_ONLY)
    });
    // Sentry (when SENTRY_DSN started it) sees the same events; nothing otherwise.
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::monitoring::layer())
        .with(otel);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonLogFields)
                    .event_format(crate::otel::WithTraceIds(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(false),
                    ))
                    .with_filter(log_context),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    // Colours only on a terminal (or with CLICOLOR_FORCE, which
                    // scripts/dev sets when its own output is one): a log file or a
                    // pipe gets plain text; NO_COLOR turns them off.
                    .with_ansi(colours())
                    .fmt_fields(PlainFields)
                    .with_filter(log_context),
            )
            .try_init(),
    };
    // Already installed (a second app in the same test process): keep the first.
    drop(result);
}

/// Whether the development log format writes ANSI colours: on a terminal, or with
/// `CLICOLOR_FORCE` set; never with `NO_COLOR` set (<https://no-color.org>).
fn colours() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    !set("NO_COLOR")
        && (set("CLICOLOR_FORCE") || std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

/// A span's fields on a JSON log line (as `tracing-subscriber`'s `JsonFields`), without
/// the dotted attributes written for the trace backend: a record of those alone (a
/// status code, a job's outcome) costs the log nothing.
struct JsonLogFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for JsonLogFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = JsonLogVisitor::default();
        fields.record(&mut visitor);
        let text = serde_json::to_string(&visitor.0).map_err(|_| std::fmt::Error)?;
        writer.write_str(&text)
    }

    fn add_fields(
        &self,
        current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut visitor = JsonLogVisitor::default();
        fields.record(&mut visitor);
        if visitor.0.is_empty() {
            return Ok(());
        }
        let mut all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&current.fields).unwrap_or_default();
        all.extend(visitor.0);
        current.fields = serde_json::to_string(&all).map_err(|_| std::fmt::Error)?;
        Ok(())
    }
}

#[derive(Default)]
struct JsonLogVisitor(serde_json::Map<String, serde_json::Value>);

impl JsonLogVisitor {
    fn keep(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        if !field.name().contains('.') {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl tracing::field::Visit for JsonLogVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.keep(field, value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.keep(field, value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.keep(field, value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.keep(field, value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.keep(field, value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !field.name().contains('.') {
            self.keep(field, format!("{value:?}").into());
        }
    }
}

/// The fields of a development log line: a span's or event's own fields, without the
/// dotted attributes (`otel.name`, `http.route`, `messaging.*`…) that are written for
/// the trace backend and would repeat what the line already says.
struct PlainFields;

impl<'writer> tracing_subscriber::fmt::FormatFields<'writer> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: tracing_subscriber::fmt::format::Writer<'writer>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.contains('.') {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if name == "message" {
            write!(self.writer, "{separator}{value:?}")
        } else {
            write!(self.writer, "{separator}{name}={value:?}")
        };
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Metrics macros
/// called before this are lost, so binaries call it first thing.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which Conveyor never
            // does; the handle still renders what this recorder sees.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
}

/// The exporter's settings: histogram buckets by metric.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .and_then(|builder| {
            // Waits range from a free worker (milliseconds) to a paused queue or a
            // backlog (an hour and more).
            builder.set_buckets_for_metric(
                Matcher::Full(metric::QUEUE_LATENCY_SECONDS.to_owned()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0,
                ],
            )
        })
        .and_then(|builder| {
            // One (an idle api) to the group commit's most, 64.
            builder.set_buckets_for_metric(
                Matcher::Full(metric::INGEST_BATCH_SIZE.to_owned()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )
        })
        .and_then(|builder| {
            // From milliseconds (delivered at once) to hours (retried with backoff).
            builder.set_buckets_for_metric(
                Matcher::Full(metric::WEBHOOK_DELIVERY_LATENCY_SECONDS.to_owned()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0, 14400.0,
                ],
            )
        })
        .unwrap_or_else(|_| unreachable!("bucket lists are non-empty"))
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(metric::HTTP_REQUESTS_TOTAL, "HTTP requests answered");
    describe_histogram!(
        metric::HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency"
    );
    describe_gauge!(
        metric::HTTP_CONNECTIONS,
        "Connections the api listener holds open"
    );
    describe_counter!(
        metric::HTTP_CONNECTIONS_TIMED_OUT_TOTAL,
        "Connections closed past their header-read or idle deadline"
    );
    describe_counter!(
        metric::HTTP_ACCEPT_ERRORS_TOTAL,
        "Accept errors of the api listener (each followed by a backoff)"
    );
    describe_gauge!(
        metric::HTTP_REQUESTS_IN_FLIGHT,
        "HTTP requests being served"
    );
    describe_gauge!(
        metric::DEPENDENCY_UP,
        "1 if the dependency answered the last readiness check"
    );
    describe_gauge!(
        metric::QUEUE_BLOCKED,
        "1 while this worker takes no job of the queue: a dependency it needs is down"
    );
    describe_gauge!(
        metric::DEPENDENCY_BREAKER_OPEN,
        "1 while requests that need the dependency are answered 503 at once"
    );
    describe_gauge!(metric::BUILD_INFO, "Build information");
    describe_counter!(metric::JOBS_ENQUEUED_TOTAL, "Jobs committed");
    describe_histogram!(
        metric::INGEST_BATCH_SIZE,
        "Submissions committed together by the api's group commit"
    );
    describe_counter!(metric::JOBS_DISPATCHED_TOTAL, "Job ids pushed to Redis");
    describe_gauge!(metric::DISPATCHER_BACKLOG, "Jobs committed but not pushed");
    describe_counter!(metric::JOBS_STARTED_TOTAL, "Jobs started");
    describe_counter!(
        metric::REQUESTS_PRUNED_TOTAL,
        "Finished requests deleted past retention"
    );
    describe_counter!(metric::JOBS_FINISHED_TOTAL, "Job attempts that ended");
    describe_counter!(
        metric::WEBHOOK_DELIVERIES_TOTAL,
        "Completion webhook attempts by outcome"
    );
    describe_histogram!(
        metric::WEBHOOK_DELIVERY_LATENCY_SECONDS,
        Unit::Seconds,
        "From a request's end to its completion webhook's 2xx"
    );
    describe_histogram!(
        metric::JOB_DURATION_SECONDS,
        Unit::Seconds,
        "Job attempt duration"
    );
    describe_counter!(
        metric::JOBS_DUPLICATE_TOTAL,
        "Duplicate deliveries acknowledged as no-ops"
    );
    describe_gauge!(metric::QUEUE_DEPTH, "Job ids in Redis");
    describe_counter!(metric::UPLOADS_TOTAL, "Files received by POST /uploads");
    describe_counter!(
        metric::RATE_LIMITED_TOTAL,
        "Requests refused by the rate limiter"
    );
    describe_counter!(
        metric::RATE_LIMIT_SKIPPED_TOTAL,
        "Requests not rate-limited because Redis was unreachable"
    );
    describe_counter!(
        metric::MESSAGE_QUOTA_REFUSED_TOTAL,
        "Submissions refused by the per-account message quota"
    );
    describe_counter!(
        metric::ACCOUNT_EMAILS_TOTAL,
        "Account emails (verification links, registration notices) queued or throttled"
    );
    describe_counter!(
        metric::PASSWORD_HASH_REJECTIONS_TOTAL,
        "Password hashes and verifications refused: hashing saturated"
    );
    describe_counter!(
        metric::UPLOAD_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of accepted uploads"
    );
    describe_counter!(metric::SCANS_TOTAL, "Scan verdicts");
    describe_counter!(
        metric::SCAN_ERRORS_TOTAL,
        "Scans that reached no verdict (retried)"
    );
    describe_counter!(metric::SCANNED_BYTES_TOTAL, Unit::Bytes, "Bytes scanned");
    describe_histogram!(
        metric::SCAN_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one scan"
    );
    describe_counter!(
        metric::SCAN_RULE_MATCHES_TOTAL,
        "Rules matched by infected verdicts"
    );
    describe_counter!(
        metric::JOBS_TIMED_OUT_TOTAL,
        "Job attempts that ran past their queue's timeout"
    );
    describe_histogram!(
        metric::QUEUE_LATENCY_SECONDS,
        Unit::Seconds,
        "Wait from when a job became runnable to when a worker started it"
    );
    describe_gauge!(
        metric::QUEUE_JOBS,
        "Jobs in PostgreSQL by state (sampled by one worker at a time; aggregate with max)"
    );
    describe_gauge!(
        metric::QUEUE_OLDEST_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest queued job (sampled by one worker at a time)"
    );
    describe_gauge!(
        metric::QUEUE_PAUSED,
        "1 while an operator has paused the queue"
    );
    describe_gauge!(
        metric::WORKERS_ALIVE,
        "Worker processes consuming the queue (sampled by one worker at a time)"
    );
    describe_gauge!(
        metric::WORKER_CONSUMER_UP,
        "1 while this worker process's consumer of the queue runs"
    );
    describe_counter!(metric::EMAILS_TOTAL, "Email delivery attempts by outcome");
    describe_counter!(
        metric::EMAIL_EVENTS_TOTAL,
        "Bounces, complaints and unsubscribes of sent mail, by kind"
    );
    describe_gauge!(
        metric::CAMPAIGN_COMPLAINT_RATIO,
        "Complaints per delivered message of each recent campaign"
    );
    describe_gauge!(
        metric::CAMPAIGN_DELIVERED,
        "Messages delivered by each recent campaign"
    );
    describe_counter!(
        metric::ADMIN_ACTIONS_TOTAL,
        "Operator actions through the admin API or CLI"
    );
}

/// Label values the zero registrations enumerate, as the code that emits each
/// metric spells them.
pub mod label {
    /// `outcome` of `conveyor_jobs_finished_total` and `conveyor_job_duration_seconds`.
    pub const JOB_OUTCOMES: [&str; 5] = ["succeeded", "retried", "dead", "suppressed", "deferred"];
    /// `source` of `conveyor_jobs_dispatched_total`.
    pub const DISPATCH_SOURCES: [&str; 3] = ["request", "dispatcher", "reconciler"];
    /// `outcome` of `conveyor_emails_total`.
    pub const EMAIL_OUTCOMES: [&str; 6] = [
        "sent",
        "deferred",
        "rejected",
        "suppressed",
        "paced",
        "capped",
    ];
    /// `kind` of `conveyor_email_events_total`.
    pub const EMAIL_EVENT_KINDS: [&str; 3] = ["bounced", "complained", "unsubscribed"];
    /// `verdict` of `conveyor_scans_total` and `conveyor_scan_duration_seconds`.
    pub const SCAN_VERDICTS: [&str; 2] = ["clean", "infected"];
    /// `group` of the rate limiter's counters (the api's `rate_limit::Group` names).
    /// The rate limiter's route groups, and `uploads` (uploads in flight per account).
    pub const RATE_LIMIT_GROUPS: [&str; 4] = ["auth", "submit", "read", "uploads"];
    /// `outcome` of `conveyor_uploads_total`.
    pub const UPLOAD_OUTCOMES: [&str; 2] = ["accepted", "duplicate"];
    /// `kind` of `conveyor_account_emails_total`.
    pub const ACCOUNT_EMAIL_KINDS: [&str; 3] = ["verification", "notice", "throttled"];
    /// `outcome` of `conveyor_webhook_deliveries_total`.
    pub const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "retried", "dead", "refused"];
    /// `action` of `conveyor_admin_actions_total`.
    pub const ADMIN_ACTIONS: [&str; 10] = [
        "retry",
        "bulk_retry",
        "discard",
        "pause",
        "resume",
        "canary",
        "role_change",
        "rescan_all",
        "rescan",
        "unsuppress",
    ];
}

/// Registers at zero every counter and histogram series of the api that dashboards
/// and alerts read, for every queue and label value, so that `rate()` and
/// `increase()` see the first event (a series that appears at its first increment
/// hides that increment). HTTP series are not enumerable (route × status) and appear
/// with their first request. Call once the recorder is installed ([`prometheus`]).
pub fn register_api_metrics() {
    use metrics::counter;
    for &queue in QueueName::ALL {
        let queue = queue.as_str();
        counter!(metric::JOBS_ENQUEUED_TOTAL, "queue" => queue).increment(0);
        for source in label::DISPATCH_SOURCES {
            counter!(metric::JOBS_DISPATCHED_TOTAL, "queue" => queue, "source" => source)
                .increment(0);
        }
    }
    for group in label::RATE_LIMIT_GROUPS {
        counter!(metric::RATE_LIMITED_TOTAL, "group" => group).increment(0);
        counter!(metric::RATE_LIMIT_SKIPPED_TOTAL, "group" => group).increment(0);
    }
    for dependency in ["postgres", "redis"] {
        metrics::gauge!(metric::DEPENDENCY_BREAKER_OPEN, "service" => "api", "dependency" => dependency)
            .set(0.0);
    }
    for role in Role::ALL {
        counter!(metric::MESSAGE_QUOTA_REFUSED_TOTAL, "role" => role.as_str()).increment(0);
    }
    for action in label::ADMIN_ACTIONS {
        counter!(metric::ADMIN_ACTIONS_TOTAL, "action" => action).increment(0);
    }
    for outcome in label::UPLOAD_OUTCOMES {
        counter!(metric::UPLOADS_TOTAL, "outcome" => outcome).increment(0);
    }
    counter!(metric::UPLOAD_BYTES_TOTAL).increment(0);
    for kind in label::ACCOUNT_EMAIL_KINDS {
        counter!(metric::ACCOUNT_EMAILS_TOTAL, "kind" => kind).increment(0);
    }
    counter!(metric::PASSWORD_HASH_REJECTIONS_TOTAL).increment(0);
    for kind in label::EMAIL_EVENT_KINDS {
        counter!(metric::EMAIL_EVENTS_TOTAL, "kind" => kind).increment(0);
    }
    for reason in ["header_timeout", "idle_timeout"] {
        counter!(metric::HTTP_CONNECTIONS_TIMED_OUT_TOTAL, "reason" => reason).increment(0);
    }
    counter!(metric::HTTP_ACCEPT_ERRORS_TOTAL).increment(0);
    metrics::gauge!(metric::HTTP_CONNECTIONS).set(0.0);
}

/// Registers at zero every counter and histogram series of the worker that
/// dashboards and alerts read, for every queue and label value (see
/// [`register_api_metrics`]). Labels are registered in the order the emitting code
/// uses, so the rendered series read the same before and after the first event.
pub fn register_worker_metrics() {
    use metrics::{counter, histogram};
    metrics::gauge!(metric::DEPENDENCY_BREAKER_OPEN, "service" => "worker", "dependency" => "redis")
        .set(0.0);
    // The dependencies a handler may block its queue on (`Outcome::Blocked`).
    for (queue, dependency) in [
        ("emails", "smtp"),
        ("scans", "clamd"),
        ("scans", "storage"),
        ("uploads", "storage"),
    ] {
        metrics::gauge!(metric::QUEUE_BLOCKED, "queue" => queue, "dependency" => dependency)
            .set(0.0);
    }
    for &queue in QueueName::ALL {
        let queue = queue.as_str();
        counter!(metric::JOBS_STARTED_TOTAL, "queue" => queue).increment(0);
        counter!(metric::JOBS_TIMED_OUT_TOTAL, "queue" => queue).increment(0);
        counter!(metric::JOBS_DUPLICATE_TOTAL, "queue" => queue).increment(0);
        registered(histogram!(metric::QUEUE_LATENCY_SECONDS, "queue" => queue));
        for outcome in label::JOB_OUTCOMES {
            counter!(metric::JOBS_FINISHED_TOTAL, "queue" => queue, "outcome" => outcome)
                .increment(0);
            registered(
                histogram!(metric::JOB_DURATION_SECONDS, "queue" => queue, "outcome" => outcome),
            );
        }
    }
    // The uploads handler commits and pushes the scan of each stored file.
    let scans = QueueName::Scans.as_str();
    counter!(metric::JOBS_ENQUEUED_TOTAL, "queue" => scans).increment(0);
    counter!(metric::JOBS_DISPATCHED_TOTAL, "queue" => scans, "source" => "request").increment(0);
    for outcome in label::EMAIL_OUTCOMES {
        counter!(metric::EMAILS_TOTAL, "outcome" => outcome).increment(0);
    }
    counter!(metric::EMAIL_EVENTS_TOTAL, "kind" => "bounced").increment(0);
    for verdict in label::SCAN_VERDICTS {
        counter!(metric::SCANS_TOTAL, "verdict" => verdict).increment(0);
        registered(histogram!(metric::SCAN_DURATION_SECONDS, "verdict" => verdict));
    }
    counter!(metric::SCAN_ERRORS_TOTAL).increment(0);
    counter!(metric::SCANNED_BYTES_TOTAL).increment(0);
    counter!(metric::REQUESTS_PRUNED_TOTAL).increment(0);
    for outcome in label::WEBHOOK_OUTCOMES {
        counter!(metric::WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(0);
    }
    registered(histogram!(metric::WEBHOOK_DELIVERY_LATENCY_SECONDS));
}

/// A histogram's handle, taken only to register its series: from then on the
/// exporter renders it, every bucket at zero until the first sample.
fn registered(histogram: metrics::Histogram) {
    drop(histogram);
}

/// How often [`spawn_process_metrics`] refreshes the `process_*` series.
pub const PROCESS_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// The standard Prometheus process metrics from `metrics-process`
/// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`, `process_threads`, virtual
/// memory), collected now and then every [`PROCESS_METRICS_INTERVAL`] for as long as
/// the async runtime runs. `process_cpu_seconds_total` counts whole seconds: the
/// crate records it through a `metrics` counter, which holds integers.
pub fn spawn_process_metrics() {
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector.collect();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PROCESS_METRICS_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            collector.collect();
        }
    });
}

/// Records the `conveyor_build_info` gauge for a service.
/// The process's service (`api`, `worker`), once [`record_build_info`] named it.
static SERVICE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The service this process named in [`record_build_info`] (`unnamed` before; tests).
pub fn service() -> &'static str {
    SERVICE.get().copied().unwrap_or("unnamed")
}

pub fn record_build_info(service: &'static str) {
    let _ = SERVICE.set(service);
    metrics::gauge!(metric::BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a fresh process's `/metrics` shows after `register` and nothing else.
    fn rendered(register: fn()) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, register);
        handle.render()
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            kept.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_log_line_names_its_span_without_the_attributes_written_for_traces() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonLogFields)
                .event_format(
                    tracing_subscriber::fmt::format()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false),
                )
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "job",
                queue = "emails",
                request_id = tracing::field::Empty,
                attempt = 1u64,
                otel.name = "process emails",
                conveyor.job.outcome = tracing::field::Empty,
            );
            span.record("conveyor.job.outcome", "succeeded");
            span.record("request_id", "r-1");
            let _entered = span.enter();
            tracing::info!(elapsed_ms = 3u64, "job succeeded");
        });
        let text =
            String::from_utf8_lossy(&out.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(
            line["span"],
            serde_json::json!({"name": "job", "queue": "emails", "attempt": 1, "request_id": "r-1"}),
            "{text}"
        );
        assert_eq!(line["message"], "job succeeded");
        assert_eq!(line["elapsed_ms"], 3);
    }

    #[test]
    fn a_development_log_line_leaves_out_the_attributes_written_for_traces() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_ansi(false)
                .fmt_fields(PlainFields)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "http",
                method = "POST",
                otel.name = "POST /api/v1/emails",
                otel.kind = "server",
                http.route = "/api/v1/emails",
            );
            let _entered = span.enter();
            tracing::info!(status = 202, "finished");
        });
        let text =
            String::from_utf8_lossy(&out.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        // The compact format: the span's name, the event, then the span's fields.
        assert!(
            text.contains("http: shared::telemetry::tests: finished status=202 method=\"POST\""),
            "{text}"
        );
        assert!(!text.contains("otel."), "{text}");
        assert!(!text.contains("http.route"), "{text}");
    }

    #[test]
    fn a_fresh_worker_shows_every_job_outcome_of_every_queue_at_zero() {
        let text = rendered(register_worker_metrics);
        for &queue in QueueName::ALL {
            let q = queue.as_str();
            for outcome in label::JOB_OUTCOMES {
                let line =
                    format!(r#"conveyor_jobs_finished_total{{queue="{q}",outcome="{outcome}"}} 0"#);
                assert!(has_line(&text, &line), "{line} missing from\n{text}");
                let count = format!(
                    r#"conveyor_job_duration_seconds_count{{queue="{q}",outcome="{outcome}"}} 0"#
                );
                assert!(has_line(&text, &count), "{count} missing");
            }
            for line in [
                format!(r#"conveyor_jobs_started_total{{queue="{q}"}} 0"#),
                format!(r#"conveyor_jobs_timed_out_total{{queue="{q}"}} 0"#),
                format!(r#"conveyor_jobs_duplicate_total{{queue="{q}"}} 0"#),
                format!(r#"conveyor_queue_latency_seconds_bucket{{queue="{q}",le="3600"}} 0"#),
                format!(r#"conveyor_queue_latency_seconds_count{{queue="{q}"}} 0"#),
            ] {
                assert!(has_line(&text, &line), "{line} missing from\n{text}");
            }
        }
        for line in [
            r#"conveyor_emails_total{outcome="deferred"} 0"#,
            r#"conveyor_scans_total{verdict="infected"} 0"#,
            r#"conveyor_scan_duration_seconds_bucket{verdict="clean",le="+Inf"} 0"#,
            r#"conveyor_jobs_enqueued_total{queue="scans"} 0"#,
        ] {
            assert!(has_line(&text, line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_fresh_api_shows_every_enqueue_rejection_and_admin_action_at_zero() {
        let text = rendered(register_api_metrics);
        for &queue in QueueName::ALL {
            let q = queue.as_str();
            let line = format!(r#"conveyor_jobs_enqueued_total{{queue="{q}"}} 0"#);
            assert!(has_line(&text, &line), "{line} missing from\n{text}");
            for source in label::DISPATCH_SOURCES {
                let line =
                    format!(r#"conveyor_jobs_dispatched_total{{queue="{q}",source="{source}"}} 0"#);
                assert!(has_line(&text, &line), "{line} missing");
            }
        }
        for action in label::ADMIN_ACTIONS {
            let line = format!(r#"conveyor_admin_actions_total{{action="{action}"}} 0"#);
            assert!(has_line(&text, &line), "{line} missing");
        }
        for role in Role::ALL {
            let line = format!(
                r#"conveyor_message_quota_refused_total{{role="{}"}} 0"#,
                role.as_str()
            );
            assert!(has_line(&text, &line), "{line} missing");
        }
        for line in [
            r#"conveyor_rate_limited_total{group="submit"} 0"#,
            r#"conveyor_uploads_total{outcome="accepted"} 0"#,
        ] {
            assert!(has_line(&text, line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn registering_twice_keeps_what_was_counted() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            register_worker_metrics();
            metrics::counter!(metric::JOBS_FINISHED_TOTAL, "queue" => "emails", "outcome" => "dead")
                .increment(1);
            register_worker_metrics();
        });
        let text = handle.render();
        let line = r#"conveyor_jobs_finished_total{queue="emails",outcome="dead"} 1"#;
        assert!(has_line(&text, line), "{line} missing from\n{text}");
    }
}
