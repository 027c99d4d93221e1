//! Whether the Kafka-compatible test broker answers fetches faithfully, on
//! raw rdkafka alone (no project code): a consumer that starts at an
//! offset inside a record batch must get that offset first.
//!
//! tansu 0.6.0 answers such a fetch with the *next* batch, so a group that
//! resumes mid-batch (a member taking over a partition) skips records. The
//! project's Kafka tests therefore publish one record per batch
//! (`batch.num.messages=1`, see `common::config`), under which every offset
//! starts a batch and the broker is faithful; the second test here proves
//! that configuration.

mod common;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const RECORDS: i64 = 40;
const START: i64 = 7;

fn bootstrap() -> String {
    common::config(&common::kafka_url()).bootstrap_servers
}

/// Produces `RECORDS` records to a new one-partition topic with
/// `batch.num.messages` = `per_batch` (all sent at once, so they batch),
/// then reads from offset `START` on; returns the offsets read.
async fn offsets_read_from_mid_topic(per_batch: usize) -> Vec<i64> {
    let bootstrap = bootstrap();
    let topic = format!("es-fidelity-{}", uuid::Uuid::now_v7().simple());
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("creating a topic on the Kafka broker at {bootstrap} failed ({e}); start it with ./scripts/test.sh")
        });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "50")
        .set("batch.num.messages", per_batch.to_string())
        .create()
        .expect("producer");
    let sends: Vec<_> = (0..RECORDS)
        .map(|i| {
            let (producer, topic) = (producer.clone(), topic.clone());
            async move {
                let payload = i.to_string();
                producer
                    .send(
                        FutureRecord::to(&topic).key("k").payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|d| d.offset)
                    .expect("record acknowledged")
            }
        })
        .collect();
    let written = futures::future::join_all(sends).await;
    assert_eq!(
        written,
        (0..RECORDS).collect::<Vec<_>>(),
        "records written at offsets 0..{RECORDS}"
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(START))
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut offsets = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && offsets.last() != Some(&(RECORDS - 1)) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            offsets.push(m.offset());
        }
    }
    offsets
}

/// Documents the defect: with records batched, a fetch from inside a
/// batch skips to the next batch. Fails once the broker is fixed, which is
/// the signal to drop `batch.num.messages=1` from the test config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_skips_records_when_a_fetch_starts_inside_a_batch() {
    let offsets = offsets_read_from_mid_topic(10_000).await;
    println!("batched: asked for offset {START}, read {offsets:?}");
    assert_ne!(
        offsets.first(),
        Some(&START),
        "the broker answered a fetch inside a batch faithfully: the tansu defect is gone"
    );
}

/// With one record per batch every offset starts a batch, and a reader
/// from offset 7 gets 7, 8, ... 39 with nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_batch_makes_the_broker_faithful() {
    let offsets = offsets_read_from_mid_topic(1).await;
    assert_eq!(
        offsets,
        (START..RECORDS).collect::<Vec<_>>(),
        "reading from offset {START} must return every record from there, in order"
    );
}
