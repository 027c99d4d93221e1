//! Fault test: the Redis server is killed and restarted mid-stream. The
//! test runs its own `redis-server` (append-only file, fsync always) on a
//! free port, so that what Redis acknowledged survives the kill, and so
//! that the shared server other tests use is left alone.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::testkit::probe;
use eventsource_core::{handler_fn, EventBus, Subscription};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

async fn start_redis(port: u16, dir: &Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it with `apt-get install redis-server` or run ./scripts/test.sh"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server did not listen on port {port} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged() {
    const EVENTS: u64 = 300;
    let dir =
        std::env::temp_dir().join(format!("es-redis-fault-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let mut server = start_redis(port, &dir).await;

    let url = format!("redis://127.0.0.1:{port}");
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config(&url)).await);
    let (tx, mut handled) = mpsc::unbounded_channel();
    bus.subscribe(
        Subscription::builder("fault")
            .concurrency(4)
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

    let publisher = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0..EVENTS {
                let e = probe(&format!("agg-{}", i % 10), i / 10 + 1, i);
                match bus.publish(std::slice::from_ref(&e)).await {
                    Ok(()) => acked.push(e.event_id),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(3)).await; // pacing, so the outage lands mid-stream
            }
            (acked, failed)
        })
    };

    // Let part of the stream through, then kill the server and bring it back.
    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let id = tokio::time::timeout(Duration::from_secs(10), handled.recv())
            .await
            .expect("first events handled")
            .expect("open");
        seen.insert(id);
    }
    server.kill().await.expect("kill redis-server");
    assert!(!publisher.is_finished(), "the outage must land mid-stream");
    tokio::time::sleep(Duration::from_millis(500)).await; // the outage itself
    let _server = start_redis(port, &dir).await;

    let (acked, failed) = publisher.await.expect("publisher task");
    assert!(acked.len() as u64 + failed == EVENTS);
    assert!(
        acked.len() as u64 > EVENTS / 2,
        "most publishes succeed across a short outage: {} failed",
        failed
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let missing =
        |seen: &HashSet<uuid::Uuid>| acked.iter().filter(|id| !seen.contains(*id)).count();
    while missing(&seen) > 0 {
        match tokio::time::timeout_at(deadline, handled.recv()).await {
            Ok(Some(id)) => {
                seen.insert(id);
            }
            _ => panic!(
                "{} of {} acknowledged events were never handled after the restart",
                missing(&seen),
                acked.len()
            ),
        }
    }
    println!(
        "redis fault test: {} acknowledged, {failed} refused during the outage, all acknowledged handled",
        acked.len()
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
