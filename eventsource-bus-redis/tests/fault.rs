//! Fault test: the Redis server is killed and restarted mid-stream. The
//! test runs its own `redis-server` (append-only file, fsync always) on a
//! free port, so that what Redis acknowledged survives the kill, and so
//! that the shared server other tests use is left alone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::start_redis;
use eventsource_core::EventBus;
use eventsource_testkit::free_port;
use eventsource_testkit::survives_outage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged() {
    let dir =
        std::env::temp_dir().join(format!("es-redis-fault-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let mut server = start_redis(port, &dir, &[]).await;
    let mut restarted = None;

    let url = format!("redis://127.0.0.1:{port}");
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config(&url)).await);
    let report = survives_outage(
        bus,
        300,
        Duration::from_millis(3),
        Duration::from_secs(60),
        || async {
            server.kill().await.expect("kill redis-server");
            tokio::time::sleep(Duration::from_millis(500)).await; // the outage itself
            restarted = Some(start_redis(port, &dir, &[]).await);
        },
    )
    .await;
    assert!(
        report.acknowledged > 150,
        "most publishes succeed across a short outage: {report:?}"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Right after a restart Redis answers LOADING while it reads its data
/// back; `connect` waits that out (with backoff, up to its timeout)
/// instead of failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_while_redis_loads_its_data() {
    let dir = std::env::temp_dir().join(format!(
        "es-redis-loading-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let mut server = start_redis(port, &dir, &[]).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
    tokio::task::spawn_blocking(move || {
        let mut conn = client
            .get_connection()
            .expect("connect to the private redis");
        // Enough data that loading it back takes a noticeable while.
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(2_000_000)
            .query::<()>(&mut conn)
            .expect("populate");
        redis::cmd("BGREWRITEAOF")
            .query::<()>(&mut conn)
            .expect("rewrite the append-only file");
        loop {
            let info: String = redis::cmd("INFO")
                .arg("persistence")
                .query(&mut conn)
                .expect("info");
            if info.contains("aof_rewrite_in_progress:0")
                && info.contains("aof_rewrite_scheduled:0")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("populate task");
    server.kill().await.expect("kill redis");
    let _restarted = start_redis(port, &dir, &[]).await;
    let url = format!("redis://127.0.0.1:{port}");
    let started = tokio::time::Instant::now();
    let bus = eventsource_bus_redis::RedisBus::connect(common::config(&url))
        .await
        .unwrap_or_else(|e| panic!("connect while Redis loads: {e}"));
    println!("connected {:?} after the restart", started.elapsed());
    bus.publish(&[eventsource_testkit::probe("a", 1, 1)])
        .await
        .expect("publish once loaded");
    let _ = bus.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
