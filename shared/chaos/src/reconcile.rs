//! After a fault and its recovery window: every submission that got a 2xx must have
//! happened. Reads the database directly, the SMTP server's mail directory and the
//! api's downloads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use uuid::Uuid;

use crate::load::{Expect, Outcome, Submission};
use crate::stack::Stack;
use crate::wait::all_final;

#[derive(Debug, Default)]
pub struct Reconciliation {
    pub sent: usize,
    pub accepted: usize,
    /// Answers other than 2xx, by "status code" (and whether Retry-After came).
    pub refused: BTreeMap<String, usize>,
    /// Accepted requests by final status (`running` etc. when not final).
    pub states: BTreeMap<String, usize>,
    /// Accepted and not done: not final, a message missing, an upload without its
    /// verdict or with other bytes.
    pub lost: Vec<String>,
    /// Messages received more than once (extra copies), and how many of those copies
    /// carried another Message-ID (must be 0).
    pub duplicated: usize,
    pub duplicated_new_id: usize,
    /// Messages received for no accepted submission (the client saw no 2xx, yet the
    /// api had committed: allowed, counted).
    pub unacknowledged_sent: usize,
    /// Jobs still queued, running or retrying after the window (chores excepted).
    pub stuck: BTreeMap<String, i64>,
    /// Dead jobs by queue.
    pub dead: BTreeMap<String, i64>,
    /// Other broken promises (a wrong verdict, a failed request that should not fail).
    pub wrong: Vec<String>,
    /// From the start of reconciling until every accepted request was final.
    pub drained_in: Option<Duration>,
}

impl Reconciliation {
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated_new_id == 0
            && self.stuck.is_empty()
            && self.wrong.is_empty()
    }
}

/// Waits up to `window` for every accepted request to be final, then checks them all.
/// `allowed_failures`: request statuses other than `succeeded` that are expected
/// (none in most scenarios).
pub async fn reconcile(
    stack: &Stack,
    submissions: &[Submission],
    window: Duration,
) -> Result<Reconciliation> {
    let mut report = Reconciliation {
        sent: submissions.len(),
        ..Reconciliation::default()
    };
    for submission in submissions {
        match &submission.outcome {
            Outcome::Accepted(_) => report.accepted += 1,
            Outcome::Refused {
                status,
                code,
                retry_after,
            } => {
                let key = format!(
                    "{status} {code}{}",
                    if *retry_after { " (Retry-After)" } else { "" }
                );
                *report.refused.entry(key).or_default() += 1;
            }
            Outcome::Unanswered(why) => {
                *report
                    .refused
                    .entry(format!("no answer: {why}"))
                    .or_default() += 1;
            }
        }
    }
    let ids: Vec<Uuid> = submissions
        .iter()
        .filter_map(Submission::accepted)
        .collect();

    let started = Instant::now();
    let pause = Duration::from_millis(100);
    let every_final = "every accepted request is final";
    if all_final(&stack.db, &ids, pause, window, every_final)
        .await
        .is_ok()
    {
        report.drained_in = Some(started.elapsed());
    }

    let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, status, finished_at IS NOT NULL FROM requests WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&stack.db)
    .await?;
    let mut status: HashMap<Uuid, (String, bool)> = HashMap::new();
    for (id, state, finished) in rows {
        *report.states.entry(state.clone()).or_default() += 1;
        status.insert(id, (state, finished));
    }

    // Messages by envelope recipient.
    let mut received: HashMap<String, Vec<String>> = HashMap::new();
    for message in stack.smtp.messages() {
        let Some(first) = message.lines().next() else {
            continue;
        };
        let Some(to) = first.strip_prefix("X-Envelope-To: ") else {
            continue;
        };
        let message_id = testkit::smtp::header(&message, "Message-ID")
            .unwrap_or_default()
            .to_owned();
        for address in to.split(',') {
            received
                .entry(address.trim().to_owned())
                .or_default()
                .push(message_id.clone());
        }
    }

    for submission in submissions {
        let Some(id) = submission.accepted() else {
            if let Expect::Messages(to) = &submission.expect {
                report.unacknowledged_sent += to
                    .iter()
                    .filter(|a| received.contains_key(a.as_str()))
                    .count();
            }
            continue;
        };
        let kind = submission.kind.name();
        let Some((state, finished)) = status.get(&id) else {
            report.lost.push(format!("{kind} {id}: no request row"));
            continue;
        };
        if !finished {
            report
                .lost
                .push(format!("{kind} {id}: still {state} after {window:?}"));
            continue;
        }
        if state != "succeeded" {
            report.wrong.push(format!("{kind} {id}: {state}"));
        }
        match &submission.expect {
            Expect::Messages(to) => {
                for address in to {
                    let copies = received.get(address).map_or(&[][..], Vec::as_slice);
                    match copies.len() {
                        0 if state == "succeeded" => report
                            .lost
                            .push(format!("{kind} {id}: no message to {address}")),
                        0 | 1 => {}
                        n => {
                            report.duplicated += n - 1;
                            let ids: HashSet<&String> = copies.iter().collect();
                            report.duplicated_new_id += ids.len() - 1;
                        }
                    }
                }
            }
            Expect::Upload {
                id: upload,
                infected,
                bytes,
            } => {
                let verdict: Option<String> =
                    sqlx::query_scalar("SELECT status FROM uploads WHERE id = $1")
                        .bind(upload)
                        .fetch_optional(&stack.db)
                        .await?;
                let want = if *infected { "infected" } else { "clean" };
                match verdict.as_deref() {
                    Some(v) if v == want => {}
                    Some("pending_scan") | None => report
                        .lost
                        .push(format!("upload {upload}: no verdict ({verdict:?})")),
                    Some(other) => report
                        .wrong
                        .push(format!("upload {upload}: {other}, expected {want}")),
                }
                if !infected && verdict.as_deref() == Some("clean") {
                    let served = stack
                        .system
                        .client
                        .get(format!(
                            "{}/api/v1/uploads/{upload}/content",
                            stack.system.base
                        ))
                        .bearer_auth(&stack.system.token)
                        .send()
                        .await?;
                    let ok = served.status().is_success();
                    let body = served.bytes().await?;
                    if !ok || body.as_ref() != bytes.as_slice() {
                        report.lost.push(format!(
                            "upload {upload}: the download is not the bytes sent"
                        ));
                    }
                }
            }
            Expect::Finished => {}
        }
    }

    let stuck: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT queue, status, count(*) FROM jobs \
         WHERE queue <> 'chores' AND status IN ('queued', 'running', 'retrying') \
         GROUP BY 1, 2",
    )
    .fetch_all(&stack.db)
    .await?;
    for (queue, state, n) in stuck {
        report.stuck.insert(format!("{queue} {state}"), n);
    }
    let dead: Vec<(String, i64)> = sqlx::query_as(
        "SELECT queue, count(*) FROM jobs WHERE status = 'dead' AND queue <> 'chores' GROUP BY 1",
    )
    .fetch_all(&stack.db)
    .await?;
    report.dead = dead.into_iter().collect();
    Ok(report)
}
