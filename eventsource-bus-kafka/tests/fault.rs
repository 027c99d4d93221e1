//! Fault test: the broker (tansu on SQLite storage, its own process on a
//! free port) is killed and started again on the same file mid-stream.
//! Every record the broker acknowledged must be handled.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::EventBus;
use eventsource_testkit::{free_port, survives_outage};
use tokio::process::{Child, Command};

fn tansu_bin() -> String {
    std::env::var("TANSU_BIN").unwrap_or_else(|_| {
        let home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        format!("{home}/bin/tansu")
    })
}

async fn start_tansu(port: u16, db: &Path) -> Child {
    let storage = format!(
        "sqlite://{}",
        db.file_name().and_then(|f| f.to_str()).expect("file name")
    );
    // tansu reads the path after `sqlite://` relative to its working directory.
    spawn_tansu(port, port, &storage, db.parent().expect("a directory")).await
}

/// tansu listening on `port`, telling clients to connect to `advertised`.
async fn spawn_tansu(port: u16, advertised: u16, storage: &str, dir: &Path) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let child = Command::new(tansu_bin())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
        .arg("--storage-engine")
        .arg(storage)
        .current_dir(dir)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tansu ({e}); install it with ./scripts/test.sh or `cargo install tansu --locked --features dynostore,libsql`"));
    eventsource_testkit::wait_until_listening(port, Duration::from_secs(20), "tansu").await;
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

/// A publish returns within `publish_timeout` (+1 s) when the broker hangs:
/// a private tansu behind a proxy that freezes, advertising the proxy so
/// that every connection of the client goes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_gives_up_within_its_timeout_when_the_broker_hangs() {
    use eventsource_testkit::{publish_gives_up_within_its_timeout, FreezableProxy};
    let port = free_port();
    let proxy = FreezableProxy::start(([127, 0, 0, 1], port).into())
        .await
        .expect("proxy");
    let _tansu = spawn_tansu(
        port,
        proxy.addr.port(),
        "memory://tansu/",
        &std::env::temp_dir(),
    )
    .await;
    let mut config = common::config(&format!("kafka://{}", proxy.addr));
    config.publish_timeout = Duration::from_secs(3);
    let bus = common::connect(config.clone()).await;
    let text = publish_gives_up_within_its_timeout(&bus, &proxy, config.publish_timeout).await;
    assert!(
        text.contains(&config.events_topic()) && text.contains("127.0.0.1"),
        "the error names the topic and the broker: {text}"
    );
}
