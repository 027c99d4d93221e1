//! Behaviour particular to the RabbitMQ backend: topic patterns as
//! bindings, fanout and direct exchanges, raw messages that do not decode,
//! queue stats.

mod common;

use std::sync::Arc;
use std::time::Duration;

use eventsource_bus_rabbitmq::ExchangeType;
use eventsource_core::{Error, EventBus, EventEnvelope, EventFilter, Subscription};
use eventsource_testkit::{dead_letters_of, eventually, probe, OtherCreated, Recorder};

/// A raw lapin connection to `url` and a channel on it with publisher
/// confirms: how these tests write what the bus itself would not.
async fn confirmed_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ reachable (start it with ./scripts/test.sh)");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    (conn, channel)
}

/// An event of any aggregate and event type, to build any routing key.
fn named(aggregate: &str, event: &str) -> EventEnvelope {
    EventEnvelope::from_json(aggregate, "id-1", 1, event, serde_json::json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_patterns_route_through_bindings() {
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config()).await);
    let cases = [
        ("user-star", "user.*", vec!["user.registered"]),
        (
            "user-hash",
            "user.#",
            vec!["user.profile.updated", "user.registered"],
        ),
        ("star-registered", "*.registered", vec!["user.registered"]),
        (
            "hash-completed",
            "#.completed",
            vec!["order.completed", "order.payment.completed"],
        ),
    ];
    let mut recorders = Vec::new();
    for (group, pattern, expected) in &cases {
        let (rec, h) = Recorder::new(&format!("pattern `{pattern}`"));
        let s = Subscription::builder(*group)
            .filter(EventFilter::pattern(*pattern).expect("valid"))
            .handler(h)
            .build()
            .expect("valid");
        bus.subscribe(s).await.expect("subscribe");
        recorders.push((rec, expected.clone()));
    }
    bus.publish(&[
        named("user", "registered"),
        named("user", "profile.updated"),
        named("order", "completed"),
        named("order", "payment.completed"),
        named("order", "placed"),
    ])
    .await
    .expect("publish");
    for (rec, expected) in &mut recorders {
        let got = rec.expect(expected.len(), Duration::from_secs(10)).await;
        let mut keys: Vec<String> = got.iter().map(EventEnvelope::routing_key).collect();
        keys.sort();
        assert_eq!(&keys, expected);
        rec.expect_nothing(Duration::from_millis(200)).await;
    }
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_filters_client_side_and_direct_rejects_wildcards() {
    let mut config = common::config();
    config.exchange_type = ExchangeType::Fanout;
    let bus = common::connect(config).await;
    let (mut rec, h) = Recorder::new("fanout group filtering Probe.*");
    bus.subscribe(
        Subscription::builder("fan")
            .filter(EventFilter::pattern("Probe.*").expect("valid"))
            .handler(h)
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    let other = EventEnvelope::new("o-1", 1, &OtherCreated { n: 1 }).expect("encodes");
    bus.publish(&[other, probe("p-1", 1, 2)])
        .await
        .expect("publish");
    let got = rec.expect(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].aggregate_type, "Probe");
    rec.expect_nothing(Duration::from_millis(300)).await;
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");

    let mut config = common::config();
    config.exchange_type = ExchangeType::Direct;
    let bus = common::connect(config).await;
    let err = bus
        .subscribe(
            Subscription::builder("direct")
                .filter(EventFilter::pattern("Probe.*").expect("valid"))
                .handler(Recorder::new("unused").1)
                .build()
                .expect("valid"),
        )
        .await
        .expect_err("wildcards need a topic exchange");
    assert!(matches!(err, Error::Config(_)), "{err}");
    let (mut rec, h) = Recorder::new("direct group on Probe.Created");
    bus.subscribe(
        Subscription::builder("direct")
            .filter(EventFilter::patterns(["Probe.Created"]).expect("valid"))
            .handler(h)
            .build()
            .expect("valid"),
    )
    .await
    .expect("exact keys work");
    bus.publish(&[probe("p-1", 1, 1)]).await.expect("publish");
    rec.expect(1, Duration::from_secs(10)).await;
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_message_is_dead_lettered_raw_and_the_consumer_goes_on() {
    use lapin::options::BasicPublishOptions;
    let config = common::config();
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config.clone()).await);
    let write_garbage = || async {
        let (conn, channel) = confirmed_channel(&config.url).await;
        channel
            .basic_publish(
                config.exchange().into(),
                "Probe.Created".into(),
                BasicPublishOptions::default(),
                b"not json at all",
                lapin::BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        let _ = conn.close(200, "bye".into()).await;
    };
    let (letter, _rec) = eventsource_testkit::garbage_is_dead_lettered_raw(
        &bus,
        write_garbage,
        "not json at all",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        letter.failure.error.contains("cloudEvents:id"),
        "{}",
        letter.failure.error
    );
    assert!(
        letter.failure.source.contains("Probe.Created"),
        "{}",
        letter.failure.source
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_a_groups_backlog() {
    let bus = common::connect(common::config()).await;
    let (mut rec, h) = Recorder::new("group `lagging`");
    let s = bus
        .subscribe(
            Subscription::builder("lagging")
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    bus.publish(&[probe("a", 1, 1)]).await.expect("publish");
    rec.expect(1, Duration::from_secs(10)).await;
    s.unsubscribe().await;
    let events: Vec<_> = (2..=4).map(|v| probe("a", v, v)).collect();
    bus.publish(&events).await.expect("publish");
    let stats = eventually("three messages waiting", Duration::from_secs(10), || {
        let bus = bus.clone();
        async move {
            let stats = bus.stats().await.expect("stats");
            (stats.groups.get("lagging").map(|g| g.pending) == Some(3)).then_some(stats)
        }
    })
    .await;
    let g = &stats.groups["lagging"];
    assert_eq!(g.members, 0, "{g:?}");
    assert_eq!(stats.published, 4);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// Member B gets nothing while A holds the message, and it once A dies
/// (the testkit's scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_unacked_message_goes_to_another_member() {
    let config = common::config();
    let (b, _sent) = eventsource_testkit::a_dead_members_event_goes_to_another(
        || {
            let config = config.clone();
            async move { Arc::new(common::connect(config).await) as Arc<dyn EventBus> }
        },
        eventsource_testkit::BJoins::BeforeTheDeath(Duration::from_millis(300)),
        Duration::from_secs(10),
    )
    .await;
    b.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_keeps_one_member_active_and_fails_over() {
    let mut config = common::config();
    config.single_active_consumer = true;
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    eventsource_testkit::one_member_reads_and_a_standby_takes_over(bus, Duration::from_millis(500))
        .await;
}

/// A partitioned namespace keeps its partition count: a bus with another
/// count, or unpartitioned, is refused at connect with a typed error that
/// says what is stored; a partitioned bus on a namespace with an
/// unpartitioned exchange is refused too (the testkit's scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_keeps_its_partition_count() {
    let refusals = eventsource_testkit::a_namespace_keeps_its_partition_count(|ns, partitions| {
        let mut config = common::config();
        config.namespace = ns;
        config.partitions = partitions;
        async move {
            eventsource_bus_rabbitmq::RabbitBus::connect(config)
                .await
                .map(|b| Arc::new(b) as Arc<dyn EventBus>)
        }
    })
    .await;
    for (e, says) in [
        (&refusals.other_count, "into 16 partitions"),
        (&refusals.unpartitioned, "is partitioned"),
    ] {
        assert!(e.to_string().contains(says), "{e}");
    }
    let err = &refusals.onto_unpartitioned;
    assert!(err.to_string().contains("unpartitioned exchange"), "{err}");
}

/// Partitioned: a member assigned a partition another member is stuck in
/// gets nothing of it (the broker keeps one consumer active per partition
/// queue) until the stuck one dies; then it gets what the dead one never
/// acked and the rest, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_only_once_its_stuck_owner_is_gone() {
    use eventsource_core::handler_fn;
    use tokio::sync::mpsc;

    let mut config = common::config();
    config.partitions = Some(2);
    // An aggregate of partition 1: the second member's once it joins.
    let aggregate = (0..)
        .map(|i| format!("agg-{i}"))
        .find(|id| eventsource_core::partition_of(id, 2) == 1)
        .expect("some id");
    let a = common::connect(config.clone()).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    a.subscribe(
        Subscription::builder("stuck")
            .handler(handler_fn(move |_e| {
                let started_tx = started_tx.clone();
                async move {
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await; // stuck: this member dies with it
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe A");
    let events: Vec<_> = (1..=3).map(|v| probe(&aggregate, v, v)).collect();
    a.publish(&events).await.expect("publish");
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("A started v1")
        .expect("open");

    let b = common::connect(config).await;
    let (mut rec, h) = Recorder::new("member B");
    b.subscribe(
        Subscription::builder("stuck")
            .concurrency(4)
            .handler(h)
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe B");
    // B is assigned partition 1, but A has v1 in flight there.
    rec.expect_nothing(Duration::from_millis(1_500)).await;
    let report = a
        .shutdown(Duration::from_millis(50))
        .await
        .expect("shutdown A");
    assert_eq!(report.abandoned, 1, "{report:?}");
    let got = rec.expect(3, Duration::from_secs(10)).await;
    assert_eq!(
        got.iter().map(|e| e.aggregate_version).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "B takes over what A never acked, in order"
    );
    b.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown B");
}

/// Listing a DLQ takes its letters off the queue until the scan ends, so
/// scans take turns (an exclusive lock queue): four lists at once each see
/// every letter, which a member loading its parked aggregates relies on,
/// and a purge beside a list removes every letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dead_letter_lists_each_see_every_letter() {
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config()).await);
    let failing = Subscription::builder("scans")
        .retry(eventsource_core::RetryPolicy::no_retry())
        .handler(eventsource_core::handler_fn(|_e| async {
            Err(eventsource_core::HandlerError::permanent("always"))
        }))
        .build()
        .expect("valid");
    let _s = bus.subscribe(failing).await.expect("subscribe");
    let events: Vec<EventEnvelope> = (1..=30).map(|n| probe(&format!("a-{n}"), 1, n)).collect();
    bus.publish(&events).await.expect("publish");
    dead_letters_of(&bus, "scans", 30, Duration::from_secs(30)).await;
    let dlq = bus.dead_letters();
    let lists = (0..4).map(|_| {
        let dlq = Arc::clone(&dlq);
        tokio::spawn(async move {
            dlq.list(&eventsource_core::DeadLetterQuery::group("scans"))
                .await
                .expect("list")
                .len()
        })
    });
    for list in futures::future::join_all(lists).await {
        assert_eq!(list.expect("task"), 30, "a list saw every letter");
    }
    // A purge beside a list waits for it: it removes every letter, and
    // none comes back when the list's channel closes.
    let query = eventsource_core::DeadLetterQuery::group("scans");
    let (listed, purged) = tokio::join!(dlq.list(&query), async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        dlq.purge(&query).await
    });
    listed.expect("list");
    assert_eq!(purged.expect("purge"), 30, "the purge took every letter");
    assert!(
        dlq.list(&query).await.expect("list").is_empty(),
        "nothing came back"
    );
    bus.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

/// Two dead letters another tool put in a group's DLQ queue (no failure
/// headers; one without even a message id) list as unreadable, stop no
/// parking member, count, and are discarded and purged. Before, the
/// group's listing failed, and a parking member retried loading its DLQ
/// forever (0 of 20 handled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_dead_letters_stop_nothing() {
    use lapin::options::BasicPublishOptions;
    let config = common::config().partitions(2u32);
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config.clone()).await);
    let write_letters = || async {
        let (conn, channel) = confirmed_channel(&config.url).await;
        for properties in [
            lapin::BasicProperties::default().with_message_id("hand-1".into()),
            lapin::BasicProperties::default(),
        ] {
            channel
                .basic_publish(
                    "".into(),
                    config.dlq("foreign").as_str().into(),
                    BasicPublishOptions::default(),
                    b"written-by-hand",
                    properties,
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
        }
        let _ = conn.close(200, "done".into()).await;
    };
    eventsource_testkit::an_unreadable_letter_stops_nothing(
        &bus,
        "foreign",
        write_letters,
        "written-by-hand",
        Duration::from_secs(20),
    )
    .await;
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// A member joining while the group's last other member leaves: the
/// auto-delete register queue went away between its declaration and the
/// join's consume, and `subscribe` failed NOT_FOUND (11 of 20 runs of
/// this, before). Ten members join and leave twice at once, then a fresh
/// member gets all 50 events; three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_as_others_leave_all_subscribe() {
    for round in 0..3 {
        let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config()).await);
        let churn: Vec<_> = (0..10)
            .map(|i| {
                let bus = Arc::clone(&bus);
                tokio::spawn(async move {
                    for _ in 0..2 {
                        let member = bus
                            .subscribe(
                                Subscription::builder("rolling")
                                    .handler(eventsource_core::handler_fn(|_e| async { Ok(()) }))
                                    .build()
                                    .expect("valid"),
                            )
                            .await
                            .unwrap_or_else(|e| panic!("round {round}, member {i}: {e}"));
                        member.unsubscribe().await;
                    }
                })
            })
            .collect();
        for task in churn {
            task.await.expect("a member joined and left twice");
        }
        let (mut rec, h) = Recorder::new("the fresh member");
        let _fresh = bus
            .subscribe(
                Subscription::builder("rolling")
                    .handler(h)
                    .build()
                    .expect("valid"),
            )
            .await
            .expect("the fresh member subscribes");
        let events: Vec<_> = (1..=50).map(|i| probe(&format!("r-{i}"), 1, i)).collect();
        bus.publish(&events).await.expect("publish");
        assert_eq!(rec.expect(50, Duration::from_secs(20)).await.len(), 50);
        bus.shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    }
}

/// An event whose metadata cannot fit one AMQP frame is refused at once,
/// as the permanent error it is, naming the limit; nothing of its batch is
/// sent, and the shared publisher connection stays up for the next
/// publish. Before, the broker's FRAME_ERROR was retried as transient for
/// the whole publish_timeout, each try killing the shared connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_a_frame_is_refused_without_closing_the_connection() {
    let config = common::config().publish_timeout(Duration::from_secs(5));
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let (mut rec, h) = Recorder::new("group `big`");
    let _member = bus
        .subscribe(
            Subscription::builder("big")
                .handler(h)
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let mut huge = probe("big-1", 1, 1);
    huge.metadata.insert("blob".into(), "x".repeat(1 << 20));
    let fine = probe("big-2", 1, 2);
    let err = bus
        .publish(&[fine.clone(), huge])
        .await
        .expect_err("a 1 MB header cannot be sent");
    // Not Error::Timeout: refused, not retried until publish_timeout.
    assert!(matches!(err, Error::InvalidEvent { .. }), "{err:?}");
    assert!(err.to_string().contains("frame"), "{err}");
    rec.expect_nothing(Duration::from_millis(500)).await;
    bus.publish(std::slice::from_ref(&fine))
        .await
        .expect("the connection is still up");
    assert_eq!(
        rec.expect(1, Duration::from_secs(10)).await[0].event_id,
        fine.event_id
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// `replay_all` goes through one connection and confirmed batches, not a
/// scan per letter (#25 §6: ~90 ms a letter, 1,000 letters in 111 s).
/// What shows it without a timed assertion: the progress reports, one per
/// batch of 200 where there was one per letter. The 1,000 events all come
/// back, each once, and the DLQ is empty after. The time it took is
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_all_sends_letters_back_in_batches() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config()).await);
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(Mutex::new(
        std::collections::HashMap::<uuid::Uuid, usize>::new(),
    ));
    let (f, h) = (Arc::clone(&fixed), Arc::clone(&handled));
    let _s = bus
        .subscribe(
            Subscription::builder("replays")
                .retry(eventsource_core::RetryPolicy::no_retry())
                .concurrency(4usize)
                .handler(eventsource_core::handler_fn(move |e| {
                    let (f, h) = (Arc::clone(&f), Arc::clone(&h));
                    async move {
                        if !f.load(Ordering::SeqCst) {
                            return Err(eventsource_core::HandlerError::permanent("a bug"));
                        }
                        *h.lock().expect("lock").entry(e.event_id).or_default() += 1;
                        Ok(())
                    }
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let events: Vec<EventEnvelope> = (1..=1000)
        .map(|n| probe(&format!("r-{}", n % 50), n / 50 + 1, n))
        .collect();
    for chunk in events.chunks(100) {
        bus.publish(chunk).await.expect("publish");
    }
    dead_letters_of(&bus, "replays", 1000, Duration::from_secs(120)).await;
    fixed.store(true, Ordering::SeqCst);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&reports);
    let started = tokio::time::Instant::now();
    let replayed = bus
        .dead_letters()
        .replay_all_with_progress(
            &eventsource_core::DeadLetterQuery::group("replays"),
            &move |done, total| r.lock().expect("lock").push((done, total)),
        )
        .await
        .expect("replay all");
    eprintln!("replay_all of 1000 letters: {:?}", started.elapsed());
    assert_eq!(replayed, 1000);
    let reports = reports.lock().expect("lock").clone();
    assert!(
        reports.len() <= 5,
        "one progress report per batch of 200, not per letter: {} reports",
        reports.len()
    );
    assert_eq!(reports.last(), Some(&(1000, 1000)));
    eventually("all 1000 handled", Duration::from_secs(60), || {
        let n = handled.lock().expect("lock").len();
        async move { (n == 1000).then_some(()) }
    })
    .await;
    assert!(
        handled.lock().expect("lock").values().all(|n| *n == 1),
        "each replayed event handled once"
    );
    assert!(events
        .iter()
        .all(|e| handled.lock().expect("lock").contains_key(&e.event_id)));
    let left = bus
        .dead_letters()
        .list(&eventsource_core::DeadLetterQuery::group("replays"))
        .await
        .expect("list");
    assert!(left.is_empty(), "{} letters left", left.len());
    bus.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

/// A quorum queue never drops a message that went back to it many times
/// (RabbitMQ 4 drops one after 20 returns unless the queue says
/// otherwise; an `x-delivery-limit` of -1, RabbitMQ 4's "unlimited",
/// made 3.10 drop every returned message): an event returned 25 times by
/// a raw consumer still reaches the group's member afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_keeps_a_message_returned_many_times() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let config = common::config().queue_type(eventsource_bus_rabbitmq::QueueType::Quorum);
    let bus = common::connect(config.clone()).await;
    let group = |h| {
        Subscription::builder("returned")
            .handler(h)
            .build()
            .expect("valid")
    };
    // The group's queue, declared by its first member, then left empty.
    let first = bus
        .subscribe(group(Recorder::new("declares").1))
        .await
        .expect("subscribe");
    first.unsubscribe().await;
    bus.publish(&[probe("q-1", 1, 1)]).await.expect("publish");

    let (conn, channel) = confirmed_channel(&common::amqp_url()).await;
    let queue = config.queue("returned");
    for returned in 0..25 {
        let got = eventually(
            &format!("the event, after {returned} returns"),
            Duration::from_secs(10),
            || async {
                channel
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .expect("basic.get")
            },
        )
        .await;
        got.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("returned");
    }
    let _ = conn.close(200, "bye".into()).await;

    let (mut rec, h) = Recorder::new("group `returned` after 25 returns");
    bus.subscribe(group(h)).await.expect("subscribe");
    let got = rec.expect(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].aggregate_id, "q-1");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// A URL naming nodes that cannot serve before the shared broker: one
/// that refuses (a closed port) and one that accepts and never answers.
/// The bus connects past both, each given one attempt (a third of
/// `connect_timeout`, 5 s here), and publishes. Were the stalled node
/// given the whole timeout, connect would fail with `Error::Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_nodes_connects_past_a_refusing_and_a_stalled_one() {
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stalled_port = stalled.local_addr().expect("addr").port();
    // Accepts and holds every connection without a byte of AMQP.
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = stalled.accept().await {
            sockets.push(socket);
        }
    });
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port() // closed when `l` drops
    };
    let shared = common::amqp_url();
    let broker = common::hosts_of(&shared);
    let mut config = common::config().connect_timeout(Duration::from_secs(15));
    config.url = common::with_hosts(
        &shared,
        &format!("127.0.0.1:{refused},127.0.0.1:{stalled_port},{broker}"),
    );
    let started = std::time::Instant::now();
    let bus = eventsource_bus_rabbitmq::RabbitBus::connect(config)
        .await
        .expect("connects to the third node");
    bus.publish(&[probe("a", 1, 1)]).await.expect("publish");
    println!("connected past two nodes in {:?}", started.elapsed());
    held.abort();
}
