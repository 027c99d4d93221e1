//! Forgetting a person on RabbitMQ (#29): every queue of the bus's
//! namespace (group queues, dead-letter queues) read raw with lapin —
//! bodies and headers — holds personal data only sealed, before and after
//! the subject is forgotten.

mod common;

use std::sync::Arc;

use eventsource_core::EventBus;
use lapin::options::BasicGetOptions;

/// The broker's queues whose names hold `namespace` (`rabbitmqctl`: every
/// queue the backend made, whatever it is named).
fn queues(namespace: &str) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "name", "--quiet", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ (./scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "rabbitmqctl list_queues failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|q| q.contains(namespace))
        .map(str::to_owned)
        .collect()
}

/// Every message of every queue of `namespace`, read without taking it
/// (the channel closes unacked, so the broker keeps them).
async fn dump(url: String, namespace: String) -> Vec<u8> {
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ is reachable (start it with ./scripts/test.sh)");
    let mut raw = Vec::new();
    let names = queues(&namespace);
    assert!(!names.is_empty(), "no queue of `{namespace}` on the broker");
    for queue in names {
        let channel = conn.create_channel().await.expect("channel");
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
        {
            raw.extend_from_slice(&message.delivery.data);
            raw.extend(format!("{:?}", message.delivery.properties.headers()).into_bytes());
        }
        let _ = channel.close(200, "read".into()).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_on_the_bus() {
    let mut config = common::config();
    config.single_active_consumer = true;
    let namespace = config.namespace.clone();
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let url = common::amqp_url();
    let raw = move || Box::pin(dump(url.clone(), namespace.clone())) as _;
    eventsource_testkit::personal_data_is_sealed_on_the_bus(
        bus,
        &raw,
        std::time::Duration::from_secs(30),
    )
    .await;
}
