//! Fault test: the NATS server is SIGKILLed mid-publish and restarted. The
//! test runs its own `nats-server -js` on a free port with a store of its
//! own, so the shared server other tests use is left alone. A JetStream
//! file store is written before the PubAck goes out (the operating system
//! holds it if the process dies; only a power loss can take what was not
//! yet synced), so every acknowledged event must be handled.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::EventBus;
use eventsource_testkit::survives_outage;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

async fn start_nats(port: u16, dir: &Path) -> Child {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_mid_publish_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("es-nats-fault-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let mut server = start_nats(port, &dir).await;
    let mut restarted = None;

    let url = format!("nats://127.0.0.1:{port}");
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config(&url)).await);
    let report = survives_outage(
        bus,
        300,
        Duration::from_millis(3),
        Duration::from_secs(60),
        || async {
            server.start_kill().expect("SIGKILL nats-server");
            server.wait().await.expect("nats-server ended");
            tokio::time::sleep(Duration::from_millis(500)).await; // the outage itself
            restarted = Some(start_nats(port, &dir).await);
        },
    )
    .await;
    assert!(
        report.acknowledged > 150,
        "most publishes succeed across a short outage: {report:?}"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
