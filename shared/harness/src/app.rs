//! The test harness: a real PostgreSQL database per test (from `#[sqlx::test]`), a
//! Redis key namespace per test, and the api's real router served on a random port.

use std::collections::HashMap;
use std::sync::Arc;

use api::AppState;
use axum::Router;
use shared::Config;
use shared::config::AuthConfig;
use shared::redis::Redis;
use sqlx::PgPool;

pub use crate::{PASSWORD, database_url_of, eventually, redis_url};

/// Both configurations the api reads, from one set of test variables.
#[derive(Debug)]
pub struct TestConfig {
    pub config: Config,
    pub auth: AuthConfig,
}

impl std::ops::Deref for TestConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

/// A test config: `APP_ENV=test`, a fresh Redis prefix, plus `overrides` (of either
/// section).
pub fn test_config(overrides: &[(&str, &str)]) -> TestConfig {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_ENV".to_owned(), "test".to_owned()),
        ("REDIS_URL".to_owned(), redis_url()),
        ("REDIS_PREFIX".to_owned(), prefix),
        // Periodic jobs would appear in tests' job lists at a tick: the scheduler's
        // tests tick schedulers themselves (`Scheduler::tick`).
        ("SCHEDULER_ENABLED".to_owned(), "false".to_owned()),
        // Room for what tests do; the limiter's own tests set small budgets.
        ("RATE_LIMIT_AUTH".to_owned(), "10000/60".to_owned()),
        ("RATE_LIMIT_SUBMIT".to_owned(), "10000/60".to_owned()),
        ("RATE_LIMIT_READ".to_owned(), "100000/60".to_owned()),
        // Message quotas likewise: tests/quotas.rs sets small ones.
        ("EMAIL_QUOTA_USER_PER_HOUR".to_owned(), "1000000".to_owned()),
        ("EMAIL_QUOTA_USER_PER_DAY".to_owned(), "1000000".to_owned()),
        (
            "EMAIL_QUOTA_PROMOTER_PER_HOUR".to_owned(),
            "1000000".to_owned(),
        ),
        (
            "EMAIL_QUOTA_PROMOTER_PER_DAY".to_owned(),
            "1000000".to_owned(),
        ),
        (
            "EMAIL_QUOTA_ADMIN_PER_HOUR".to_owned(),
            "1000000".to_owned(),
        ),
        ("EMAIL_QUOTA_ADMIN_PER_DAY".to_owned(), "1000000".to_owned()),
    ]);
    for (key, value) in overrides {
        vars.insert((*key).to_owned(), (*value).to_owned());
    }
    TestConfig {
        config: Config::from_lookup(|key| vars.get(key).cloned()).expect("test config is valid"),
        auth: AuthConfig::from_lookup(|key| vars.get(key).cloned())
            .expect("test auth config is valid"),
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: AppState,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }
}

/// Serves the api's real router on 127.0.0.1:0.
pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, test_config(&[]), None).await
}

/// Serves the api with `config`, and `extra` routes merged under `/api/v1` (for
/// behaviour no production route shows yet, such as a panicking handler).
pub async fn spawn_app_with(
    pool: PgPool,
    config: TestConfig,
    extra: Option<Router<AppState>>,
) -> TestApp {
    // As the binary does first thing: metrics recorded before this are lost.
    shared::telemetry::prometheus();
    let redis = Redis::connect_lazy(&config).expect("redis url parses");
    let TestConfig { config, auth } = config;
    let state = AppState::new(Arc::new(config), Arc::new(auth), pool, redis).expect("state builds");
    let mut api_v1 = api::routes::api_v1(&state.config);
    if let Some(extra) = extra {
        api_v1 = api_v1.merge(extra);
    }
    let router = api::app::build(state.clone(), api_v1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, service).await.expect("server runs");
    });
    let client = reqwest::Client::builder().build().expect("client builds");
    TestApp {
        address,
        client,
        state,
    }
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let header_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["type"], format!("urn:conveyor:problem:{code}"));
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(
        body["request_id"].as_str().map(str::to_owned),
        header_id,
        "request_id matches header"
    );
    body
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A password zxcvbn rates strong.
/// A signed-in client: the access token and the refresh token from the cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
}

/// A fresh unique email address.
pub fn unique_email() -> String {
    format!("user-{}@example.org", uuid::Uuid::new_v4().simple())
}

/// The refresh token in a response's `Set-Cookie`, if any.
pub fn refresh_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("__Secure-conveyor_refresh="))
        .and_then(|rest| rest.split(';').next())
        .map(str::to_owned)
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json_authed(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_authed(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/register",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login_response(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs in (no 2FA) and returns the session.
    pub async fn login(&self, email: &str, password: &str) -> Session {
        let response = self.login_response(email, password).await;
        assert_eq!(response.status(), 200, "login");
        session_from(response).await
    }

    /// A new `user` with a confirmed address (made as `api create-user` makes one),
    /// signed in; returns (email, session). Self-registration and its verification
    /// link are tested in tests/verification.rs.
    pub async fn signed_in_user(&self) -> (String, Session) {
        let (_, email) = self.create_account(shared::domain::Role::User).await;
        let session = self.login(&email, PASSWORD).await;
        (email, session)
    }

    /// The verification token of the newest account email queued for `user_id`,
    /// read the way the worker reads it (the content is sealed).
    pub async fn verification_token(&self, user_id: uuid::Uuid) -> Option<String> {
        let payload: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT j.payload FROM jobs j JOIN requests r ON r.id = j.request_id \
             WHERE r.owner_id = $1 AND r.kind = 'account_email' ORDER BY j.created_at DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.state.pool)
        .await
        .expect("query");
        let job: shared::jobs::email::EmailJob =
            serde_json::from_value(payload?).expect("an email job");
        let content = job
            .sealed_content
            .expect("account emails are sealed")
            .open(&self.state.security.pii)
            .expect("opens");
        let (_, rest) = content.text.split_once("token=")?;
        Some(
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    }

    /// Creates an account with `role` directly through the service (as `create-admin`
    /// does) and returns its (id, email).
    pub async fn create_account(&self, role: shared::domain::Role) -> (uuid::Uuid, String) {
        let email = unique_email();
        let account = api::services::accounts::NewAccount::parse(&email, PASSWORD, None, None)
            .expect("valid");
        let row =
            api::services::accounts::create(&self.state.pool, &self.state.security, account, role)
                .await
                .expect("account created");
        (row.id, email)
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/refresh"))
            .header(
                "cookie",
                format!("__Secure-conveyor_refresh={refresh_token}"),
            )
            .header("x-requested-with", "test")
            .send()
            .await
            .expect("request sent")
    }
}

pub async fn session_from(response: reqwest::Response) -> Session {
    let refresh_token = refresh_cookie(&response).expect("refresh cookie set");
    let body: serde_json::Value = response.json().await.expect("json");
    Session {
        access_token: body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
        refresh_token,
    }
}

/// The current TOTP code for a base32 secret, `steps_ahead` 30-second steps from now.
pub fn totp_code(secret: &str, steps_ahead: u64) -> String {
    let totp = shared::crypto::totp::Totp::from_base32(secret).expect("base32 secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp.code_at(now + steps_ahead * shared::crypto::totp::STEP_SECS)
}

impl TestApp {
    /// A new user, registered and signed in: their email and session.
    pub async fn register_user(&self) -> (String, Session) {
        self.signed_in_user().await
    }

    /// `POST /api/v1/emails` of one message; returns the 202 body.
    pub async fn send_email(&self, token: &str, to: &str, subject: &str) -> serde_json::Value {
        let response = self
            .client
            .post(self.url("/api/v1/emails"))
            .bearer_auth(token)
            .json(
                &serde_json::json!({"to": [to], "subject": subject, "text": "Hello from a test."}),
            )
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 202, "email accepted");
        response.json().await.expect("json")
    }

    /// `POST /api/v1/uploads` of one file (multipart, a `file` part with `file_name`
    /// and, when given, a declared `content_type`).
    pub async fn upload(
        &self,
        token: &str,
        file_name: &str,
        content_type: Option<&str>,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let mut part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
        if let Some(content_type) = content_type {
            part = part.mime_str(content_type).expect("a valid media type");
        }
        // The file name as sent, unescaped (as curl sends it): hostile names reach
        // the server as they are.
        let form = reqwest::multipart::Form::new()
            .percent_encode_noop()
            .part("file", part)
            .text("description", "uploaded by a test");
        self.client
            .post(self.url("/api/v1/uploads"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("sent")
    }

    /// An upload that must be accepted (202); returns its body.
    pub async fn upload_ok(
        &self,
        token: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> serde_json::Value {
        let response = self.upload(token, file_name, None, bytes).await;
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(status, 202, "upload accepted: {body}");
        body
    }

    /// An admin whose login passed 2FA (TOTP enrolled, then a login with a code):
    /// its access token.
    pub async fn admin_with_2fa(&self) -> String {
        let (_, email) = self.create_account(shared::domain::Role::Admin).await;
        let session = self.login(&email, PASSWORD).await;
        let setup: serde_json::Value = self
            .client
            .post(self.url("/api/v1/auth/2fa/setup"))
            .bearer_auth(&session.access_token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let secret = setup["secret"].as_str().expect("secret").to_owned();
        let enabled = self
            .client
            .post(self.url("/api/v1/auth/2fa/enable"))
            .bearer_auth(&session.access_token)
            .json(&serde_json::json!({"code": totp_code(&secret, 0)}))
            .send()
            .await
            .expect("sent");
        assert_eq!(enabled.status(), 200, "2FA enabled");
        let login: serde_json::Value = self
            .login_response(&email, PASSWORD)
            .await
            .json()
            .await
            .expect("json");
        let mfa_token = login["mfa_token"].as_str().expect("mfa token").to_owned();
        // The enrolment code may not be replayed: use the next step's code.
        let response = self
            .post_json(
                "/api/v1/auth/login/mfa",
                &serde_json::json!({"mfa_token": mfa_token, "code": totp_code(&secret, 1)}),
            )
            .await;
        assert_eq!(response.status(), 200, "second factor accepted");
        session_from(response).await.access_token
    }

    /// Submits `count` canary jobs for `owner` through the same service the routes
    /// use; returns the request id.
    pub async fn submit_canaries(&self, owner: uuid::Uuid, count: usize) -> uuid::Uuid {
        let submission = api::services::requests::Submission {
            owner,
            kind: shared::domain::RequestKind::Canary,
            name: Some("canary".to_owned()),
            correlation_id: None,
            content: None,
            send_at: None,
            jobs: (0..count)
                .map(|_| shared::jobs::NewJob::of(&shared::jobs::CanaryJob {}).expect("encoded"))
                .collect(),
            quota: None,
            callback_url: None,
            wait_for: Vec::new(),
        };
        api::services::requests::submit(&self.state, submission, None)
            .await
            .expect("submitted")
            .id
    }

    /// Runs the worker runtime in process, with every queue of the worker binary,
    /// until no job is queued, running or waiting to retry.
    pub async fn run_pending_jobs(&self) {
        let runtime = worker::runtime::Runtime::with_queues(
            self.state.config.clone(),
            self.state.pool.clone(),
            self.state.redis.clone(),
        )
        .expect("the runtime builds");
        self.run_until_idle(runtime).await;
    }

    /// Runs `runtime` (tests register their own handlers on it) until no job is
    /// pending, then shuts it down gracefully.
    pub async fn run_until_idle(&self, runtime: worker::runtime::Runtime) {
        let mut running = RunningWorker::start(runtime);
        let pool = self.state.pool.clone();
        // Idle is checked now, then after each commit the completer signals.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let pending = shared::db::jobs::count_pending(&pool)
                .await
                .expect("pending jobs");
            if pending == 0 {
                break;
            }
            let signalled = tokio::time::timeout_at(deadline, running.next_signal()).await;
            assert!(
                signalled.is_ok(),
                "not within 60 s: every job ends ({pending} pending)"
            );
        }
        running.stop().await;
    }

    /// Starts the worker runtime in process with every queue of the worker binary;
    /// it runs until [`RunningWorker::stop`].
    pub fn start_worker(&self) -> RunningWorker {
        RunningWorker::start(
            worker::runtime::Runtime::with_queues(
                self.state.config.clone(),
                self.state.pool.clone(),
                self.state.redis.clone(),
            )
            .expect("the runtime builds"),
        )
    }

    /// The scheduler of a worker of the binary, its schedules recorded as a worker
    /// records them at start; tests tick it themselves (`Scheduler::tick`).
    pub async fn worker_scheduler(&self) -> worker::scheduler::Scheduler {
        let runtime = worker::runtime::Runtime::with_queues(
            self.state.config.clone(),
            self.state.pool.clone(),
            self.state.redis.clone(),
        )
        .expect("the runtime builds");
        runtime
            .scheduler
            .register()
            .await
            .expect("schedules recorded");
        runtime.scheduler.clone()
    }

    /// Starts a worker runtime in process that runs only `queues` (with the worker
    /// binary's handlers); it runs until [`RunningWorker::stop`].
    pub fn start_worker_for(&self, queues: &[shared::queue::QueueName]) -> RunningWorker {
        let mut runtime = worker::runtime::Runtime::with_queues(
            self.state.config.clone(),
            self.state.pool.clone(),
            self.state.redis.clone(),
        )
        .expect("the runtime builds");
        runtime.retain_queues(queues);
        RunningWorker::start(runtime)
    }

    /// Enrols 2FA for a signed-in account of any role (`admin_with_2fa` does the same
    /// for a new admin, then signs in with a code): its secret and recovery codes. The
    /// enrolment code's step is spent; sign in with `totp_code(&secret, 1)`.
    pub async fn enable_2fa(&self, session: &Session) -> (String, Vec<String>) {
        let setup: serde_json::Value = self
            .client
            .post(self.url("/api/v1/auth/2fa/setup"))
            .bearer_auth(&session.access_token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        let secret = setup["secret"].as_str().expect("secret").to_owned();
        assert!(
            setup["otpauth_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("otpauth://totp/Conveyor:")),
            "{setup}"
        );
        let enabled = self
            .client
            .post(self.url("/api/v1/auth/2fa/enable"))
            .bearer_auth(&session.access_token)
            .json(&serde_json::json!({"code": totp_code(&secret, 0)}))
            .send()
            .await
            .expect("sent");
        assert_eq!(enabled.status(), 200, "2FA enabled");
        let body: serde_json::Value = enabled.json().await.expect("json");
        let codes: Vec<String> = body["recovery_codes"]
            .as_array()
            .expect("recovery codes")
            .iter()
            .map(|c| c.as_str().expect("string").to_owned())
            .collect();
        assert_eq!(codes.len(), 10, "recovery codes");
        (secret, codes)
    }
}

/// A worker runtime running in process, in the background, with its signals on.
pub struct RunningWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    signals: tokio::sync::broadcast::Receiver<worker::signals::Signal>,
}

impl RunningWorker {
    pub fn start(mut runtime: worker::runtime::Runtime) -> Self {
        runtime.signals = worker::signals::Signals::enabled();
        let signals = runtime.signals.subscribe().expect("signals are on");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runtime.run(None, async move {
            let _ = stopped.await;
        }));
        RunningWorker {
            stop,
            task,
            signals,
        }
    }

    /// The next signal of its completer or scheduler (`None` after a lag: signals
    /// were missed, look at the database again).
    pub async fn next_signal(&mut self) -> Option<worker::signals::Signal> {
        loop {
            match self.signals.recv().await {
                Ok(signal) => return Some(signal),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
                // The runtime stopped: nothing more will come.
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Waits until the completer has recorded how `job` ended (within `within`);
    /// returns how (`succeeded`, `retried`, `dead`, …).
    pub async fn job_recorded(
        &mut self,
        job: uuid::Uuid,
        within: std::time::Duration,
    ) -> &'static str {
        let wait = async {
            loop {
                if let Some(worker::signals::Signal::Committed(outcomes)) = self.next_signal().await
                    && let Some((_, outcome)) = outcomes.iter().find(|(id, _)| *id == job)
                {
                    return *outcome;
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("job {job} not recorded within {within:?}"))
    }

    /// Shuts it down gracefully; it must stop cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the runtime task")
            .expect("the runtime stops cleanly");
    }
}

impl TestApp {
    /// `POST` with a bearer token and no body.
    pub async fn post_authed(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// Makes every queued job of `queue` dead with `error` through the worker's own
    /// transitions (claim — which starts the requests —, bury, finish the requests), as a handler's permanent failure
    /// would — without running a handler per job. Returns their ids.
    pub async fn bury_queued(
        &self,
        queue: shared::queue::QueueName,
        error: &str,
    ) -> Vec<uuid::Uuid> {
        use shared::db::{jobs, requests};
        let pool = &self.state.pool;
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE queue = $1 AND status = 'queued'")
                .bind(queue)
                .fetch_all(pool)
                .await
                .expect("queued jobs");
        let stale_before = sqlx::types::time::OffsetDateTime::now_utc();
        let claimed = jobs::claim(pool, &ids, "testkit", stale_before)
            .await
            .expect("claimed");
        assert_eq!(claimed.len(), ids.len(), "every queued job claimed");
        let failures: Vec<jobs::Failure> = claimed
            .iter()
            .map(|job| jobs::Failure {
                id: job.id,
                error: error.to_owned(),
                retry_at: None,
            })
            .collect();
        let refs: Vec<&jobs::Failure> = failures.iter().collect();
        let mut request_ids: Vec<uuid::Uuid> =
            claimed.iter().filter_map(|j| j.request_id).collect();
        request_ids.sort_unstable();
        request_ids.dedup();
        let mut tx = pool.begin().await.expect("begin");
        let buried = jobs::bury(&mut tx, &refs).await.expect("buried");
        let finished = requests::finish(&mut tx, &self.state.config.queues, &request_ids)
            .await
            .expect("closed");
        tx.commit().await.expect("commit");
        finished.webhooks.dispatch(pool, &self.state.redis).await;
        buried
    }
}
