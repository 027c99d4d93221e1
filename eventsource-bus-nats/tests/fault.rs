//! Fault test: the NATS server is SIGKILLed mid-publish and restarted. The
//! test runs its own `nats-server -js` on a free port with a store of its
//! own, so the shared server other tests use is left alone. A JetStream
//! file store is written before the PubAck goes out (the operating system
//! holds it if the process dies; only a power loss can take what was not
//! yet synced), so every acknowledged event must be handled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::start_nats;
use eventsource_core::EventBus;
use eventsource_testkit::free_port;
use eventsource_testkit::survives_outage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_mid_publish_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("es-nats-fault-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let mut server = start_nats(port, &dir, &[]).await;
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
            restarted = Some(start_nats(port, &dir, &[]).await);
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
