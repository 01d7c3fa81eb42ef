//! A real S3-compatible server for storage tests: moto in server mode
//! (`python3 -m moto.server`, installed by `scripts/services`' `ensure_moto`), one
//! process and one bucket per test, stopped by its own pid when the handle drops.

use std::process::Stdio;
use std::time::{Duration, Instant};

use shared::storage::S3Settings;
use tokio::process::Command;

use crate::process::Process;
use crate::{free_port, workspace};

/// The bucket every [`MotoS3`] creates; objects go under [`MotoS3::PREFIX`] in it.
pub const BUCKET: &str = "conveyor-test";

/// moto on a free port with [`BUCKET`] created.
pub struct MotoS3 {
    port: u16,
    client: reqwest::Client,
    process: Process,
}

impl MotoS3 {
    /// The key prefix [`MotoS3::url`] names, so tests also cover a prefixed store.
    pub const PREFIX: &str = "uploads";

    /// Starts moto, waits until it answers and creates the bucket.
    pub async fn start() -> MotoS3 {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "conveyor-moto-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let mut command = Command::new("python3");
        command
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        let local_packages = workspace().join(".dev/py");
        if local_packages.is_dir() {
            let mut paths = vec![local_packages];
            if let Some(existing) = std::env::var_os("PYTHONPATH") {
                paths.extend(std::env::split_paths(&existing));
            }
            command.env(
                "PYTHONPATH",
                std::env::join_paths(paths).expect("PYTHONPATH"),
            );
        }
        let child = command
            .spawn()
            .expect("python3 runs moto (scripts/services moto installs it)");
        let moto = MotoS3 {
            port,
            client: reqwest::Client::new(),
            process: Process { child, log },
        };
        moto.wait_until_it_answers().await;
        let created = moto
            .client
            .put(format!("{}/{BUCKET}", moto.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(created.status().is_success(), "create bucket: {created:?}");
        moto
    }

    async fn wait_until_it_answers(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self
                .client
                .get(format!("{}/", self.endpoint()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto never answered on {}:\n{}",
                self.port,
                self.process.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The storage URL for `Storage::from_url`: `s3://conveyor-test/uploads`.
    pub fn url(&self) -> String {
        format!("s3://{BUCKET}/{}", Self::PREFIX)
    }

    /// Path-style over plain HTTP; moto accepts any credentials.
    pub fn settings(&self) -> S3Settings {
        S3Settings::local_server(&self.endpoint(), "moto-test-key", "moto-test-secret")
    }

    /// Every key in the bucket (prefix included), asked of moto directly.
    pub async fn keys(&self) -> Vec<String> {
        let listing = self.get(&format!("/{BUCKET}?list-type=2")).await;
        elements(&listing, "Key")
    }

    /// Keys of the multipart uploads started but neither completed nor aborted.
    pub async fn pending_uploads(&self) -> Vec<String> {
        let listing = self.get(&format!("/{BUCKET}?uploads")).await;
        elements(&listing, "Key")
    }

    async fn get(&self, path: &str) -> String {
        let response = self
            .client
            .get(format!("{}{path}", self.endpoint()))
            .send()
            .await
            .expect("moto answers");
        assert!(response.status().is_success(), "GET {path}: {response:?}");
        response.text().await.expect("body")
    }
}

impl Drop for MotoS3 {
    /// The process is killed by its own handle; the log stays only for a failed test.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.process.log);
        }
    }
}

/// The texts of every `<name>…</name>` in an S3 XML answer.
fn elements(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|rest| {
            rest.split_once(close.as_str())
                .map(|(text, _)| text.to_owned())
        })
        .collect()
}
