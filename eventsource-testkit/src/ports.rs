//! Private servers for fault and durability tests (never the shared
//! brokers): a free local port to start one on, and waiting until it
//! listens.

use std::net::TcpListener;
use std::time::Duration;

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// Waits until something accepts connections on `127.0.0.1:port`,
/// failing the test after `patience` with `server` named.
pub async fn wait_until_listening(port: u16, patience: Duration, server: &str) {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{server} did not listen on port {port} within {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
