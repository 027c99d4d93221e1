//! Shared by the NATS integration tests: a config on the real server with
//! a namespace of its own per bus.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use eventsource_bus_nats::{NatsBus, NatsBusConfig};
use futures::StreamExt;
use tokio::process::{Child, Command};

/// `NATS_URL`, or the local server the test script starts.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A config with a fresh namespace and short timings.
pub fn config(url: &str) -> NatsBusConfig {
    let namespace = format!("es-test-{}", uuid::Uuid::now_v7().simple());
    NatsBusConfig::new(url)
        .namespace(namespace)
        .block(Duration::from_millis(200))
        .progress_interval(Duration::from_millis(200))
        .ack_wait(Duration::from_millis(1500))
        .validated()
        .expect("valid test config")
}

/// The escaped namespaces of tests and benches (this crate's, the CLI's
/// and the examples'), whose streams are pruned.
const TEST_PREFIXES: &[&str] = &[
    "es_htest_h",
    "es_hbench_h",
    "es_hconsole_h",
    "es_hcli_h",
    "es_hsecrets_h",
    "order_hservice_htest_h",
];

/// Streams older than this are from finished runs.
const STALE: Duration = Duration::from_secs(3600);

/// Deletes, once per test binary, the streams that earlier test and bench
/// runs left on the shared server (a fresh namespace per bus means new
/// streams every run; JetStream has no stream that expires): those of a
/// test or bench namespace created over an hour ago. Prints how many.
pub async fn prune_stale_test_streams(url: &str) {
    static PRUNED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    PRUNED
        .get_or_init(|| async {
            let Ok(client) = async_nats::connect(url).await else {
                return; // `connect` below says how to start NATS.
            };
            let js = async_nats::jetstream::new(client);
            let cutoff = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .saturating_sub(STALE)
                .as_secs() as i64;
            let mut stale = Vec::new();
            let mut streams = js.streams();
            while let Some(Ok(info)) = streams.next().await {
                let name = &info.config.name;
                if TEST_PREFIXES.iter().any(|p| name.starts_with(p))
                    && info.created.unix_timestamp() < cutoff
                {
                    stale.push(name.clone());
                }
            }
            let mut deleted = 0;
            for name in &stale {
                deleted += usize::from(js.delete_stream(name).await.is_ok());
            }
            if deleted > 0 {
                eprintln!("pruned {deleted} stream(s) that earlier test runs left on {url}");
            }
        })
        .await;
}

/// Connects, failing the test with how to start NATS if it is down.
pub async fn connect(config: NatsBusConfig) -> NatsBus {
    prune_stale_test_streams(&config.url).await;
    match NatsBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "NATS with JetStream is not reachable at {} ({e}). Start it with \
             ./scripts/test.sh, or `nats-server -js -p 4222 &`, or set NATS_URL.",
            config.redacted_url()
        ),
    }
}

/// A private `nats-server -js` on `port` storing in `dir`, with `extra`
/// arguments; killed when dropped.
pub async fn start_nats(port: u16, dir: &Path, extra: &[&str]) -> Child {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir)
        .args(extra)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nats-server ({e}); install it with `apt-get install nats-server` or run ./scripts/test.sh"));
    eventsource_testkit::wait_until_listening(port, Duration::from_secs(10), "nats-server").await;
    child
}
