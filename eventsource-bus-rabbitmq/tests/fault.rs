//! Fault test: `rabbitmqctl stop_app` / `start_app` mid-stream. Every
//! publish the broker confirmed must be handled once the broker is back.
//! (Its own test binary: cargo runs binaries one after another, so no other
//! test sees the outage.)

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::testkit::probe;
use eventsource_core::{handler_fn, EventBus, Subscription};
use tokio::sync::mpsc;

async fn rabbitmqctl(arg: &str) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run rabbitmqctl ({e}); install rabbitmq-server or run ./scripts/test.sh")
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {arg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the app again even if the test fails midway.
struct Restart;
impl Drop for Restart {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_started_mid_stream_loses_nothing_confirmed() {
    const EVENTS: u64 = 600;
    let mut config = common::config();
    config.publish_timeout = Duration::from_secs(60);
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let (tx, mut handled) = mpsc::unbounded_channel();
    bus.subscribe(
        Subscription::builder("fault")
            .concurrency(4)
            .handler(handler_fn(move |e| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(e.event_id);
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");

    let publisher = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            let mut failed = 0;
            for i in 0..EVENTS {
                let e = probe(&format!("agg-{}", i % 10), i / 10 + 1, i);
                match bus.publish(std::slice::from_ref(&e)).await {
                    Ok(()) => confirmed.push(e.event_id),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await; // pacing, so the outage lands mid-stream
            }
            (confirmed, failed)
        })
    };

    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let id = tokio::time::timeout(Duration::from_secs(10), handled.recv())
            .await
            .expect("first events handled")
            .expect("open");
        seen.insert(id);
    }
    let _restart = Restart;
    rabbitmqctl("stop_app").await;
    assert!(!publisher.is_finished(), "the outage must land mid-stream");
    rabbitmqctl("start_app").await;

    let (confirmed, failed) = publisher.await.expect("publisher task");
    assert_eq!(confirmed.len() as u64 + failed, EVENTS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let missing =
        |seen: &HashSet<uuid::Uuid>| confirmed.iter().filter(|id| !seen.contains(*id)).count();
    while missing(&seen) > 0 {
        match tokio::time::timeout_at(deadline, handled.recv()).await {
            Ok(Some(id)) => {
                seen.insert(id);
            }
            _ => panic!(
                "{} of {} confirmed events were never handled after the restart",
                missing(&seen),
                confirmed.len()
            ),
        }
    }
    println!(
        "rabbitmq fault test: {} confirmed, {failed} refused during the outage, all confirmed handled",
        confirmed.len()
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
