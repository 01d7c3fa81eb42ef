//! Logs and metrics: the `tracing` subscriber (pretty in development, JSON in
//! production, filtered by `RUST_LOG`) and the process-wide Prometheus recorder.
//! Every metric name Conveyor emits is declared in [`metric`], the one list the
//! dashboards and the README draw from.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

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
    /// Gauge: jobs in PostgreSQL by `queue` and `state` (`queued`, `running`,
    /// `retrying`, `dead`), sampled by one process at a time (a Redis lease).
    pub const QUEUE_JOBS: &str = "conveyor_queue_jobs";
    /// Gauge: age in seconds of the oldest runnable queued job, by `queue` (0: none).
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
    /// failure, retried — and `rejected` — permanent).
    pub const EMAILS_TOTAL: &str = "conveyor_emails_total";
    /// Counter: operator actions through the admin API or CLI, by `action`.
    pub const ADMIN_ACTIONS_TOTAL: &str = "conveyor_admin_actions_total";
    /// Gauge: always 1, labelled with `service` and `version`; tells which build runs.
    pub const BUILD_INFO: &str = "conveyor_build_info";
}

/// Installs the global `tracing` subscriber. Safe to call more than once (tests do);
/// only the first call takes effect.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init(),
    };
    // Already installed (a second app in the same test process): keep the first.
    drop(result);
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Metrics macros
/// called before this are lost, so binaries call it first thing.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ],
                )
                .unwrap_or_else(|_| unreachable!("bucket list is non-empty"));
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, which Conveyor never
            // does; the handle still renders what this recorder sees.
            let _ = metrics::set_global_recorder(recorder);
            describe_metrics();
            handle
        })
        .clone()
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
        metric::HTTP_REQUESTS_IN_FLIGHT,
        "HTTP requests being served"
    );
    describe_gauge!(
        metric::DEPENDENCY_UP,
        "1 if the dependency answered the last readiness check"
    );
    describe_gauge!(metric::BUILD_INFO, "Build information");
    describe_counter!(metric::JOBS_ENQUEUED_TOTAL, "Jobs committed");
    describe_counter!(metric::JOBS_DISPATCHED_TOTAL, "Job ids pushed to Redis");
    describe_gauge!(metric::DISPATCHER_BACKLOG, "Jobs committed but not pushed");
    describe_counter!(metric::JOBS_STARTED_TOTAL, "Jobs started");
    describe_counter!(
        metric::REQUESTS_PRUNED_TOTAL,
        "Finished requests deleted past retention"
    );
    describe_counter!(metric::JOBS_FINISHED_TOTAL, "Job attempts that ended");
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
}

/// Records the `conveyor_build_info` gauge for a service.
pub fn record_build_info(service: &'static str) {
    metrics::gauge!(metric::BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}
