//! A real clamd for tests, loaded with the workspace's `rules/`, on a port of its own;
//! it can be stopped and started again on the same port, or frozen (SIGSTOP) to play
//! an engine that accepts connections but never answers. Killed when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::{free_port, workspace};

/// Where Debian's `clamav-daemon` installs it (`scripts/services` installs it).
const CLAMD: &str = "/usr/sbin/clamd";

pub struct ClamdServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    started_in: Duration,
}

impl ClamdServer {
    /// Starts clamd on a free port and waits until it answers PING.
    pub async fn spawn() -> ClamdServer {
        let dir =
            std::env::temp_dir().join(format!("conveyor-clamd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("clamd scratch dir");
        let mut server = ClamdServer {
            port: free_port(),
            dir,
            child: None,
            started_in: Duration::ZERO,
        };
        server.write_conf();
        server.start().await;
        server
    }

    /// How long the last start took, until clamd answered PING.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// `127.0.0.1:PORT`, as `CLAMD_ADDR` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts clamd (again, on the same port) and waits until it answers PING.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "clamd is already running");
        let started = Instant::now();
        let log = std::fs::File::create(self.dir.join("stderr.log")).expect("log file");
        let child = Command::new(CLAMD)
            .arg("--config-file")
            .arg(self.dir.join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("{CLAMD} starts (scripts/services clamd): {err}"));
        self.child = Some(child);
        let deadline = started + Duration::from_secs(30);
        while !self.answers_ping().await {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("clamd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "clamd never answered PING: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.started_in = started.elapsed();
    }

    /// Kills clamd and waits until it is gone; [`start`](Self::start) brings it back.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill clamd");
        }
    }

    /// Freezes clamd (SIGSTOP): connections are still accepted, nothing answers.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    /// Thaws a [`pause`](Self::pause)d clamd (SIGCONT).
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    /// clamd's own log (startup, signatures loaded, detections).
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("clamd.log"))
    }

    async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("clamd is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    async fn answers_ping(&self) -> bool {
        let ping = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(b"zPING\0").await?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await?;
            Ok::<_, std::io::Error>(reply == b"PONG\0")
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(true))
        )
    }

    fn write_conf(&self) {
        let conf = format!(
            "Foreground yes\n\
             TCPSocket {port}\n\
             TCPAddr 127.0.0.1\n\
             DatabaseDirectory {rules}\n\
             LogFile {log}\n\
             StreamMaxLength 64M\n\
             MaxFileSize 64M\n\
             MaxScanSize 128M\n",
            port = self.port,
            rules = workspace().join("rules").display(),
            log = self.dir.join("clamd.log").display(),
        );
        std::fs::write(self.dir.join("clamd.conf"), conf).expect("clamd.conf");
    }
}

impl Drop for ClamdServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
