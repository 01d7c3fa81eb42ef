//! The overview's health: each queue's throughput and failure rate over the last hour
//! by minute (small charts), the dispatcher's backlog, and which of the Prometheus
//! alerts (`dashboards/alerts.yml`) have their condition true now. Read at most every
//! [`FRESH`] per api process, however many consoles are open.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use maud::{Markup, html};
use shared::db::job_failures::{self, Minute};
use shared::queue::QueueName;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::views::{age, moment};
use crate::services::operations::QueueView;
use crate::state::AppState;

/// How long a reading is reused.
const FRESH: Duration = Duration::from_secs(5);
/// Minutes a chart shows.
const MINUTES: usize = 60;

/// One queue's last hour: `(succeeded, failed)` per minute, oldest first.
#[derive(Debug, Clone)]
pub struct Hour {
    pub queue: QueueName,
    pub minutes: [(i64, i64); MINUTES],
}

impl Hour {
    fn totals(&self) -> (i64, i64) {
        self.minutes
            .iter()
            .fold((0, 0), |(s, f), (ms, mf)| (s + ms, f + mf))
    }
}

#[derive(Debug, Clone)]
pub struct Health {
    pub hours: Vec<Hour>,
    /// Jobs committed but not pushed to Redis yet, and the oldest one's creation.
    pub backlog: i64,
    pub backlog_since: Option<OffsetDateTime>,
    /// Jobs that went dead in the last 15 minutes, by queue.
    pub dead_lately: Vec<(QueueName, i64)>,
    pub read_at: OffsetDateTime,
}

/// The last reading and when it was taken.
type Reading = Option<(Instant, Arc<Health>)>;

static LAST: LazyLock<Mutex<Reading>> = LazyLock::new(Mutex::default);

/// The health, read again when the last reading is older than [`FRESH`]; `None` when
/// PostgreSQL does not answer.
pub async fn read(state: &AppState) -> Option<Arc<Health>> {
    let mut last = LAST.lock().await;
    if let Some((at, health)) = last.as_ref()
        && at.elapsed() < FRESH
    {
        return Some(health.clone());
    }
    let health = Arc::new(fetch(state).await.ok()?);
    *last = Some((Instant::now(), health.clone()));
    Some(health)
}

async fn fetch(state: &AppState) -> Result<Health, sqlx::Error> {
    let rows = job_failures::last_hour(&state.pool).await?;
    let (backlog, backlog_since) = job_failures::dispatcher_backlog(&state.pool).await?;
    let now = OffsetDateTime::now_utc();
    let dead_lately =
        job_failures::dead_since(&state.pool, now - time::Duration::minutes(15)).await?;
    Ok(Health {
        hours: hours(&rows),
        backlog,
        backlog_since,
        dead_lately,
        read_at: now,
    })
}

/// Every queue's 60 minutes from the rows (minutes without work are zero).
fn hours(rows: &[Minute]) -> Vec<Hour> {
    QueueName::ALL
        .iter()
        .map(|&queue| {
            let mut minutes = [(0, 0); MINUTES];
            for row in rows.iter().filter(|row| row.queue == queue) {
                let Ok(ago) = usize::try_from(row.minutes_ago) else {
                    continue;
                };
                if ago < MINUTES {
                    minutes[MINUTES - 1 - ago] = (row.succeeded, row.failed);
                }
            }
            Hour { queue, minutes }
        })
        .collect()
}

/// An alert of `dashboards/alerts.yml` whose condition holds now (Prometheus fires
/// it once the condition has held for the rule's `for`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub name: &'static str,
    pub severity: &'static str,
    pub summary: String,
}

/// The alerts whose condition holds now, from the queues and the health.
pub fn alerts(queues: &[QueueView], health: &Health) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for queue in queues {
        let name = queue.queue.as_str();
        if queue.workers_alive == Some(0) {
            alerts.push(Alert {
                name: "NoWorkerAlive",
                severity: "critical",
                summary: format!("no live worker consumes {name}"),
            });
        }
        if let Some(dependency) = &queue.blocked_on {
            alerts.push(Alert {
                name: "QueueBlocked",
                severity: "warning",
                summary: format!("{name} waits for {dependency}"),
            });
        }
        if let Some(seconds) = queue.oldest_queued_age_seconds
            && seconds > 300
            && queue.paused != Some(true)
        {
            alerts.push(Alert {
                name: "OldestQueuedJobTooOld",
                severity: "warning",
                summary: format!(
                    "the oldest runnable job on {name} has waited {}",
                    age(seconds)
                ),
            });
        }
    }
    for (queue, dead) in &health.dead_lately {
        alerts.push(Alert {
            name: "DeadJobs",
            severity: "warning",
            summary: format!("{dead} jobs on {queue} went dead in the last 15 minutes"),
        });
    }
    if let Some(since) = health.backlog_since
        && health.backlog > 0
        && health.read_at - since > time::Duration::minutes(15)
    {
        alerts.push(Alert {
            name: "DispatcherBacklogStuck",
            severity: "warning",
            summary: format!(
                "{} committed jobs have waited over 15 minutes for dispatch",
                health.backlog
            ),
        });
    }
    alerts
}

/// A queue's last hour as a small bar chart: successes, with failed attempts stacked
/// above them, one bar a minute; named in words for a screen reader.
fn chart(hour: &Hour) -> Markup {
    let (succeeded, failed) = hour.totals();
    let peak = hour
        .minutes
        .iter()
        .map(|(s, f)| s + f)
        .max()
        .unwrap_or(0)
        .max(1);
    let rate = if succeeded + failed > 0 {
        format!(
            "{:.1} %",
            100.0 * failed as f64 / (succeeded + failed) as f64
        )
    } else {
        "—".to_owned()
    };
    // 60 bars of 3 units in a 180 × 30 box.
    let scale = |n: i64| (n as f64 * 30.0 / peak as f64).round();
    let label = format!(
        "{}: {succeeded} jobs succeeded and {failed} attempts failed in the last hour (failure rate {rate}); the busiest minute had {peak}",
        hour.queue
    );
    html! {
        figure.chart {
            svg viewBox="0 0 180 30" width="180" height="30" role="img" aria-label=(label) {
                @for (i, (s, f)) in hour.minutes.iter().enumerate() {
                    @let x = i * 3;
                    @let hs = scale(*s);
                    @let hf = scale(*f);
                    @if hs > 0.0 {
                        rect.ok x=(x) y=(30.0 - hs) width="2" height=(hs) {}
                    }
                    @if hf > 0.0 {
                        rect.failed x=(x) y=(30.0 - hs - hf) width="2" height=(hf) {}
                    }
                }
            }
            figcaption {
                strong { (hour.queue.as_str()) } " "
                (succeeded) " done, " (failed) " failed · " (rate)
            }
        }
    }
}

/// The health section of the overview (part of its live region).
pub fn section(queues: &[QueueView], health: Option<&Health>) -> Markup {
    let Some(health) = health else {
        return html! { p.error role="alert" { "The last hour cannot be read now (PostgreSQL did not answer)." } };
    };
    let alerts = alerts(queues, health);
    html! {
        section aria-labelledby="alerts-title" {
            h2 #alerts-title { "Alerts firing now" }
            @if alerts.is_empty() {
                p #alerts-none { "None: no alert's condition holds." }
            } @else {
                ul.alerts {
                    @for alert in &alerts {
                        li.(alert.severity) data-alert=(alert.name) {
                            strong { (alert.name) } " (" (alert.severity) "): " (alert.summary)
                        }
                    }
                }
                p.note { "The condition holds now; Prometheus fires the alert once it has held for the rule's duration (dashboards/alerts.yml)." }
            }
        }
        section aria-labelledby="hour-title" {
            h2 #hour-title { "The last hour" }
            p #dispatcher-backlog {
                "Dispatcher backlog: " strong { (health.backlog) }
                " committed jobs not yet pushed to Redis"
                @if let Some(since) = health.backlog_since {
                    ", the oldest since " (moment(since))
                }
                "."
            }
            div.charts {
                @for hour in &health.hours {
                    (chart(hour))
                }
            }
            p.note { "Each bar is a minute: successes, with failed attempts stacked in red. Read every 5 seconds." }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: QueueName) -> QueueView {
        QueueView {
            queue: name,
            waiting: 0,
            queued: 0,
            running: 0,
            retrying: 0,
            dead: 0,
            discarded: 0,
            succeeded_last_hour: 0,
            oldest_queued_age_seconds: None,
            workers_alive: Some(1),
            paused: Some(false),
            blocked_on: None,
            blocked_since: None,
        }
    }

    fn health() -> Health {
        Health {
            hours: Vec::new(),
            backlog: 0,
            backlog_since: None,
            dead_lately: Vec::new(),
            read_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn minutes_land_in_their_place_oldest_first() {
        let rows = vec![
            Minute {
                queue: QueueName::Emails,
                minutes_ago: 0,
                succeeded: 5,
                failed: 1,
            },
            Minute {
                queue: QueueName::Emails,
                minutes_ago: 59,
                succeeded: 2,
                failed: 0,
            },
            Minute {
                queue: QueueName::Emails,
                minutes_ago: 60,
                succeeded: 9,
                failed: 9,
            },
        ];
        let hours = hours(&rows);
        let emails = hours
            .iter()
            .find(|h| h.queue == QueueName::Emails)
            .expect("emails");
        assert_eq!(emails.minutes[59], (5, 1));
        assert_eq!(emails.minutes[0], (2, 0));
        assert_eq!(
            emails.totals(),
            (7, 1),
            "a row older than the hour is left out"
        );
        assert_eq!(hours.len(), QueueName::ALL.len());
    }

    #[test]
    fn an_alert_holds_only_where_its_condition_does() {
        let mut quiet = health();
        assert!(alerts(&[queue(QueueName::Emails)], &quiet).is_empty());

        let mut old = queue(QueueName::Emails);
        old.oldest_queued_age_seconds = Some(301);
        let mut paused = queue(QueueName::Scans);
        paused.oldest_queued_age_seconds = Some(900);
        paused.paused = Some(true);
        let mut lonely = queue(QueueName::Uploads);
        lonely.workers_alive = Some(0);
        quiet.dead_lately = vec![(QueueName::Webhooks, 2)];
        quiet.backlog = 3;
        quiet.backlog_since = Some(quiet.read_at - time::Duration::minutes(16));
        let names: Vec<&str> = alerts(&[old, paused, lonely], &quiet)
            .iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(
            names,
            [
                "OldestQueuedJobTooOld",
                "NoWorkerAlive",
                "DeadJobs",
                "DispatcherBacklogStuck"
            ],
            "a paused queue's wait is by design"
        );
    }
}
