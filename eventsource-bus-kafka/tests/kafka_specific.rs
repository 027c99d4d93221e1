//! Behaviour particular to the Kafka backend: raw records that do not
//! decode, and commits that never pass an unhandled record.

mod common;

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::testkit::{dead_letters_of, probe, Recorder};
use eventsource_core::{handler_fn, EventBus, Subscription};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_record_is_dead_lettered_raw_and_the_consumer_goes_on() {
    let config = common::config(&common::kafka_url());
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config.clone()).await);
    let (mut rec, h) = Recorder::new("group `raw`");
    bus.subscribe(
        Subscription::builder("raw")
            .handler(h)
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&config.events_topic())
                .key("agg-1")
                .payload("not json at all"),
            Duration::from_secs(10),
        )
        .await
        .expect("raw record acknowledged");
    let good = probe("agg-1", 1, 1);
    bus.publish(std::slice::from_ref(&good))
        .await
        .expect("publish");
    assert_eq!(
        rec.expect(1, Duration::from_secs(30)).await[0].event_id,
        good.event_id
    );
    let letters = dead_letters_of(&bus, "raw", 1, Duration::from_secs(30)).await;
    let l = &letters[0];
    assert!(l.envelope.is_none());
    assert!(
        l.raw
            .as_deref()
            .is_some_and(|r| r.contains("not json at all")),
        "{l:?}"
    );
    assert!(l.error.contains("ce_id"), "{}", l.error);
    assert!(l.source.starts_with(&config.events_topic()), "{}", l.source);
    let stats = bus.stats().await.expect("stats");
    assert_eq!(
        stats.streams.get(&config.events_topic()),
        Some(&2),
        "raw + good record: {stats:?}"
    );
    assert_eq!(
        stats.groups.get("raw").map(|g| g.dead_letters),
        Some(1),
        "{stats:?}"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhandled_record_is_never_committed_and_comes_back() {
    let config = common::config(&common::kafka_url());
    let first: Arc<dyn EventBus> = Arc::new(common::connect(config.clone()).await);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    first
        .subscribe(
            Subscription::builder("commits")
                .concurrency(4)
                .handler(handler_fn(move |e| {
                    let (started_tx, done_tx) = (started_tx.clone(), done_tx.clone());
                    async move {
                        if e.aggregate_id == "stuck" {
                            let _ = started_tx.send(());
                            std::future::pending::<()>().await; // never finishes
                        }
                        let _ = done_tx.send(e.event_id);
                        Ok(())
                    }
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let stuck = probe("stuck", 1, 0);
    let others: Vec<_> = (1..=20).map(|i| probe(&format!("agg-{i}"), 1, i)).collect();
    first
        .publish(std::slice::from_ref(&stuck))
        .await
        .expect("publish");
    first.publish(&others).await.expect("publish");
    tokio::time::timeout(Duration::from_secs(30), started.recv())
        .await
        .expect("stuck started")
        .expect("open");
    for _ in 0..others.len() {
        tokio::time::timeout(Duration::from_secs(30), done.recv())
            .await
            .expect("others handled")
            .expect("open");
    }
    let report = first
        .shutdown(Duration::from_millis(200))
        .await
        .expect("shutdown");
    assert_eq!(report.abandoned, 1, "{report:?}");

    // The group again: the stuck record was never committed, so it comes back.
    let second: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let (tx, mut again) = mpsc::unbounded_channel();
    second
        .subscribe(
            Subscription::builder("commits")
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut redelivered = Vec::new();
    loop {
        let id = tokio::time::timeout_at(deadline, again.recv())
            .await
            .expect("the unhandled record is delivered again")
            .expect("open");
        if id == stuck.event_id {
            break;
        }
        redelivered.push(id);
    }
    // Whatever else arrives within a second: records after the stuck one in
    // its partition. Those of the other partitions were committed.
    while let Ok(Some(id)) = tokio::time::timeout(Duration::from_secs(1), again.recv()).await {
        redelivered.push(id);
    }
    assert!(
        redelivered.len() < others.len(),
        "finished records were committed: only those behind the stuck one may return ({} of {} did)",
        redelivered.len(),
        others.len()
    );
    second
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
