//! Fault test: the broker (tansu on SQLite storage, its own process on a
//! free port) is killed and started again on the same file mid-stream.
//! Every record the broker acknowledged must be handled.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::testkit::survives_outage;
use eventsource_core::EventBus;
use tokio::process::{Child, Command};

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
    let dir =
        std::env::temp_dir().join(format!("es-kafka-fault-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("tansu.db");
    let port = free_port();
    let mut broker = start_tansu(port, &db).await;

    let url = format!("kafka://127.0.0.1:{port}");
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(common::config(&url)).await);
    let mut restarted = None;
    let report = survives_outage(
        bus,
        300,
        Duration::from_millis(5),
        Duration::from_secs(120),
        || async {
            broker.kill().await.expect("kill tansu");
            tokio::time::sleep(Duration::from_millis(500)).await; // the outage itself
            restarted = Some(start_tansu(port, &db).await);
        },
    )
    .await;
    assert!(report.acknowledged > 0, "{report:?}");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
