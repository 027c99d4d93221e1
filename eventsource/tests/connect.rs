//! One line of configuration picks the backend: the same code connects to
//! each real broker by URL.

use std::time::Duration;

use eventsource::{connect_url, BusConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_url_scheme_connects_to_its_backend() {
    let urls = [
        ("memory://", "memory"),
        ("redis://127.0.0.1:6379", "redis"),
        (
            "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103",
            "redis",
        ),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "rabbitmq"),
        ("kafka://127.0.0.1:9092", "kafka"),
        ("nats://127.0.0.1:4222", "nats"),
    ];
    for (url, backend) in urls {
        let bus = connect_url(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e} (start the services with ./scripts/test.sh)"));
        assert_eq!(bus.backend(), backend, "{url}");
        bus.shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    }
}

#[test]
fn config_files_name_the_backend() {
    let config: BusConfig = serde_json::from_str(
        r#"{"backend":"redis","url":"redis://cache:6379","namespace":"shop"}"#,
    )
    .expect("parse");
    assert_eq!(config.backend(), "redis");
    let err =
        serde_json::from_str::<BusConfig>(r#"{"backend":"mqtt"}"#).expect_err("unknown backend");
    assert!(err.to_string().contains("mqtt"), "{err}");
}
