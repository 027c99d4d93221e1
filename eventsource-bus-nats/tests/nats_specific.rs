//! Behaviour particular to the NATS backend: raw messages that do not
//! decode, a dead member's messages, deduplicated publishes, letters the
//! bus cannot read, partition counts and takeovers, connect errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eventsource_bus_nats::{NatsBus, NatsBusConfig};
use eventsource_core::{EventBus, FailureKind, Subscription};
use eventsource_testkit::{dead_letters_of, eventually, probe, Recorder};

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

/// Letters written to a group's dead-letter stream by another tool (one
/// not JSON, one JSON without the failure headers) list as unreadable,
/// stop no member (a parking one, on partitions), count, and are
/// discarded and purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_dead_letters_stop_nothing() {
    let config = common::config(&common::nats_url()).partitions(2u32);
    let subject = config.dlq_subject("foreign");
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let write_letters = || async {
        raw_publish(subject.clone(), &[], "{not json written-by-hand").await;
        raw_publish(
            subject.clone(),
            &[],
            r#"{"headers":{"note":"written-by-hand"},"body":""}"#,
        )
        .await;
    };
    eventsource_testkit::an_unreadable_letter_stops_nothing(
        &bus,
        "foreign",
        write_letters,
        "written-by-hand",
        Duration::from_secs(20),
    )
    .await;
    let left = bus
        .dead_letters()
        .list(&eventsource_core::DeadLetterQuery::group("foreign"))
        .await
        .expect("list");
    assert!(
        left.iter()
            .all(|l| l.failure.kind != FailureKind::Unreadable),
        "{left:?}"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// A bus with another partition count, an unpartitioned bus, and a
/// partitioned bus on a namespace with unpartitioned events are refused
/// at connect with a typed error that says what is stored and what to do
/// (the testkit's scenario); every event of an aggregate is on its
/// partition's subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_keeps_its_partition_count() {
    let config_for = |namespace: String, partitions: Option<u32>| {
        let mut config = common::config(&common::nats_url());
        config.namespace = namespace;
        config.partitions = partitions;
        config
    };
    let refusals = eventsource_testkit::a_namespace_keeps_its_partition_count(|ns, partitions| {
        let config = config_for(ns, partitions);
        async move {
            NatsBus::connect(config)
                .await
                .map(|b| Arc::new(b) as Arc<dyn EventBus>)
        }
    })
    .await;
    for e in [&refusals.other_count, &refusals.unpartitioned] {
        let text = e.to_string();
        assert!(
            text.contains("16 partitions") && text.contains("namespace"),
            "{text}"
        );
    }
    let err = &refusals.onto_unpartitioned;
    assert!(err.to_string().contains("unpartitioned events"), "{err}");
    let config = config_for(refusals.namespace.clone(), Some(16));
    let p = eventsource_core::partition_of("order-7", 16);
    let stream = raw_js()
        .await
        .get_stream(config.events_stream())
        .await
        .expect("the events stream");
    let info = stream
        .info_with_subjects(config.partition_subject(p))
        .await
        .expect("subjects");
    let counts: Vec<(String, usize)> = futures::TryStreamExt::try_collect(info)
        .await
        .expect("subject counts");
    assert_eq!(
        counts,
        vec![(config.partition_subject(p), 3)],
        "order-7's events are all on partition {p}'s subject"
    );
}

/// A partition whose owner crashed (it holds messages unacked, its lease
/// and register entry lapse) is taken over by the next member, which
/// handles what the dead owner left first, in stream order, then new
/// events of the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owners_partition_is_taken_over_in_order() {
    let config = common::config(&common::nats_url()).partitions(2u32);
    let bus = common::connect(config.clone()).await;
    // A group on both partitions, made by a member that leaves at once.
    let (_, h) = Recorder::new("founder");
    let founder = bus
        .subscribe(
            Subscription::builder("crash")
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    founder.unsubscribe().await;
    let first: Vec<_> = (1..=4).map(|v| probe("agg-1", v, v)).collect();
    bus.publish(&first).await.expect("publish");
    // The ghost: pulls them (delivered to it, unacked), holds every
    // partition's lease, then is gone.
    let js = raw_js().await;
    let p = eventsource_core::partition_of("agg-1", 2);
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(config.events_stream())
        .await
        .expect("stream")
        .get_consumer(&config.partition_consumer_name("crash", p))
        .await
        .expect("the group's consumer of the partition");
    let pulled: Vec<_> = futures::StreamExt::collect::<Vec<_>>(
        consumer
            .fetch()
            .max_messages(10)
            .messages()
            .await
            .expect("ghost pulls"),
    )
    .await;
    assert_eq!(pulled.len(), 4, "the ghost holds the four events");
    for q in 0..2 {
        let ns = &config.namespace;
        let group = "crash";
        js.publish(format!("{ns}.leases.{group}.{q}"), "ghost".into())
            .await
            .expect("ghost's lease")
            .await
            .expect("stored");
    }
    let later: Vec<_> = (5..=6).map(|v| probe("agg-1", v, v)).collect();
    bus.publish(&later).await.expect("publish");

    let (mut rec, h) = Recorder::new("successor");
    let started = tokio::time::Instant::now();
    let _s = bus
        .subscribe(
            Subscription::builder("crash")
                .concurrency(4)
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe successor");
    let got = rec.expect(6, Duration::from_secs(15)).await;
    assert_eq!(
        got.iter().map(|e| e.aggregate_version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6],
        "the ghost's messages first, in order, then the new ones"
    );
    assert!(
        started.elapsed() >= config.ack_wait / 2,
        "taken over only once the ghost's lease lapsed ({:?})",
        started.elapsed()
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_keeps_one_reader_and_fails_over() {
    let config = common::config(&common::nats_url()).single_active_consumer(true);
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    eventsource_testkit::one_member_reads_and_a_standby_takes_over(bus, Duration::from_millis(500))
        .await;
}

/// A server that wants a user and password: the URL's credentials (a `/`
/// in the password, percent-encoded) are sent as such and never shown —
/// a wrong password is refused at connect, naming the server only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_authenticate_and_stay_hidden() {
    let dir = std::env::temp_dir().join(format!("es-nats-auth-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = eventsource_testkit::free_port();
    let _server = common::start_nats(port, &dir, &["--user", "eve", "--pass", "s3c/ret"]).await;
    let good = common::config(&format!("nats://eve:s3c%2Fret@127.0.0.1:{port}"));
    let bus = common::connect(good).await;
    bus.publish(&[probe("a", 1, 1)]).await.expect("publish");
    bus.shutdown(Duration::from_secs(2))
        .await
        .expect("shutdown");
    let wrong = common::config(&format!("nats://eve:hunter2@127.0.0.1:{port}"))
        .connect_timeout(Duration::from_secs(3));
    let err = NatsBus::connect(wrong).await.expect_err("wrong password");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("refused the URL's credentials"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An events stream made before the bus, in memory (a restart of the
/// server loses it): refused under `durability = require` naming the
/// stream's storage, only logged under `warn`; the bus's own (file)
/// stream connects under `require`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_stream_in_memory_is_refused_under_require() {
    use eventsource_core::{Durability, Error};
    let config = common::config(&common::nats_url()).durability(Durability::Require);
    let own = NatsBus::connect(config.clone())
        .await
        .expect("no stream yet: connects");
    own.publish(&[probe("d-1", 1, 1)]).await.expect("publish");
    own.shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
    let again = NatsBus::connect(config.clone())
        .await
        .expect("its own file stream");
    again
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");

    let memory = common::config(&common::nats_url()).durability(Durability::Require);
    raw_js()
        .await
        .create_stream(jetstream::stream::Config {
            name: memory.events_stream(),
            subjects: vec![memory.events_subject()],
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("a memory stream");
    match NatsBus::connect(memory.clone()).await {
        Err(Error::Durability { backend, risks }) => {
            assert_eq!(backend, "nats");
            assert_eq!(risks.len(), 1, "{risks:?}");
            assert!(risks[0].setting.ends_with("storage") && risks[0].value == "memory");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("connected to a stream that a restart empties"),
    }
    let warned = NatsBus::connect(memory.durability(Durability::Warn))
        .await
        .expect("warn connects");
    warned
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
}

/// A member keeps several pull requests out per lane, each answered as
/// the server shares a burst among the requests waiting (in turn). They
/// share one inbox, so what they deliver is read in stream order: a
/// busy aggregate's events reach the handler in order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_pulls_keep_each_aggregates_order() {
    const AGGREGATES: u64 = 4;
    const EACH: u64 = 400;
    let config = common::config(&common::nats_url()).prefetch(256);
    let bus = common::connect(config).await;
    let seen: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u64>>>> = Arc::default();
    let (tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let recorded = Arc::clone(&seen);
    let subscription = Subscription::builder("pipelined")
        .concurrency(4)
        .handler(eventsource_core::handler_fn(
            move |e: eventsource_core::EventEnvelope| {
                let (recorded, tx) = (Arc::clone(&recorded), tx.clone());
                async move {
                    recorded
                        .lock()
                        .expect("lock")
                        .entry(e.aggregate_id.clone())
                        .or_default()
                        .push(e.aggregate_version);
                    let _ = tx.send(());
                    Ok(())
                }
            },
        ))
        .build()
        .expect("valid");
    let handle = bus.subscribe(subscription).await.expect("subscribe");
    let events: Vec<_> = (0..AGGREGATES * EACH)
        .map(|i| probe(&format!("agg-{}", i % AGGREGATES), i / AGGREGATES + 1, i))
        .collect();
    for chunk in events.chunks(100) {
        bus.publish(chunk).await.expect("publish");
    }
    for i in 0..AGGREGATES * EACH {
        tokio::time::timeout(Duration::from_secs(30), done.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {} handled", AGGREGATES * EACH))
            .expect("open");
    }
    let seen = seen.lock().expect("lock").clone();
    for (aggregate, versions) in &seen {
        let expected: Vec<u64> = (1..=EACH).collect();
        let first_wrong = versions.iter().zip(&expected).position(|(v, e)| v != e);
        assert!(
            versions == &expected,
            "{aggregate}'s events out of order or not once each: {} handled, first wrong at {first_wrong:?}: {:?}",
            versions.len(),
            first_wrong.map(|i| &versions[i..(i + 8).min(versions.len())]),
        );
    }
    assert_eq!(seen.len() as u64, AGGREGATES);
    drop(handle);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
