//! The executor: runs a queue's handler on a claimed job with the queue's timeout,
//! turns a panic or a timeout into a retry with its message, decides retry or dead
//! from the attempts left and the queue's backoff, and reports the verdict to the
//! completer. The job's slot is freed once the verdict is handed to the completer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::Instrument as _;

use futures::FutureExt as _;
use shared::config::QueueSettings;
use shared::db::jobs::ClaimedJob;
use shared::queue::QueueName;
use shared::telemetry::metric;
use time::OffsetDateTime;

use crate::completer::{Recorder, Report, Verdict};
use crate::gate::Gate;
use crate::handler::{Handler, Outcome};
use crate::producer::Job;

pub struct Executor<H> {
    pub queue: QueueName,
    pub handler: Arc<H>,
    pub settings: QueueSettings,
    pub recorder: Recorder,
    /// Closed while a dependency of the queue is down (`Outcome::Blocked`).
    pub gate: Gate,
}

/// The consumer span of one attempt (OpenTelemetry's messaging conventions: `process`
/// from the queue). The first attempt is a child of the span that enqueued the job; a
/// later one starts a trace of its own linked to it, so a job retried for hours does
/// not make one trace hours long.
fn job_span(row: &ClaimedJob) -> tracing::Span {
    let queue = row.queue.as_str();
    // A root of its own: its parent is the enqueue's span or nothing, never whatever
    // span the runtime's task happens to be in.
    // Recorded as its enqueue was (a retry too: it follows the trace it links to).
    if !shared::otel::on() {
        // The log line's context: no attributes for a trace that is not there.
        return tracing::info_span!(
            parent: None,
            "job",
            queue,
            job_id = %row.id,
            request_id = row.request_id.map(tracing::field::display),
            attempt = row.attempt,
        );
    }
    let make = || {
        tracing::info_span!(
            parent: None,
            "job",
            queue,
            job_id = %row.id,
            request_id = row.request_id.map(tracing::field::display),
            attempt = row.attempt,
            otel.name = %format_args!("process {queue}"),
            otel.kind = "consumer",
            messaging.system = "conveyor",
            messaging.operation.type = "process",
            messaging.destination.name = queue,
            messaging.message.id = %row.id,
            conveyor.job.attempt = row.attempt,
            conveyor.job.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        )
    };
    let span = shared::otel::root_span(row.trace_context.as_deref(), make);
    if let Some(enqueued) = &row.trace_context {
        if row.attempt <= 1 {
            shared::otel::set_parent(&span, enqueued);
        } else {
            shared::otel::add_link(&span, enqueued);
        }
    }
    span
}

impl<H: Handler> Executor<H> {
    /// Runs one job and hands its verdict to the completer.
    pub async fn run(&self, job: Job) {
        let started = Instant::now();
        let row = &job.row;
        let queue = self.queue.as_str();
        metrics::counter!(metric::JOBS_STARTED_TOTAL, "queue" => queue).increment(1);
        metrics::histogram!(metric::QUEUE_LATENCY_SECONDS, "queue" => queue)
            .record(waited(row, OffsetDateTime::now_utc()));
        let span = job_span(row);
        // In the span, so the handler's logs (and a panic reported to Sentry) carry the
        // job's id, queue and request id.
        let (outcome, follow_ups) = self.attempt(row).instrument(span.clone()).await.split();
        // A job that follows this one continues its trace (upload → scan → webhook).
        let follow_ups = if follow_ups.is_empty() {
            follow_ups
        } else {
            let traced = shared::otel::traceparent_of(&span);
            follow_ups
                .into_iter()
                .map(|job| job.traced(traced.clone()))
                .collect()
        };
        if let Outcome::Blocked { dependency, .. } = &outcome {
            let (handler, dependency) = (self.handler.clone(), *dependency);
            self.gate.block(dependency, move || {
                let handler = handler.clone();
                async move { handler.probe(dependency).await }
            });
        }
        let verdict = decide(outcome, row, &self.settings, SystemTime::now());
        let (label, error) = match &verdict {
            Verdict::Succeeded => ("succeeded", None),
            Verdict::Retry { error, .. } => ("retry", Some(error)),
            Verdict::Dead { error } => ("dead", Some(error)),
            Verdict::Suppressed => ("suppressed", None),
            Verdict::Deferred { .. } => ("deferred", None),
        };
        if shared::otel::on() {
            span.record("conveyor.job.outcome", label);
        }
        if let Some(error) = error.filter(|_| shared::otel::on()) {
            // An error may quote an address (an SMTP reply): not into the trace.
            let message = shared::domain::email::redact_addresses(error);
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", message.as_str());
        }
        span.in_scope(|| match &verdict {
            // Periodic chores (a sample every 5 s) log their successes at debug: an
            // operator's log is about the work clients asked for. Failures log as any.
            Verdict::Succeeded if row.queue == QueueName::Chores => tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "job succeeded"
            ),
            Verdict::Succeeded => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "job succeeded"
            ),
            Verdict::Retry { error, .. } => {
                tracing::warn!(error = %error, "job failed; will retry")
            }
            Verdict::Dead { error } => tracing::warn!(error = %error, "job failed for good"),
            Verdict::Suppressed => tracing::info!("job suppressed: every recipient is suppressed"),
            Verdict::Deferred { reason, .. } => tracing::debug!(reason = %reason, "job deferred"),
        });
        self.recorder
            .record(
                Report::new(self.queue, row.id, row.request_id, verdict, started)
                    .in_lane(row.lane())
                    .followed_by(follow_ups),
            )
            .await;
        drop(job);
    }

    /// The handler's outcome; a payload that is not the queue's job kind is dead, a
    /// panic or the timeout becomes a retry.
    pub async fn attempt(&self, job: &ClaimedJob) -> Outcome {
        let payload = match serde_json::from_value::<H::Job>(job.payload.clone()) {
            Ok(payload) => payload,
            Err(err) => return Outcome::Dead(format!("unreadable payload: {err}")),
        };
        let timeout = self.settings.timeout;
        let guarded = AssertUnwindSafe(self.handler.handle(job, payload)).catch_unwind();
        match tokio::time::timeout(timeout, guarded).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => {
                Outcome::Retry(format!("the handler panicked: {}", panic_message(&*panic)))
            }
            Err(_) => {
                metrics::counter!(metric::JOBS_TIMED_OUT_TOTAL, "queue" => self.queue.as_str())
                    .increment(1);
                Outcome::Retry(format!(
                    "the job timed out after {} s",
                    timeout.as_secs_f64()
                ))
            }
        }
    }
}

/// Seconds `job` waited between becoming runnable and `now`; never negative (the
/// database's clock and this host's may differ a little).
pub fn waited(job: &ClaimedJob, now: OffsetDateTime) -> f64 {
    (now - job.runnable_at).as_seconds_f64().max(0.0)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Retry or dead: a transient failure is retried after the queue's full-jitter
/// backoff while attempts remain; then, or for a permanent failure, the job is dead.
pub fn decide(
    outcome: Outcome,
    job: &ClaimedJob,
    settings: &QueueSettings,
    now: SystemTime,
) -> Verdict {
    match outcome {
        Outcome::Succeeded | Outcome::SucceededWith(_) => Verdict::Succeeded,
        Outcome::Suppressed => Verdict::Suppressed,
        Outcome::Defer { until, reason } => Verdict::Deferred { at: until, reason },
        // The world's failure, not the job's: it waits, its attempt given back.
        Outcome::Blocked { dependency, reason } => Verdict::Deferred {
            at: now + crate::gate::RETRY_BLOCKED,
            reason: format!("{dependency} is down: {reason}"),
        },
        Outcome::Dead(error) => Verdict::Dead { error },
        Outcome::Retry(error) if job.attempt < job.max_attempts => {
            let attempt = u32::try_from(job.attempt).unwrap_or(1);
            let at = now + shared::jobs::backoff(settings, attempt);
            match settings.lifetime {
                // The next attempt would come after the queue's lifetime: give up now.
                Some(lifetime) if SystemTime::from(job.created_at) + lifetime < at => {
                    Verdict::Dead {
                        error: format!(
                            "{error} (retried for {} s, the queue's retry lifetime)",
                            lifetime.as_secs()
                        ),
                    }
                }
                _ => Verdict::Retry { error, at },
            }
        }
        Outcome::Retry(error) => Verdict::Dead {
            error: format!("{error} (after {} attempts)", job.attempt),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;

    fn job(attempt: i32, max_attempts: i32) -> ClaimedJob {
        ClaimedJob {
            id: Uuid::now_v7(),
            request_id: Some(Uuid::now_v7()),
            queue: QueueName::Canary,
            payload: serde_json::json!({}),
            attempt,
            max_attempts,
            runnable_at: OffsetDateTime::now_utc(),
            lane_owner: None,
            created_at: OffsetDateTime::now_utc(),
            trace_context: None,
        }
    }

    fn settings() -> QueueSettings {
        QueueSettings {
            concurrency: 1,
            max_attempts: 3,
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(1),
            timeout: Duration::from_millis(50),
            lifetime: None,
        }
    }

    #[test]
    fn a_transient_failure_is_retried_within_the_backoff_while_attempts_remain() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        match decide(Outcome::Retry("busy".into()), &job(2, 3), &settings(), now) {
            Verdict::Retry { error, at } => {
                assert_eq!(error, "busy");
                assert!(
                    at >= now && at <= now + Duration::from_millis(200),
                    "{at:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_queue_with_a_lifetime_retries_until_the_next_attempt_would_fall_past_it() {
        let settings = QueueSettings {
            max_attempts: 500,
            lifetime: Some(Duration::from_secs(3600)),
            ..settings()
        };
        let now = SystemTime::now();
        let enqueued = |ago: Duration| ClaimedJob {
            created_at: OffsetDateTime::from(now - ago),
            trace_context: None,
            ..job(40, 500)
        };
        let young = enqueued(Duration::from_secs(60));
        assert!(matches!(
            decide(
                Outcome::Retry("421 try later".into()),
                &young,
                &settings,
                now
            ),
            Verdict::Retry { .. }
        ));
        let spent = enqueued(Duration::from_secs(3600));
        assert_eq!(
            decide(
                Outcome::Retry("421 try later".into()),
                &spent,
                &settings,
                now
            ),
            Verdict::Dead {
                error: "421 try later (retried for 3600 s, the queue's retry lifetime)".into()
            }
        );
        // A permanent failure is dead at once, whatever the lifetime.
        assert_eq!(
            decide(
                Outcome::Dead("550 no such user".into()),
                &young,
                &settings,
                now
            ),
            Verdict::Dead {
                error: "550 no such user".into()
            }
        );
    }

    #[test]
    fn the_last_attempt_and_permanent_failures_are_dead() {
        let now = SystemTime::now();
        assert_eq!(
            decide(Outcome::Retry("busy".into()), &job(3, 3), &settings(), now),
            Verdict::Dead {
                error: "busy (after 3 attempts)".into()
            }
        );
        assert_eq!(
            decide(
                Outcome::Dead("no such user".into()),
                &job(1, 3),
                &settings(),
                now
            ),
            Verdict::Dead {
                error: "no such user".into()
            }
        );
        assert_eq!(
            decide(Outcome::Succeeded, &job(1, 3), &settings(), now),
            Verdict::Succeeded
        );
    }

    #[test]
    fn queue_latency_runs_from_runnable_to_start_and_is_never_negative() {
        let mut row = job(1, 3);
        let now = row.runnable_at + time::Duration::milliseconds(1500);
        assert!((waited(&row, now) - 1.5).abs() < 1e-9);
        row.runnable_at = now + time::Duration::seconds(1);
        assert_eq!(waited(&row, now), 0.0);
    }

    struct Panics;
    impl Handler for Panics {
        type Job = shared::jobs::CanaryJob;
        async fn handle(&self, _job: &ClaimedJob, _payload: Self::Job) -> Outcome {
            panic!("boom at {}", 42)
        }
    }

    struct Sleeps;
    impl Handler for Sleeps {
        type Job = shared::jobs::CanaryJob;
        async fn handle(&self, _job: &ClaimedJob, _payload: Self::Job) -> Outcome {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Outcome::Succeeded
        }
    }

    fn executor<H: Handler>(handler: H) -> Executor<H> {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let redis = shared::redis::Redis::connect_lazy_to("redis://127.0.0.1:1", "unused")
            .expect("a lazy handle");
        Executor {
            queue: QueueName::Canary,
            handler: Arc::new(handler),
            settings: settings(),
            recorder: crate::completer::Recorder::for_tests(tx),
            gate: Gate::new(QueueName::Canary, "test", redis),
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_retry_with_its_message() {
        let outcome = executor(Panics).attempt(&job(1, 3)).await;
        assert_eq!(
            outcome,
            Outcome::Retry("the handler panicked: boom at 42".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_past_the_timeout_becomes_a_retry_and_counts_as_timed_out() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let outcome = executor(Sleeps).attempt(&job(1, 3)).await;
        assert_eq!(
            outcome,
            Outcome::Retry("the job timed out after 0.05 s".into())
        );
        let text = metrics.render();
        assert!(
            text.contains(r#"conveyor_jobs_timed_out_total{queue="canary"} 1"#),
            "{text}"
        );
    }
}
