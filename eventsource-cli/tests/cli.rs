//! The `eventsource` CLI against the real Redis: an application dead-letters
//! an event, the operator lists it, fixes the bug, and replays it.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{announced, dead_lettered_order, nats_bus, nats_url, redis_bus, redis_url, run};
use eventsource::DeadLetter;
use eventsource_testkit::probe;

fn cli(namespace: &str, args: &[&str]) -> (i32, String, String) {
    run(&[&["--bus", &redis_url(), "--namespace", namespace], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_lists_and_replays_dead_letters_from_the_cli() {
    let (namespace, bus) = redis_bus("es-cli").await;
    let mut billing = dead_lettered_order(&bus).await;
    let sent = billing.sent.clone();

    let (code, stdout, stderr) = cli(&namespace, &["--json", "dlq", "list", "--group", "billing"]);
    assert_eq!(code, 0, "list failed: {stderr}");
    let letters: Vec<DeadLetter> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(letters.len(), 1, "{stdout}");
    assert_eq!(
        letters[0].envelope().map(|e| e.event_id),
        Some(sent.event_id)
    );
    assert!(letters[0].failure.error.contains("tax service says no"));

    // Global options after the subcommand, and the failure history.
    let id = letters[0].id.clone();
    let (code, stdout, stderr) = run(&[
        "dlq",
        "show",
        &id,
        "--bus",
        &redis_url(),
        "--namespace",
        &namespace,
    ]);
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "first failed",
        "last failed",
        "attempt(s)",
        "tax service says no",
        "\"event_id\"",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let (code, stdout, stderr) = cli(
        &namespace,
        &["--output", "json", "stats", "--group", "billing"],
    );
    assert_eq!(code, 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(stats["stats"]["dead_letters"], 1, "{stdout}");

    // An unknown group is "not found" with the known ones as a hint, not "0 dead letters".
    let (code, _, stderr) = cli(&namespace, &["dlq", "list", "--group", "biling"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("no consumer group `biling`") && stderr.contains("billing"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&namespace, &["dlq", "show", "billing/0-1"]);
    assert_eq!(code, 3, "{stderr}");
    // A purge of an unknown group says so, and nothing else.
    let (code, _, stderr) = cli(&namespace, &["dlq", "purge", "--group", "biling", "--yes"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        !stderr.contains("[0/0]") && stderr.contains("no consumer group `biling`"),
        "{stderr}"
    );

    let (code, _, stderr) = cli(&namespace, &["dlq", "purge", "--group", "billing"]);
    assert_eq!(code, 2, "purge without --yes is a usage error: {stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");

    billing.fixed.store(true, Ordering::SeqCst);
    let (code, stdout, stderr) = cli(
        &namespace,
        &[
            "dlq",
            "replay-all",
            "--group",
            "billing",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0, "replay-all failed: {stderr}");
    assert!(
        stderr.contains("[1/1] replayed"),
        "progress is printed: {stderr}"
    );
    let done: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(done["replayed"], 1, "{stdout}");
    let got = tokio::time::timeout(Duration::from_secs(10), billing.handled.recv())
        .await
        .expect("replayed event handled")
        .expect("open");
    assert_eq!(got, sent.event_id);

    let (code, stdout, stderr) = cli(&namespace, &["stats"]);
    assert_eq!(code, 0, "stats failed: {stderr}");
    assert!(
        stdout.contains("GROUP") && stdout.contains("billing"),
        "{stdout}"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[test]
fn unknown_schemes_and_missing_urls_are_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .args(["--bus", "mqtt://user:hunter2@host", "stats"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown bus url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    // No bus at all: usage.
    let (code, _, stderr) = run(&["stats"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--bus"), "{stderr}");
    // A port nobody listens on: connection, password kept out.
    let (code, _, stderr) = run(&["--bus", "redis://:hunter2@127.0.0.1:1", "stats"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    // The bus from a configuration file.
    let file = std::env::temp_dir().join(format!("es-cli-{}.toml", uuid::Uuid::now_v7().simple()));
    std::fs::write(&file, "[bus]\nurl = \"memory://\"\n").expect("write");
    let (code, stdout, stderr) = run(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--output",
        "json",
        "stats",
    ]);
    std::fs::remove_file(&file).expect("clean up");
    assert_eq!(code, 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(stats["published"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_new_events_as_they_are_published() {
    let (namespace, bus) = redis_bus("es-tail").await;
    let url = redis_url();
    let (tail, started) = announced(&[
        "--bus",
        &url,
        "--namespace",
        &namespace,
        "tail",
        "--filter",
        "Probe.*",
        "--count",
        "2",
        "--output",
        "json",
    ]);
    assert!(started.contains("following"), "{started}");
    let other =
        eventsource::EventEnvelope::from_json("Other", "o-1", 1, "Created", serde_json::json!({}));
    let probes = [probe("t-1", 1, 1), probe("t-2", 1, 2)];
    bus.publish(&[probes[0].clone(), other, probes[1].clone()])
        .await
        .expect("publish");
    let out = tokio::task::spawn_blocking(move || tail.output())
        .await
        .expect("tail exits after --count events");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<uuid::Uuid> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<eventsource::EventEnvelope>(l)
                .expect("an envelope per line")
                .event_id
        })
        .collect();
    assert_eq!(ids, [probes[0].event_id, probes[1].event_id], "{stdout}");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// A group that parks aggregates, on a partitioned Redis namespace (the
/// CLI reads the partition count from its configuration file): `dlq
/// parked` shows the aggregate with its head letter and how many wait;
/// `dlq discard` deletes the head and the parked events are handled, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sees_parked_aggregates_and_discards_the_head() {
    use eventsource::{handler_fn, BusConfig, HandlerError, RetryPolicy, Subscription};
    let namespace = format!("es-cli-park-{}", uuid::Uuid::now_v7().simple());
    let mut config = BusConfig::from_url(&redis_url())
        .expect("redis url")
        .with_namespace(&namespace);
    if let BusConfig::Redis(c) = &mut config {
        c.partitions = Some(4);
    }
    let bus = eventsource::connect_bus(&config).await.unwrap_or_else(|e| {
        panic!("Redis is not reachable ({e}); start it with ./scripts/test.sh")
    });
    let (tx, mut handled) = tokio::sync::mpsc::unbounded_channel();
    bus.subscribe(
        Subscription::builder("shipping")
            .park_aggregate_on_failure(true)
            .retry(RetryPolicy::no_retry())
            .handler(handler_fn(move |e| {
                let tx = tx.clone();
                async move {
                    if e.aggregate_version == 1 {
                        return Err(HandlerError::permanent("address unknown"));
                    }
                    let _ = tx.send(e.aggregate_version);
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    let events: Vec<_> = (1..=3).map(|v| probe("order-9", v, v)).collect();
    bus.publish(&events).await.expect("publish");
    let letters =
        eventsource_testkit::dead_letters_of(&bus, "shipping", 3, Duration::from_secs(15)).await;
    let file = std::env::temp_dir().join(format!("{namespace}.toml"));
    std::fs::write(
        &file,
        format!(
            "[bus]\nurl = \"{}\"\nnamespace = \"{namespace}\"\npartitions = 4\n",
            redis_url()
        ),
    )
    .expect("write");
    let config_file = file.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run(&[
        "--config",
        config_file,
        "--json",
        "dlq",
        "parked",
        "--group",
        "shipping",
    ]);
    assert_eq!(code, 0, "parked failed: {stderr}");
    let parked: Vec<eventsource::ParkedAggregate> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(parked.len(), 1, "{stdout}");
    assert_eq!(parked[0].aggregate_id, "order-9");
    assert_eq!(parked[0].parked, 2);
    assert_eq!(parked[0].head, letters[0].id, "the failed event heads them");
    let (code, _, stderr) = run(&["--config", config_file, "dlq", "discard", &parked[0].head]);
    assert_eq!(code, 0, "discard failed: {stderr}");
    for expected in [2, 3] {
        let got = tokio::time::timeout(Duration::from_secs(15), handled.recv())
            .await
            .expect("released within 15 s")
            .expect("open");
        assert_eq!(got, expected, "released in order");
    }
    let (code, _, stderr) = run(&["--config", config_file, "dlq", "discard", &parked[0].head]);
    assert_eq!(code, 3, "a second discard is not found: {stderr}");
    // Purging a parked aggregate's letters warns that it stays parked.
    let events: Vec<_> = (1..=2).map(|v| probe("order-10", v, v)).collect();
    bus.publish(&events).await.expect("publish");
    eventsource_testkit::dead_letters_of(&bus, "shipping", 2, Duration::from_secs(15)).await;
    let (code, _, stderr) = run(&[
        "--config",
        config_file,
        "dlq",
        "purge",
        "--group",
        "shipping",
        "--yes",
    ]);
    assert_eq!(code, 0, "purge failed: {stderr}");
    assert!(
        stderr.contains("purged 2 dead letter(s)")
            && stderr.contains("1 aggregate(s) were parked behind the purged letters"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&file);
    bus.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
}

/// Purging a group RabbitMQ does not have says "not found" and nothing
/// else: no `[0/0] purged` first, no lapin ERROR lines about the queues
/// it looked for.
#[test]
fn purging_an_unknown_group_on_rabbitmq_only_says_not_found() {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let namespace = format!("es-cli-{}", uuid::Uuid::now_v7().simple());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .env_remove("RUST_LOG")
        .args(["--bus", &url, "--namespace", &namespace])
        .args(["dlq", "purge", "--group", "nosuchgroup", "--yes"])
        .output()
        .expect("run the eventsource binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "RabbitMQ must be running (./scripts/test.sh starts it): {stderr}"
    );
    assert!(
        stderr.contains("no consumer group `nosuchgroup`"),
        "{stderr}"
    );
    assert!(!stderr.contains("[0/0]"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

/// The operator's round on NATS: `stats` from the broker, the letter
/// listed, replayed to its group after the fix, and `tail` following new
/// events — the same commands as on Redis, with a nats:// URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_commands_work_on_nats() {
    let (namespace, bus) = nats_bus("es-cli-nats").await;
    let mut billing = dead_lettered_order(&bus).await;
    let url = nats_url();
    let on_nats =
        |args: &[&str]| run(&[&["--bus", &url, "--namespace", &namespace], args].concat());
    let (code, stdout, stderr) = on_nats(&["--output", "json", "stats", "--group", "billing"]);
    assert_eq!(code, 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(stats["stats"]["dead_letters"], 1, "{stdout}");
    let (code, stdout, stderr) = on_nats(&["--json", "dlq", "list", "--group", "billing"]);
    assert_eq!(code, 0, "{stderr}");
    let letters: Vec<DeadLetter> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        letters
            .iter()
            .map(|l| l.envelope().map(|e| e.event_id))
            .collect::<Vec<_>>(),
        [Some(billing.sent.event_id)],
        "{stdout}"
    );
    billing.fixed.store(true, Ordering::SeqCst);
    let (code, _, stderr) = on_nats(&["dlq", "replay", &letters[0].id]);
    assert_eq!(code, 0, "{stderr}");
    let got = tokio::time::timeout(Duration::from_secs(10), billing.handled.recv())
        .await
        .expect("replayed event handled")
        .expect("open");
    assert_eq!(got, billing.sent.event_id);

    let (tail, started) = announced(&[
        "--bus",
        &url,
        "--namespace",
        &namespace,
        "tail",
        "--count",
        "1",
        "--output",
        "json",
    ]);
    assert!(started.contains("following"), "{started}");
    let next = probe("t-1", 1, 1);
    bus.publish(std::slice::from_ref(&next))
        .await
        .expect("publish");
    let out = tokio::task::spawn_blocking(move || tail.output())
        .await
        .expect("tail exits after --count events");
    assert!(out.status.success(), "{out:?}");
    let seen: eventsource::EventEnvelope =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("an envelope");
    assert_eq!(seen.event_id, next.event_id);
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
