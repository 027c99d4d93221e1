//! Behaviour particular to the NATS backend: raw messages that do not
//! decode, a dead member's messages, deduplicated publishes, connect
//! errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eventsource_bus_nats::{NatsBus, NatsBusConfig};
use eventsource_core::EventBus;
use eventsource_testkit::{dead_letters_of, eventually, probe};

async fn raw_js() -> jetstream::Context {
    let client = async_nats::connect(common::nats_url())
        .await
        .expect("NATS reachable (start it with ./scripts/test.sh)");
    jetstream::new(client)
}

/// Publishes `body` (with `headers`) to `subject` with the raw client,
/// waiting for the stream's acknowledgement.
async fn raw_publish(subject: String, headers: &[(&str, &str)], body: &str) {
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, *v);
    }
    raw_js()
        .await
        .publish_with_headers(subject, map, body.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_message_is_dead_lettered_raw_and_replayable_after_the_fix() {
    let config = common::config(&common::nats_url());
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config.clone()).await);
    let write_garbage = || {
        raw_publish(
            config.events_subject(),
            &[("ce-id", "not-a-uuid")],
            r#"{"id":"not-a-uuid","data":{}}"#,
        )
    };
    let (letter, mut rec) = eventsource_testkit::garbage_is_dead_lettered_raw(
        &bus,
        write_garbage,
        "not-a-uuid",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        letter.failure.error.contains("`id` is malformed"),
        "{}",
        letter.failure.error
    );
    assert!(
        letter.failure.source.starts_with(&config.events_stream()),
        "{}",
        letter.failure.source
    );
    assert_eq!(letter.failure.attempts, 0, "never reached the handler");

    // Still undecodable when replayed: it comes back to the DLQ from the
    // group's replay stream, and reaches no other group.
    bus.dead_letters().replay(&letter.id).await.expect("replay");
    let again = dead_letters_of(&bus, "raw", 1, Duration::from_secs(10)).await;
    assert!(
        again[0]
            .failure
            .source
            .starts_with(&config.replay_stream("raw")),
        "{}",
        again[0].failure.source
    );
    assert!(
        again[0]
            .raw_body()
            .is_some_and(|r| r.contains("not-a-uuid")),
        "{:?}",
        again[0].raw_body()
    );
    rec.expect_nothing(Duration::from_millis(300)).await;
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// Member B of the group, started after A died holding a message, gets it
/// without any call, handles it once and acks it: nothing is left unacked
/// in the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_message_goes_to_another_member() {
    let config = common::config(&common::nats_url());
    let (b, _sent) = eventsource_testkit::a_dead_members_event_goes_to_another(
        || {
            let config = config.clone();
            async move { Arc::new(common::connect(config).await) as Arc<dyn EventBus> }
        },
        eventsource_testkit::BJoins::AfterTheDeath,
        Duration::from_secs(15),
    )
    .await;
    eventually(
        "B to count the message handled and ack it",
        Duration::from_secs(10),
        || {
            let b = b.clone();
            async move {
                let stats = b.stats().await.expect("stats");
                let in_flight = stats.groups.get("takeover").map(|g| g.in_flight);
                (stats.handled == 1 && in_flight == Some(0)).then_some(())
            }
        },
    )
    .await;
    b.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown B");
}

/// The event id is the `Nats-Msg-Id`: an event published twice (a retry
/// after a lost acknowledgement, or a caller's own retry) is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_twice_is_stored_once() {
    let config = common::config(&common::nats_url());
    let bus = common::connect(config.clone()).await;
    let event = probe("dup-1", 1, 1);
    let other = probe("dup-2", 1, 2);
    bus.publish(std::slice::from_ref(&event))
        .await
        .expect("first");
    bus.publish(&[event, other]).await.expect("second");
    let stats = bus.stats().await.expect("stats");
    assert_eq!(
        stats.streams.get(&config.events_stream()),
        Some(&2),
        "two distinct events stored, the repeated one once: {stats:?}"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn unreachable_server_fails_at_connect_naming_it_without_password() {
    let config = NatsBusConfig::new("nats://user:hunter2@127.0.0.1:1")
        .connect_timeout(Duration::from_secs(2))
        .validated()
        .expect("valid");
    let err = NatsBus::connect(config)
        .await
        .expect_err("nothing listens on port 1");
    let text = format!("{err} {err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
