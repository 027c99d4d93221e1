//! Fault test: the broker (tansu on SQLite storage, its own process on a
//! free port) is killed and started again on the same file mid-stream.
//! Every record the broker acknowledged must be handled.

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

fn tansu_bin() -> String {
    std::env::var("TANSU_BIN").unwrap_or_else(|_| {
        let home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        format!("{home}/bin/tansu")
    })
}

async fn start_tansu(port: u16, db: &Path) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_bin())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        // tansu reads the path after `sqlite://` relative to its working directory.
        .arg("--storage-engine")
        .arg(format!("sqlite://{}", db.file_name().and_then(|f| f.to_str()).expect("file name")))
        .current_dir(db.parent().expect("a directory"))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tansu ({e}); install it with ./scripts/test.sh or `cargo install tansu --locked --features dynostore,libsql`"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tansu did not listen on port {port} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_loses_nothing_acknowledged() {
    const EVENTS: u64 = 300;
    let dir =
        std::env::temp_dir().join(format!("es-kafka-fault-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("tansu.db");
    let port = free_port();
    let mut broker = start_tansu(port, &db).await;

    let bus: Arc<dyn EventBus> =
        Arc::new(common::connect(common::config(&format!("kafka://127.0.0.1:{port}"))).await);
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
                tokio::time::sleep(Duration::from_millis(5)).await; // pacing, so the outage lands mid-stream
            }
            (acked, failed)
        })
    };

    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let id = tokio::time::timeout(Duration::from_secs(30), handled.recv())
            .await
            .expect("first events handled")
            .expect("open");
        seen.insert(id);
    }
    broker.kill().await.expect("kill tansu");
    assert!(!publisher.is_finished(), "the outage must land mid-stream");
    tokio::time::sleep(Duration::from_millis(500)).await; // the outage itself
    let _broker = start_tansu(port, &db).await;

    let (acked, failed) = publisher.await.expect("publisher task");
    assert_eq!(acked.len() as u64 + failed, EVENTS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let missing =
        |seen: &HashSet<uuid::Uuid>| acked.iter().filter(|id| !seen.contains(*id)).count();
    while missing(&seen) > 0 {
        match tokio::time::timeout_at(deadline, handled.recv()).await {
            Ok(Some(id)) => {
                seen.insert(id);
            }
            _ => panic!(
                "{} of {} acknowledged records were never handled after the restart",
                missing(&seen),
                acked.len()
            ),
        }
    }
    println!(
        "kafka fault test: {} acknowledged, {failed} refused during the outage, all acknowledged handled",
        acked.len()
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
