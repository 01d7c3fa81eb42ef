//! End-to-end harness: the real `api` and `worker` binaries, a real SMTP server
//! (testkit's [`Smtp`]), a PostgreSQL database per test (from `#[sqlx::test]`) and a
//! Redis key prefix per test. Everything a test starts is stopped by its own pid when
//! the handle drops.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::Command;

pub use testkit::process::{Process, scratch_dir, wait_for_port};
pub use testkit::smtp::{Smtp, header};
pub use testkit::{KEY, PASSWORD, database_url_of, free_port, redis_url, workspace};

/// A workspace binary (`api`, `worker`) of the profile the caller was built in: test
/// executables live in `target/<profile>/deps`, the binaries one level up; a program
/// (the chaos suite) lives beside them.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the executable's path");
    let beside = exe.parent().expect("target/<profile>[/deps]");
    let path = if beside.ends_with("deps") {
        beside.parent().expect("target/<profile>").join(name)
    } else {
        beside.join(name)
    };
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --bin {name}`",
        path.display()
    );
    path
}

/// The api and its workers, on one database and one Redis prefix.
pub struct System {
    pub env: Vec<(String, String)>,
    pub api: Option<Process>,
    pub workers: Vec<Process>,
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
    pub email: String,
    dir: PathBuf,
}

impl System {
    /// Environment for both binaries, with `overrides` on top.
    pub async fn new(pool: &PgPool, smtp_port: u16, overrides: &[(&str, &str)]) -> System {
        let api_port = free_port();
        let mut env: Vec<(String, String)> = [
            ("APP_ENV", "test".to_owned()),
            ("RUST_LOG", "info,sqlx=warn".to_owned()),
            ("DATABASE_URL", database_url_of(pool).await),
            ("REDIS_URL", redis_url()),
            (
                "REDIS_PREFIX",
                format!("e2e-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("API_ADDR", format!("127.0.0.1:{api_port}")),
            ("METRICS_ADDR", format!("127.0.0.1:{}", free_port())),
            ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
            ("SMTP_TIMEOUT_SECS", "10".to_owned()),
            ("JWT_SIGNING_KEY", KEY.to_owned()),
            ("PII_KEY", KEY.to_owned()),
            ("BLIND_INDEX_KEY", KEY.to_owned()),
            ("JOB_HEARTBEAT_TIMEOUT_MS", "2000".to_owned()),
            ("DISPATCH_INTERVAL_MS", "200".to_owned()),
            ("REDELIVERY_TIMEOUT_SECS", "3".to_owned()),
            ("EMAILS_RETRY_BASE_MS", "200".to_owned()),
            ("EMAILS_RETRY_CAP_MS", "1000".to_owned()),
            ("SHUTDOWN_GRACE_SECS", "20".to_owned()),
            ("RATE_LIMIT_AUTH", "10000/60".to_owned()),
            ("RATE_LIMIT_SUBMIT", "10000/60".to_owned()),
            ("RATE_LIMIT_READ", "100000/60".to_owned()),
            ("EMAIL_QUOTA_USER_PER_HOUR", "1000000".to_owned()),
            ("EMAIL_QUOTA_USER_PER_DAY", "1000000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        System {
            env,
            api: None,
            workers: Vec::new(),
            base: format!("http://127.0.0.1:{api_port}"),
            client: reqwest::Client::new(),
            token: String::new(),
            email: format!("e2e-{}@example.org", uuid::Uuid::new_v4().simple()),
            dir: scratch_dir("system"),
        }
    }

    fn command(&self, program: &Path, name: &str, extra: &[(&str, &str)]) -> (Command, PathBuf) {
        let log = self
            .dir
            .join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(program);
        let file = std::fs::File::create(&log).expect("log");
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.dir)
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        (command, log)
    }

    /// Starts the api, waits until it answers, and signs a user in.
    pub async fn start_api(&mut self) {
        let (mut command, log) = self.command(&binary("api"), "api", &[]);
        self.api = Some(Process {
            child: command.spawn().expect("api starts"),
            log,
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .client
            .get(format!("{}/health/live", self.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the api never answered: {}",
                self.api_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.token.is_empty() {
            self.register(&self.email).await;
            self.token = self.login(&self.email).await;
        }
    }

    /// Stops the api with SIGTERM (it must exit 0) and starts it again.
    pub async fn restart_api(&mut self) {
        if let Some(api) = self.api.take() {
            let status = api.terminate(Duration::from_secs(30)).await;
            assert!(status.success(), "the api exits 0 on SIGTERM: {status}");
        }
        self.start_api().await;
    }

    /// Development exactly as `scripts/dev` runs it: `APP_ENV=development` and no key
    /// variable at all, so both binaries take their keys from the development keys
    /// file in their working directory (`.dev/keys.env`).
    pub fn without_keys(&mut self) {
        self.env.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "JWT_SIGNING_KEY" | "PII_KEY" | "BLIND_INDEX_KEY" | "APP_ENV"
            )
        });
        self.env
            .push(("APP_ENV".to_owned(), "development".to_owned()));
    }

    /// The working directory of the processes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn api_log(&self) -> String {
        self.api.as_ref().map(Process::log_text).unwrap_or_default()
    }

    /// Starts a worker with its own metrics port; returns its index.
    pub async fn start_worker(&mut self) -> usize {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (mut command, log) = self.command(
            &binary("worker"),
            "worker",
            &[("WORKER_METRICS_ADDR", &addr)],
        );
        self.workers.push(Process {
            child: command.spawn().expect("worker starts"),
            log,
        });
        wait_for_port(port).await;
        self.workers.len() - 1
    }

    pub fn worker_logs(&self) -> String {
        self.workers
            .iter()
            .map(Process::log_text)
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// Creates a `user` with a confirmed address the way an operator does
    /// (`api create-user`), so no verification email joins the test's messages.
    pub async fn register(&self, email: &str) {
        let (mut command, log) = self.command(
            &binary("api"),
            "create-user",
            &[("ACCOUNT_PASSWORD", PASSWORD)],
        );
        let status = command
            .args(["create-user", "--email", email])
            .status()
            .await
            .expect("api create-user runs");
        assert!(
            status.success(),
            "api create-user: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Makes every account a promoter (campaigns need the role) and signs this
    /// system's account in again (the role is in the token).
    pub async fn promote_everyone(&mut self, pool: &PgPool) {
        sqlx::query("UPDATE users SET role = 'promoter'")
            .execute(pool)
            .await
            .expect("promote");
        self.token = self.login(&self.email.clone()).await;
    }

    /// Signs in and returns an access token.
    pub async fn login(&self, email: &str) -> String {
        let login: Value = self
            .client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        login["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_as(&self.token, path, body).await
    }

    /// [`System::post`] with another account's token.
    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// GETs `path` with `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs an email and returns the request id (asserting 202).
    pub async fn send_email(&self, to: &str, subject: &str) -> String {
        let response = self
            .post(
                "/api/v1/emails",
                &json!({"to": [to], "subject": subject, "text": format!("Body of {subject}")}),
            )
            .await;
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    pub async fn request(&self, id: &str) -> Value {
        self.request_as(&self.token, id).await
    }

    /// [`System::request`] with another account's token.
    pub async fn request_as(&self, token: &str, id: &str) -> Value {
        self.client
            .get(format!("{}/api/v1/requests/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Polls the request until it has finished; returns it.
    pub async fn wait_finished(&self, id: &str, within: Duration) -> Value {
        self.wait_finished_as(&self.token, id, within).await
    }

    /// [`System::wait_finished`] with another account's token.
    pub async fn wait_finished_as(&self, token: &str, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let request = self.request_as(token, id).await;
            if !request["finished_at"].is_null() {
                return request;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} did not finish: {request}\nworkers:\n{}",
                self.worker_logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
