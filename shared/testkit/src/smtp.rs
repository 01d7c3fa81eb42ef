//! A real SMTP server for tests: aiosmtpd (`shared/testkit/smtp_server.py`), one
//! process and one mail directory per test; every message lands as an `.eml` file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::process::{Process, scratch_dir, wait_for_port};
use crate::workspace;

/// The SMTP server; messages land in `dir`.
pub struct Smtp {
    pub port: u16,
    pub dir: PathBuf,
    process: Option<Process>,
}

impl Smtp {
    pub async fn start(port: u16, args: &[&str]) -> Smtp {
        let dir = scratch_dir("smtp");
        let mut smtp = Smtp {
            port,
            dir,
            process: None,
        };
        smtp.restart(args).await;
        smtp
    }

    /// Starts (again) on the same port and directory.
    pub async fn restart(&mut self, args: &[&str]) {
        let log = self.dir.with_extension("log");
        let mut command = Command::new("python3");
        command
            .arg(workspace().join("shared/testkit/smtp_server.py"))
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .args(args)
            .env("PYTHONPATH", workspace().join(".dev/py"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        let child = command.spawn().expect("python3 runs the SMTP server");
        self.process = Some(Process { child, log });
        wait_for_port(self.port).await;
    }

    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            let status = process.terminate(Duration::from_secs(10)).await;
            assert!(status.success() || status.code().is_none());
        }
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// The messages once at least `n` have arrived (polled, panics after `within`).
    pub async fn wait_for_messages(&self, n: usize, within: Duration) -> Vec<String> {
        let what = format!("{n} messages arrive at the SMTP server");
        crate::eventually(within, &what, || async {
            let messages = self.messages();
            (messages.len() >= n).then_some(messages)
        })
        .await
    }
}

/// A header's value in a raw message.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}
