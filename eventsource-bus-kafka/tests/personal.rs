//! Forgetting a person on Kafka (#29): every topic of the bus's prefix
//! (events, dead letters and their markers) read raw with plain rdkafka —
//! values, keys and headers — holds personal data only sealed, before and
//! after the subject is forgotten.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_core::EventBus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Every record of every topic named `prefix*`, from the beginning, read
/// until the topics stay quiet for 2 s.
fn dump(bootstrap: &str, prefix: &str) -> Vec<u8> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("{prefix}-raw-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("the Kafka broker is reachable (start it with ./scripts/test.sh)");
    let mut tpl = TopicPartitionList::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(prefix))
    {
        for p in topic.partitions() {
            tpl.add_partition_offset(topic.name(), p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    assert!(tpl.count() > 0, "no topic of `{prefix}` on the broker");
    consumer.assign(&tpl).expect("assign");
    let mut raw = Vec::new();
    let (deadline, mut quiet_since) = (Instant::now() + Duration::from_secs(60), Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                raw.extend_from_slice(m.payload().unwrap_or_default());
                raw.extend_from_slice(m.key().unwrap_or_default());
                if let Some(headers) = m.headers() {
                    for h in headers.iter() {
                        raw.extend_from_slice(h.key.as_bytes());
                        raw.extend_from_slice(h.value.unwrap_or_default());
                    }
                }
            }
            Some(Err(e)) => panic!("reading the topics raw: {e}"),
            None => {}
        }
    }
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_on_the_bus() {
    let config = common::config(&common::kafka_url());
    let (bootstrap, prefix) = (
        config.bootstrap_servers.clone(),
        config.topic_prefix.clone(),
    );
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let raw = move || {
        let (bootstrap, prefix) = (bootstrap.clone(), prefix.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || dump(&bootstrap, &prefix))
                .await
                .expect("raw read")
        }) as _
    };
    eventsource_testkit::personal_data_is_sealed_on_the_bus(bus, &raw, Duration::from_secs(60))
        .await;
}
