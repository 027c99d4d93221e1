//! A publish returns within `publish_timeout` (+1 s) when RabbitMQ hangs:
//! the bus talks to the real broker through a proxy that freezes.

mod common;

use std::time::Duration;

use eventsource_core::testkit::{probe, FreezableProxy};
use eventsource_core::{Error, EventBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_gives_up_within_its_timeout_when_the_broker_hangs() {
    let proxy = FreezableProxy::start("127.0.0.1:5672".parse().expect("addr"))
        .await
        .expect("proxy");
    let mut config = common::config();
    config.url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    config.publish_timeout = Duration::from_secs(2);
    let bus = common::connect(config.clone()).await;
    bus.publish(&[probe("a", 1, 1)])
        .await
        .expect("publish through the open proxy");
    proxy.set_frozen(true);
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), bus.publish(&[probe("a", 2, 2)]))
        .await
        .expect("publish returned within 30 s");
    let took = started.elapsed();
    let err = outcome.expect_err("nothing can be confirmed while the broker hangs");
    assert!(
        took <= config.publish_timeout + Duration::from_secs(1),
        "publish took {took:?}, past publish_timeout ({:?}) + 1 s",
        config.publish_timeout
    );
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&config.exchange()) && text.contains("127.0.0.1"),
        "the error names the exchange and the broker: {text}"
    );
    proxy.set_frozen(false);
    let _ = bus.shutdown(Duration::from_secs(2)).await;
}
