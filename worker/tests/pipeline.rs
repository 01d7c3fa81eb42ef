//! The pipeline end to end: real `api` and `worker` binaries, real PostgreSQL,
//! Redis and SMTP server, and the failures the delivery guarantees are about.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Smtp, System, free_port, header};
use serde_json::json;
use shared::queue::QueueName;
use shared::queue::blocked;
use shared::redis::Redis;
use sqlx::PgPool;

const LONG: Duration = Duration::from_secs(60);

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_email_is_delivered_once_with_its_headers_and_body(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.start_worker().await;
    let response = system
        .post(
            "/api/v1/emails",
            &json!({"to": ["Bob <bob@example.org>"], "cc": ["carol@example.org"], "subject": "Quarterly report",
                    "text": "Numbers attached.", "html": "<p>Numbers attached.</p>", "reply_to": "ops@example.org"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let id = location.rsplit('/').next().expect("id").to_owned();
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["jobs"]["succeeded"], 1);
    assert_eq!(request["jobs"]["attempts"], 1);

    // The request finished after its one claimed attempt sent the message.
    let messages = smtp.wait_for_messages(1, LONG).await;
    assert_eq!(messages.len(), 1, "exactly one message");
    let message = &messages[0];
    assert_eq!(header(message, "Subject"), Some("Quarterly report"));
    assert!(header(message, "To").is_some_and(|to| to.contains("bob@example.org")));
    assert!(header(message, "Cc").is_some_and(|cc| cc.contains("carol@example.org")));
    assert!(header(message, "Reply-To").is_some_and(|r| r.contains("ops@example.org")));
    assert!(header(message, "Message-ID").is_some_and(|m| m.ends_with("@conveyor>")));
    assert!(
        header(message, "X-Envelope-To")
            .is_some_and(|e| e.contains("bob@example.org") && e.contains("carol@example.org"))
    );
    assert!(message.contains("Numbers attached."));
    assert!(message.contains("<p>Numbers attached.</p>"));
}

/// The relay down costs no attempts: the worker blocks its emails queue on it, the
/// messages wait with their attempts given back, the request says when the next try is
/// due; once the relay answers, everything goes out on its first counted attempt.
#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn with_the_smtp_relay_down_mail_waits_without_spending_attempts_then_flows(pool: PgPool) {
    let port = free_port();
    let mut system = System::new(&pool, port, &[]).await;
    system.start_api().await;
    system.start_worker().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            system
                .send_email(&format!("dave{n}@example.org"), "While down")
                .await,
        );
    }
    let env = |key: &str| {
        system
            .env
            .iter()
            .find_map(|(k, v)| (k == key).then(|| v.clone()))
            .unwrap_or_else(|| panic!("{key} is set for the system"))
    };
    let redis = Redis::connect_lazy_to(&env("REDIS_URL"), &env("REDIS_PREFIX")).expect("url");
    let block = harness::eventually(LONG, "the emails queue is blocked on smtp", || async {
        blocked::of(&redis, QueueName::Emails)
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(block.dependency, "smtp");
    let spent = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE queue = 'emails' AND (attempt > 0 OR status <> 'retrying')",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    harness::eventually(
        LONG,
        "every message waits, its attempt given back",
        || async { (spent().await == 0).then_some(()) },
    )
    .await;
    harness::holds_for(
        Duration::from_secs(3),
        Duration::from_millis(100),
        "an attempt was spent while the relay was down",
        || async { spent().await == 0 },
    )
    .await;
    // The request says when its next try is due.
    let request = system.request(&ids[0]).await;
    assert_eq!(request["jobs"]["attempts"], 0, "{request}");
    let next = request["jobs"]["next_attempt_at"]
        .as_str()
        .unwrap_or_else(|| panic!("next_attempt_at: {request}"));
    assert!(
        time::OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339).is_ok(),
        "{next}"
    );

    let smtp = Smtp::start(port, &[]).await;
    for id in &ids {
        let request = system.wait_finished(id, LONG).await;
        assert_eq!(request["status"], "succeeded", "{request}");
        assert_eq!(request["jobs"]["attempts"], 1, "{request}");
    }
    assert_eq!(smtp.wait_for_messages(3, LONG).await.len(), 3);
    harness::eventually(LONG, "the block is lifted", || async {
        blocked::of(&redis, QueueName::Emails)
            .await
            .ok()
            .filter(Vec::is_empty)
    })
    .await;
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_smtp_550_is_dead_at_once_with_the_error_recorded(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--reject", "nobody"]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.start_worker().await;
    let id = system.send_email("nobody@example.org", "Bounce").await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "failed", "{request}");
    assert_eq!(request["jobs"]["dead"], 1);
    assert_eq!(
        request["jobs"]["attempts"], 1,
        "no retry of a permanent error"
    );
    assert!(
        request["jobs"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("550")),
        "{request}"
    );
    assert!(smtp.messages().is_empty());
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_recipient_quoted_in_an_smtp_reply_is_neither_recorded_nor_logged(pool: PgPool) {
    // The test server quotes the refused address, as Postfix does.
    let smtp = Smtp::start(free_port(), &["--reject", "nobody"]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.start_worker().await;
    let address = "Nobody.Quoted+tag@example.org";
    let id = system.send_email(address, "Bounce").await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "failed", "{request}");
    let last_error: String =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE request_id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .expect("job");
    assert!(
        last_error.contains("550") && last_error.contains("[redacted]"),
        "{last_error}"
    );
    let logs = system.worker_logs();
    assert!(
        logs.contains("job failed for good") && logs.contains("[redacted]"),
        "{logs}"
    );
    for text in [&last_error, &request.to_string(), &logs] {
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("nobody.quoted") && !lower.contains("tag@example.org"),
            "{text}"
        );
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn exhausted_attempts_end_dead(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--tempfail", "1000"]).await;
    let mut system = System::new(&pool, smtp.port, &[("EMAILS_MAX_ATTEMPTS", "3")]).await;
    system.start_api().await;
    system.start_worker().await;
    let id = system.send_email("eve@example.org", "Always 451").await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "failed", "{request}");
    assert_eq!(request["jobs"]["attempts"], 3);
    let error = request["jobs"]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("451") && error.contains("after 3 attempts"),
        "{error}"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_job_delivered_twice_is_sent_once(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    let id = system.send_email("frank@example.org", "Twice").await;
    let job: uuid::Uuid = sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1::uuid")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("job");
    // The api pushed it once; push it again before any worker runs.
    let prefix = system
        .env
        .iter()
        .find(|(k, _)| k == "REDIS_PREFIX")
        .map(|(_, v)| v.clone())
        .expect("prefix");
    let redis =
        shared::redis::Redis::connect_lazy_to(&common::redis_url(), &prefix).expect("redis");
    let queue = shared::queue::Queue::new(redis, shared::queue::QueueName::Emails);
    queue
        .push(&[job.to_string(), job.to_string()])
        .await
        .expect("push");
    system.start_worker().await;
    system.start_worker().await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded");
    harness::wait_out(
        Duration::from_secs(1),
        "the duplicate deliveries send nothing more",
    )
    .await;
    assert_eq!(smtp.messages().len(), 1, "three deliveries, one send");
    assert_eq!(request["jobs"]["attempts"], 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn sigterm_lets_in_flight_jobs_finish_and_exits_zero(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--delay", "1.5"]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.start_worker().await;
    let ids = [
        system.send_email("g1@example.org", "One").await,
        system.send_email("g2@example.org", "Two").await,
        system.send_email("g3@example.org", "Three").await,
    ];
    // Wait until all three are in the SMTP conversation, then ask the worker to stop.
    harness::eventually(LONG, "the three jobs are running", || {
        let pool = pool.clone();
        async move {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE queue = 'emails' AND status = 'running'",
            )
            .fetch_one(&pool)
            .await
            .expect("count");
            (running == 3).then_some(())
        }
    })
    .await;
    let worker = system.workers.pop().expect("worker");
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
    for id in &ids {
        let request = system.request(id).await;
        assert_eq!(request["status"], "succeeded", "{request}");
    }
    assert_eq!(smtp.messages().len(), 3);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_killed_worker_s_job_is_finished_by_another(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &["--delay", "3"]).await;
    // The reconciler would wait 10 minutes: only the reaper and the claim bring the job
    // back (heartbeat timeout 2 s in these tests).
    let mut system = System::new(&pool, smtp.port, &[("REDELIVERY_TIMEOUT_SECS", "600")]).await;
    system.start_api().await;
    let first = system.start_worker().await;
    let id = system
        .send_email("hank@example.org", "Survives a crash")
        .await;
    harness::eventually(LONG, "the job is running", || {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            let status: String =
                sqlx::query_scalar("SELECT status FROM jobs WHERE request_id = $1::uuid")
                    .bind(&id)
                    .fetch_one(&pool)
                    .await
                    .expect("job");
            (status == "running").then_some(())
        }
    })
    .await;
    // SIGKILL mid-job (the SMTP server is still holding the DATA), then a new worker.
    system.workers[first].signal("-KILL").await;
    let killed = std::time::Instant::now();
    system.start_worker().await;
    // Polled by hand, so a timeout shows the job's row and the workers' logs.
    let deadline = std::time::Instant::now() + LONG;
    let restarted: i32 = loop {
        let row: (
            String,
            i32,
            Option<time::OffsetDateTime>,
            Option<time::OffsetDateTime>,
        ) = sqlx::query_as(
            "SELECT status, attempt, heartbeat_at, run_after FROM jobs WHERE request_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("job");
        if row.1 >= 2 {
            break row.1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not run again within {LONG:?}: (status, attempt, heartbeat_at, \
             run_after) = {row:?}\nworkers:\n{}",
            system.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "attempt {restarted} started {:?} after the SIGKILL (heartbeat timeout 2 s)",
        killed.elapsed()
    );
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(
        request["jobs"]["attempts"], 2,
        "taken over after the heartbeat timeout"
    );
    // The killed worker's SMTP session may have completed after the kill: then the
    // duplicate carries the same Message-ID.
    let messages = smtp.wait_for_messages(1, LONG).await;
    harness::wait_out(
        Duration::from_secs(4),
        "a duplicate from the killed worker's SMTP session, if any, has landed",
    )
    .await;
    let messages = if smtp.messages().len() > messages.len() {
        smtp.messages()
    } else {
        messages
    };
    let ids: BTreeSet<&str> = messages
        .iter()
        .filter_map(|m| header(m, "Message-ID"))
        .collect();
    assert!(
        (1..=2).contains(&messages.len()),
        "{} messages",
        messages.len()
    );
    assert_eq!(ids.len(), 1, "every copy has the same Message-ID");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_campaign_of_ten_thousand_is_delivered_and_counts_add_up(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[("EMAILS_CONCURRENCY", "64")]).await;
    system.start_api().await;
    system.promote_everyone(&pool).await;
    system.start_worker().await;
    system.start_worker().await;
    let recipients: Vec<String> = (0..10_000)
        .map(|i| format!("reader{i}@example.org"))
        .collect();
    let started = std::time::Instant::now();
    let response = system
        .post(
            "/api/v1/campaigns",
            &json!({"name": "Launch", "subject": "We launched", "text": "Hello reader", "recipients": recipients}),
        )
        .await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["total"], 10_000);
    let id = body["id"].as_str().expect("id").to_owned();
    let request = system.wait_finished(&id, Duration::from_secs(300)).await;
    eprintln!(
        "10,000-recipient campaign delivered in {:?}",
        started.elapsed()
    );
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(request["succeeded"], 10_000);
    assert_eq!(request["failed"], 0);
    assert_eq!(request["pending"], 0);
    let messages = smtp.wait_for_messages(10_000, LONG).await;
    let delivered: BTreeSet<&str> = messages
        .iter()
        .filter_map(|m| header(m, "X-Envelope-To"))
        .collect();
    assert_eq!(delivered.len(), 10_000, "every recipient exactly once");
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn posting_while_redis_is_down_is_accepted_and_nothing_is_lost(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let redis_port = free_port();
    let redis_dir = common::scratch_dir("redis");
    let start_redis = || {
        tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&redis_dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts")
    };
    let mut redis = start_redis();
    common::wait_for_port(redis_port).await;
    let url = format!("redis://127.0.0.1:{redis_port}");
    let mut system = System::new(&pool, smtp.port, &[("REDIS_URL", &url)]).await;
    system.start_api().await;
    system.start_worker().await;

    redis.kill().await.expect("stop redis");
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            system
                .send_email(
                    &format!("ivy{n}@example.org"),
                    &format!("During the outage {n}"),
                )
                .await,
        );
    }
    let undispatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE queue = 'emails' AND dispatched_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(undispatched, 5, "committed, waiting for Redis");

    let _redis = start_redis();
    common::wait_for_port(redis_port).await;
    for id in &ids {
        let request = system.wait_finished(id, LONG).await;
        assert_eq!(request["status"], "succeeded", "{request}");
    }
    assert_eq!(smtp.wait_for_messages(5, LONG).await.len(), 5);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn jobs_redis_lost_after_dispatch_are_pushed_again(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    let id = system.send_email("jay@example.org", "Lost and found").await;
    let dispatched: bool = sqlx::query_scalar(
        "SELECT dispatched_at IS NOT NULL FROM jobs WHERE request_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .expect("job");
    assert!(dispatched, "pushed when accepted");
    // Redis loses everything (a restart without persistence) before any worker ran.
    let prefix = system
        .env
        .iter()
        .find(|(k, _)| k == "REDIS_PREFIX")
        .map(|(_, v)| v.clone())
        .expect("prefix");
    let redis =
        shared::redis::Redis::connect_lazy_to(&common::redis_url(), &prefix).expect("redis");
    let queue = shared::queue::Queue::new(redis.clone(), shared::queue::QueueName::Emails);
    let mut conn = redis.connection();
    redis::cmd("DEL")
        .arg(queue.ready_key())
        .query_async::<()>(&mut conn)
        .await
        .expect("del");
    system.start_worker().await;
    // The reconciler re-pushes it after REDELIVERY_TIMEOUT_SECS (3 s here).
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    assert_eq!(smtp.wait_for_messages(1, LONG).await.len(), 1);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_send_rate_holds_across_workers(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[("EMAILS_PER_SECOND", "4")]).await;
    system.start_api().await;
    system.start_worker().await;
    system.start_worker().await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            system
                .send_email(&format!("k{n}@example.org"), &format!("Rate {n}"))
                .await,
        );
    }
    for id in &ids {
        system.wait_finished(id, LONG).await;
    }
    // Twelve messages at four per second need at least three one-second windows, so
    // more than a second from first to last (unlimited, they go out in ~100 ms).
    let mut times: Vec<std::time::SystemTime> = std::fs::read_dir(&smtp.dir)
        .expect("mail dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .collect();
    times.sort();
    assert_eq!(times.len(), 12);
    let span = times[11].duration_since(times[0]).expect("ordered");
    // Three windows mean more than a second from first to last; unlimited, the twelve
    // go out in about 100 ms.
    assert!(
        span > Duration::from_secs(1),
        "12 messages in {span:?} at 4/s"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn development_without_keys_delivers_and_a_restarted_api_still_signs_users_in(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.without_keys();
    system.start_api().await;
    system.start_worker().await;
    let keys = system.dir().join(".dev/keys.env");
    assert!(keys.exists(), "the api made {}", keys.display());
    let id = system
        .send_email("erin@example.org", "Welcome aboard")
        .await;
    let request = system.wait_finished(&id, LONG).await;
    assert_eq!(request["status"], "succeeded", "{request}");
    let messages = smtp.wait_for_messages(1, LONG).await;
    assert_eq!(header(&messages[0], "Subject"), Some("Welcome aboard"));
    assert!(system.api_log().contains("development keys file"));
    assert!(system.worker_logs().contains("development keys file"));

    // A restarted api reads the same keys: its users still sign in (blind index),
    // their data still opens (PII), and tokens it issued before still verify.
    let before = std::fs::read_to_string(&keys).expect("keys");
    let old_token = system.token.clone();
    system.restart_api().await;
    assert_eq!(std::fs::read_to_string(&keys).expect("keys"), before);
    let token = system.login(&system.email).await;
    assert!(!token.is_empty());
    let me = system
        .client
        .get(format!("{}/api/v1/me", system.base))
        .bearer_auth(&old_token)
        .send()
        .await
        .expect("me");
    assert_eq!(
        me.status(),
        200,
        "a token from before the restart still verifies"
    );
    let me: serde_json::Value = me.json().await.expect("json");
    assert_eq!(
        me["email"],
        system.email.as_str(),
        "the sealed email still opens"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_registration_s_link_arrives_by_smtp_and_its_page_confirms_the_address(pool: PgPool) {
    let smtp = Smtp::start(free_port(), &[]).await;
    let mut system = System::new(&pool, smtp.port, &[]).await;
    system.start_api().await;
    system.start_worker().await;
    let email = format!("newcomer-{}@example.org", uuid::Uuid::new_v4().simple());
    let registered = system
        .client
        .post(format!("{}/api/v1/auth/register", system.base))
        .json(&json!({"email": email, "password": common::PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 202);
    let token = system.login(&email).await;
    let refused = system
        .client
        .post(format!("{}/api/v1/emails", system.base))
        .bearer_auth(&token)
        .json(&json!({"to": ["bob@example.org"], "subject": "s", "text": "t"}))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 403, "not before the address is confirmed");

    let messages = smtp.wait_for_messages(1, LONG).await;
    let message = &messages[0];
    assert_eq!(
        header(message, "Subject"),
        Some("Confirm your email address")
    );
    assert!(header(message, "To").is_some_and(|to| to.contains(&email)));
    // PUBLIC_URL defaults to the api's own address outside production.
    let prefix = format!("{}/api/v1/auth/verify-email?token=", system.base);
    let body = quoted_printable(message);
    let link = body
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}… link in {message}"))
        .trim()
        .to_owned();
    let page = system
        .client
        .get(&link)
        .send()
        .await
        .expect("open the link")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("<button type=\"submit\">Confirm</button>"),
        "{page}"
    );
    let link_token = link.rsplit('=').next().expect("token");
    // The page's form posts to verify-email, relative to the page: the same path.
    let confirmed = system
        .client
        .post(format!("{}/api/v1/auth/verify-email", system.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={link_token}"))
        .send()
        .await
        .expect("confirm");
    assert_eq!(confirmed.status(), 200);

    let accepted = system
        .client
        .post(format!("{}/api/v1/emails", system.base))
        .bearer_auth(&token)
        .json(&json!({"to": ["bob@example.org"], "subject": "Now it works", "text": "t"}))
        .send()
        .await
        .expect("send");
    assert_eq!(accepted.status(), 202);
    let messages = smtp.wait_for_messages(2, LONG).await;
    assert!(
        messages
            .iter()
            .any(|m| header(m, "Subject") == Some("Now it works"))
    );
}

/// A quoted-printable body decoded (RFC 2045 §6.7): soft line breaks joined, `=XX`
/// octets restored. Long lines (such as a link) arrive encoded this way.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
