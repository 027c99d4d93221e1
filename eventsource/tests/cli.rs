//! The `eventsource` CLI against the real Redis: an application dead-letters
//! an event, the operator lists it, fixes the bug, and replays it.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource::{
    connect_bus, handler_fn, BusConfig, DeadLetter, HandlerError, RetryPolicy, Subscription,
};
use eventsource_testkit::{dead_letters_of, probe};
use tokio::sync::mpsc;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn cli(namespace: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventsource"))
        .args(["--bus", &redis_url(), "--namespace", namespace])
        .args(args)
        .output()
        .expect("run the eventsource binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_lists_and_replays_dead_letters_from_the_cli() {
    let namespace = format!("es-cli-{}", uuid::Uuid::now_v7().simple());
    let config = BusConfig::from_url(&redis_url())
        .expect("redis url")
        .with_namespace(&namespace);
    let bus = connect_bus(&config).await.unwrap_or_else(|e| {
        panic!("Redis is not reachable ({e}); start it with ./scripts/test.sh")
    });
    let broken = Arc::new(AtomicBool::new(true));
    let (tx, mut handled) = mpsc::unbounded_channel();
    let b = Arc::clone(&broken);
    bus.subscribe(
        Subscription::builder("billing")
            .retry(RetryPolicy::no_retry())
            .handler(handler_fn(move |e| {
                let (b, tx) = (Arc::clone(&b), tx.clone());
                async move {
                    if b.load(Ordering::SeqCst) {
                        return Err(HandlerError::transient("tax service says no"));
                    }
                    let _ = tx.send(e.event_id);
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    let sent = probe("order-7", 1, 7);
    bus.publish(std::slice::from_ref(&sent))
        .await
        .expect("publish");
    dead_letters_of(&bus, "billing", 1, Duration::from_secs(10)).await;

    let (ok, stdout, stderr) = cli(&namespace, &["--json", "dlq", "list", "--group", "billing"]);
    assert!(ok, "list failed: {stderr}");
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

    let (ok, _, stderr) = cli(&namespace, &["dlq", "purge", "--group", "billing"]);
    assert!(
        !ok && stderr.contains("--yes"),
        "purge without --yes must refuse: {stderr}"
    );

    broken.store(false, Ordering::SeqCst);
    let (ok, _, stderr) = cli(&namespace, &["dlq", "replay-all", "--group", "billing"]);
    assert!(ok, "replay-all failed: {stderr}");
    assert!(
        stderr.contains("[1/1] replayed"),
        "progress is printed: {stderr}"
    );
    let got = tokio::time::timeout(Duration::from_secs(10), handled.recv())
        .await
        .expect("replayed event handled")
        .expect("open");
    assert_eq!(got, sent.event_id);

    let (ok, _, stderr) = cli(&namespace, &["dlq", "show", "billing/0-1"]);
    assert!(!ok && stderr.contains("not found"), "{stderr}");
    let (ok, _, stderr) = cli(&namespace, &["stats"]);
    assert!(ok, "stats failed: {stderr}");
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
