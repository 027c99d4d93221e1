//! A known workload, then the values Prometheus scrapes from `/metrics`.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource::{handler_fn, DeadLetterQuery, EventEnvelope, HandlerError, Subscription};
use metrics_prometheus::{router, Metrics};
use tokio_util::sync::CancellationToken;

/// `GET /metrics` over a plain TCP connection; the body.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("the server listens");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample named `name` whose labels contain every one of
/// `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_what_the_bus_did() {
    let metrics = Metrics::install().expect("exporter");
    let bus = eventsource::connect_url("memory://").await.expect("bus");
    let fixed = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&fixed);
    let _billing = bus
        .subscribe(
            Subscription::builder("billing")
                .handler(handler_fn(move |e| {
                    let f = Arc::clone(&f);
                    async move {
                        if e.aggregate_id == "bad" && !f.load(Ordering::SeqCst) {
                            return Err(HandlerError::permanent("cannot bill this order"));
                        }
                        Ok(())
                    }
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    // 5 events in one publish: 4 handled, 1 dead-lettered; then fixed and replayed.
    let orders: Vec<EventEnvelope> = ["o-1", "o-2", "bad", "o-3", "o-4"]
        .iter()
        .map(|id| EventEnvelope::from_json("order", *id, 1, "placed", serde_json::json!({})))
        .collect();
    bus.publish(&orders).await.expect("publish");
    let dlq = bus.dead_letters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = bus.stats().await.expect("stats");
        if stats.handled == 4 && stats.dead_lettered == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fixed.store(true, Ordering::SeqCst);
    assert_eq!(
        dlq.replay_all(&DeadLetterQuery::group("billing"))
            .await
            .expect("replay"),
        1
    );

    let stop = CancellationToken::new();
    tokio::spawn(eventsource::metrics::watch_groups(
        bus.clone(),
        vec!["billing".into()],
        Duration::from_millis(20),
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(metrics)).await });

    let memory = r#"messaging_system="memory""#;
    let billing = r#"messaging_consumer_group_name="billing""#;
    // Polled: the replay is handled and the gauges read, asynchronously.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .expect("scrape");
        if sample(&text, "eventsource_handled_total", &[billing]) == Some(5.0)
            && sample(&text, "eventsource_dlq_depth", &[billing]).is_some()
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not there yet:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (name, labels, want) in [
        ("eventsource_published_total", vec![memory], 5.0),
        ("eventsource_handled_total", vec![memory, billing], 5.0),
        ("eventsource_failed_attempts_total", vec![billing], 1.0),
        ("eventsource_dead_lettered_total", vec![billing], 1.0),
        ("eventsource_replayed_total", vec![billing], 1.0),
        (
            "eventsource_handler_duration_seconds_count",
            vec![billing, r#"outcome="ok""#],
            5.0,
        ),
        (
            "eventsource_handler_duration_seconds_count",
            vec![billing, r#"outcome="error""#],
            1.0,
        ),
        (
            "eventsource_publish_duration_seconds_count",
            vec![memory],
            1.0,
        ),
        ("eventsource_in_flight", vec![billing], 0.0),
        ("eventsource_consumer_lag", vec![billing], 0.0),
        ("eventsource_dlq_depth", vec![billing], 0.0),
        ("eventsource_consumer_members", vec![billing], 1.0),
    ] {
        assert_eq!(
            sample(&text, name, &labels),
            Some(want),
            "{name} {labels:?} in:\n{text}"
        );
    }
    stop.cancel();
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
