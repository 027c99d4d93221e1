//! Shared by the NATS integration tests: a config on the real server with
//! a namespace of its own per bus.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use eventsource_bus_nats::{NatsBus, NatsBusConfig};
use tokio::process::{Child, Command};

/// `NATS_URL`, or the local server the test script starts.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A config with a fresh namespace and short timings.
pub fn config(url: &str) -> NatsBusConfig {
    let namespace = format!("es-test-{}", uuid::Uuid::now_v7().simple());
    NatsBusConfig::new(url)
        .namespace(namespace)
        .block(Duration::from_millis(200))
        .progress_interval(Duration::from_millis(200))
        .ack_wait(Duration::from_millis(1500))
        .validated()
        .expect("valid test config")
}

/// Connects, failing the test with how to start NATS if it is down.
pub async fn connect(config: NatsBusConfig) -> NatsBus {
    match NatsBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "NATS with JetStream is not reachable at {} ({e}). Start it with \
             ./scripts/test.sh, or `nats-server -js -p 4222 &`, or set NATS_URL.",
            config.redacted_url()
        ),
    }
}

/// A free port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// A private `nats-server -js` on `port` storing in `dir`, with `extra`
/// arguments; killed when dropped.
pub async fn start_nats(port: u16, dir: &Path, extra: &[&str]) -> Child {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .args(extra)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nats-server ({e}); install it with `apt-get install nats-server` or run ./scripts/test.sh"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server did not listen on port {port} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}
