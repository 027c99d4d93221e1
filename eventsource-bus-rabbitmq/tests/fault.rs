//! Fault test: `rabbitmqctl stop_app` / `start_app` mid-stream. Every
//! publish the broker confirmed must be handled once the broker is back.
//! (Its own test binary: cargo runs binaries one after another, so no other
//! test sees the outage.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::EventBus;
use eventsource_testkit::survives_outage;

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
    let mut config = common::config();
    config.publish_timeout = Duration::from_secs(60);
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let _restart = Restart;
    let report = survives_outage(
        bus,
        600,
        Duration::from_millis(5),
        Duration::from_secs(90),
        || async {
            rabbitmqctl("stop_app").await;
            rabbitmqctl("start_app").await;
        },
    )
    .await;
    assert!(report.acknowledged > 0, "{report:?}");
}
