//! End-to-end latency load generator for `scripts/bench` (built as the `e2e_latency`
//! example of the api crate): an open-loop stream of `POST /api/v1/admin/canary
//! {"count":1}` at a fixed rate, each timed from the moment its POST is sent until the
//! worker publishes the request's final state (`succeeded`) on Redis.
//!
//! Completion is observed, not polled: before the first POST the generator
//! PSUBSCRIBEs to `shared::events::channel_pattern` (every request's channel), the channels
//! the worker's completer publishes each request's state on after its commit, and
//! stamps every final event with a monotonic clock the moment it arrives. Events and
//! POST answers are matched by request id afterwards, so an event that arrives before
//! its 202 is not lost.
//!
//! Open loop: request `i` is due at `start + i / RATE` and sent from its own task, so
//! a slow answer never delays the next request. The admin signs in with 2FA like an
//! operator: password, TOTP enrolment, then a login completed with a TOTP code.
//!
//! Environment: `API_URL` (`http://127.0.0.1:8080`), `REDIS_URL`, `REDIS_PREFIX`,
//! `ADMIN_EMAIL`, `ADMIN_PASSWORD` (an admin made by `api create-admin`), `RATE` (200
//! requests/s), `DURATION_SECS` (10), `WARMUP_SECS` (1, same rate, not counted),
//! `DRAIN_TIMEOUT_SECS` (30). Progress goes to stderr; stdout gets one JSON line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Final events by request id: when they arrived and whether the request succeeded.
type Finished = Arc<Mutex<HashMap<Uuid, (Instant, bool)>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let api = env("API_URL", "http://127.0.0.1:8080");
    let redis_url = env("REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = env("REDIS_PREFIX", "conveyor");
    let email = std::env::var("ADMIN_EMAIL")?;
    let password = std::env::var("ADMIN_PASSWORD")?;
    let rate: f64 = env("RATE", "200").parse()?;
    let duration: f64 = env("DURATION_SECS", "10").parse()?;
    let warmup: f64 = env("WARMUP_SECS", "1").parse()?;
    let drain_timeout = Duration::from_secs(env("DRAIN_TIMEOUT_SECS", "30").parse()?);
    anyhow::ensure!(
        rate > 0.0 && duration > 0.0 && warmup >= 0.0,
        "bad RATE/DURATION"
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = admin_token(&client, &api, &email, &password).await?;

    // Subscribe before the first POST; the subscription is confirmed when this returns.
    let finished: Finished = Arc::new(Mutex::new(HashMap::new()));
    let mut pubsub = redis::Client::open(redis_url.as_str())?
        .get_async_pubsub()
        .await?;
    // The product's own channel names (they carry the prefix and a hash tag).
    let names = shared::redis::Redis::connect_lazy_to(&redis_url, &prefix)?;
    pubsub
        .psubscribe(shared::events::channel_pattern(&names))
        .await?;
    let listener = {
        let finished = finished.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let at = Instant::now();
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(&payload) else {
                    continue;
                };
                if event["finished"].as_bool() != Some(true) {
                    continue;
                }
                let Some(id) = event["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
                    continue;
                };
                let ok = event["status"].as_str() == Some("succeeded");
                if let Ok(mut map) = finished.lock() {
                    map.entry(id).or_insert((at, ok));
                }
            }
        })
    };

    let warmup_n = (warmup * rate).round() as usize;
    let measured_n = (duration * rate).round() as usize;
    let total = warmup_n + measured_n;
    let period = Duration::from_secs_f64(1.0 / rate);
    let url = format!("{api}/api/v1/admin/canary");
    let body = json!({"count": 1});
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(total);
    eprintln!("e2e-latency: {total} POSTs at {rate}/s ({warmup_n} warm-up, {measured_n} measured)");
    for i in 0..total {
        ticker.tick().await;
        let due = started + period.mul_f64(i as f64);
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let (client, url, token, body) = (client.clone(), url.clone(), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            let answered = Instant::now();
            let id = match response {
                Ok(r) if r.status().as_u16() == 202 => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["id"].as_str().and_then(|s| s.parse::<Uuid>().ok())),
                Ok(r) => {
                    eprintln!("e2e-latency: POST answered {}", r.status());
                    None
                }
                Err(err) => {
                    eprintln!("e2e-latency: POST failed: {err}");
                    None
                }
            };
            (i >= warmup_n, sent, answered, id)
        }));
    }
    let send_secs = started.elapsed().as_secs_f64();
    let mut sent = Vec::with_capacity(total);
    for task in tasks {
        sent.push(task.await?);
    }

    // Wait for every accepted request's final event (or the deadline).
    let expected: Vec<Uuid> = sent.iter().filter_map(|s| s.3).collect();
    let deadline = Instant::now() + drain_timeout;
    loop {
        let done = finished
            .lock()
            .map(|m| expected.iter().filter(|id| m.contains_key(id)).count())
            .unwrap_or(0);
        if done == expected.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    listener.abort();

    let map = finished
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let (mut latencies, mut post_ms) = (Vec::new(), Vec::new());
    let (mut http_errors, mut failed, mut missing) = (0usize, 0usize, 0usize);
    for (measured, at, answered, id) in &sent {
        if !measured {
            continue;
        }
        post_ms.push(answered.duration_since(*at).as_secs_f64() * 1e3);
        match id.map(|id| map.get(&id)) {
            None => http_errors += 1,
            Some(None) => missing += 1,
            Some(Some((_, false))) => failed += 1,
            Some(Some((done, true))) => {
                latencies.push(done.saturating_duration_since(*at).as_secs_f64() * 1e3);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    post_ms.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    };
    let round = |x: Option<f64>| x.map(|x| (x * 1000.0).round() / 1000.0);
    let mean =
        (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64);
    let result = json!({
        "rate": rate,
        "duration_s": duration,
        "warmup_requests": warmup_n,
        "requests": measured_n,
        "completed": latencies.len(),
        "errors": http_errors + failed + missing,
        "http_errors": http_errors,
        "failed": failed,
        "missing_events": missing,
        "achieved_send_rate": total as f64 / send_secs.max(1e-9),
        "max_send_lag_ms": max_lag.as_secs_f64() * 1e3,
        "p50_ms": round(pct(&latencies, 50.0)),
        "p90_ms": round(pct(&latencies, 90.0)),
        "p99_ms": round(pct(&latencies, 99.0)),
        "p999_ms": round(pct(&latencies, 99.9)),
        "max_ms": round(latencies.last().copied()),
        "mean_ms": round(mean),
        "post_p50_ms": round(pct(&post_ms, 50.0)),
        "post_p99_ms": round(pct(&post_ms, 99.0)),
    });
    eprintln!(
        "e2e-latency: {} of {measured_n} completed, p50 {} ms, p99 {} ms, errors {}",
        latencies.len(),
        result["p50_ms"],
        result["p99_ms"],
        result["errors"]
    );
    println!("{result}");
    Ok(())
}

/// Signs the admin in with 2FA, as an operator does: password login, TOTP
/// enrolment (setup + enable with the current code), then a login completed with the
/// next step's code (the enrolment code may not be replayed). Returns the access token.
async fn admin_token(
    client: &reqwest::Client,
    api: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let credentials = json!({"email": email, "password": password});
    let login = post(client, api, "/auth/login", Some(credentials.clone()), None).await?;
    let first = login["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no access token: {login}"))?
        .to_owned();
    let setup = post(client, api, "/auth/2fa/setup", None, Some(&first)).await?;
    let secret = setup["secret"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no TOTP secret: {setup}"))?
        .to_owned();
    let totp = shared::crypto::totp::Totp::from_base32(&secret)
        .ok_or_else(|| anyhow::anyhow!("TOTP secret is not base32"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    post(
        client,
        api,
        "/auth/2fa/enable",
        Some(json!({"code": totp.code_at(now)})),
        Some(&first),
    )
    .await?;
    let challenge = post(client, api, "/auth/login", Some(credentials), None).await?;
    let mfa_token = challenge["mfa_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no MFA challenge: {challenge}"))?
        .to_owned();
    let code = totp.code_at(now + shared::crypto::totp::STEP_SECS);
    let session = post(
        client,
        api,
        "/auth/login/mfa",
        Some(json!({"mfa_token": mfa_token, "code": code})),
        None,
    )
    .await?;
    session["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access token after 2FA: {session}"))
}

/// `POST /api/v1{path}` with an optional JSON body and bearer token; the JSON answer
/// of a 2xx, an error otherwise.
async fn post(
    client: &reqwest::Client,
    api: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let mut request = client.post(format!("{api}/api/v1{path}"));
    if let Some(body) = &body {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "POST {path}: {status} {body}");
    Ok(body)
}
