//! A publish returns within `publish_timeout` (+1 s) when NATS hangs: the
//! bus talks to the real server through a proxy that freezes.

mod common;

use std::time::Duration;

use eventsource_testkit::{publish_gives_up_within_its_timeout, FreezableProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_gives_up_within_its_timeout_when_the_server_hangs() {
    let proxy = FreezableProxy::start("127.0.0.1:4222".parse().expect("addr"))
        .await
        .expect("proxy");
    let mut config = common::config(&format!("nats://{}", proxy.addr));
    config.publish_timeout = Duration::from_secs(2);
    let bus = common::connect(config.clone()).await;
    let text = publish_gives_up_within_its_timeout(&bus, &proxy, config.publish_timeout).await;
    assert!(
        text.contains(&config.events_stream()) && text.contains("127.0.0.1"),
        "the error names the stream and the server: {text}"
    );
}
