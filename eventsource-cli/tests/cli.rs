//! The `eventsource` CLI against the real Redis: an application dead-letters
//! an event, the operator lists it, fixes the bug, and replays it.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{announced, dead_lettered_order, redis_bus, redis_url};
use eventsource::DeadLetter;
use eventsource_testkit::probe;

fn cli(namespace: &str, args: &[&str]) -> (i32, String, String) {
    run(&[&["--bus", &redis_url(), "--namespace", namespace], args].concat())
}

/// Runs the binary; its exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .args(args)
        .env_remove("EVENTSOURCE_BUS")
        .env_remove("EVENTSOURCE_NAMESPACE")
        .output()
        .expect("run the eventsource binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
        letters[0].envelope.as_ref().map(|e| e.event_id),
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
