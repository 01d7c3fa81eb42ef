//! Child processes a test starts (servers, the binaries) and waits on: each is killed
//! by its own pid when its handle drops.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A scratch directory of its own under the system's temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "conveyor-e2e-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .await
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// SIGTERM, then the exit status (within `within`).
    pub async fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("-TERM").await;
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
