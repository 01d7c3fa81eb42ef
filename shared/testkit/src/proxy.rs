//! A TCP proxy on loopback, to make a shared server (PostgreSQL, Redis) unreachable for
//! one test's connections without stopping it: [`TcpProxy::cut`] closes the listener
//! and every connection through it; [`TcpProxy::restore`] listens again on the same
//! port.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct TcpProxy {
    port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Forwards a free loopback port to `target` (`host:port`).
    pub async fn start(target: &str) -> TcpProxy {
        let target: SocketAddr = tokio::net::lookup_host(target)
            .await
            .expect("the target resolves")
            .next()
            .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut proxy = TcpProxy {
            port,
            target,
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task: every connection through the proxy closes with it.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Closes the listener and every connection: the target is unreachable through it.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port is free again");
        self.serve(listener);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
