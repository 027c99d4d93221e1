//! A publish returns within `publish_timeout` (+1 s) when RabbitMQ hangs:
//! the bus talks to the real broker through a proxy that freezes.

mod common;

use std::time::Duration;

use eventsource_testkit::{publish_gives_up_within_its_timeout, FreezableProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_gives_up_within_its_timeout_when_the_broker_hangs() {
    let proxy = FreezableProxy::start("127.0.0.1:5672".parse().expect("addr"))
        .await
        .expect("proxy");
    let mut config = common::config();
    config.url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    config.publish_timeout = Duration::from_secs(2);
    let bus = common::connect(config.clone()).await;
    let text = publish_gives_up_within_its_timeout(&bus, &proxy, config.publish_timeout).await;
    assert!(
        text.contains(&config.exchange()) && text.contains("127.0.0.1"),
        "the error names the exchange and the broker: {text}"
    );
}

/// `connect` to a server that accepts the connection and then says nothing
/// fails within `connect_timeout` with a typed timeout, instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gives_up_within_its_timeout_when_the_server_is_silent() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket); // accepted, never answered
        }
    });
    let mut config = common::config();
    config.url = format!("amqp://guest:guest@{addr}/%2f");
    config.connect_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let err = eventsource_bus_rabbitmq::RabbitBus::connect(config)
        .await
        .expect_err("a silent server");
    assert!(
        matches!(err, eventsource_core::Error::Timeout { .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        started.elapsed()
    );
    held.abort();
}

/// A connection attempt that stalls (the first connection is accepted and
/// never answered) is abandoned and made again within `connect_timeout`:
/// the next connection, passed through to the real broker, connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_attempt_is_made_again() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let addr = listener.local_addr().expect("addr");
    // The broker's host:port, from the URL the other tests use.
    let url = common::amqp_url();
    let broker = url
        .rsplit_once('@')
        .map_or(url.as_str(), |(_, rest)| rest)
        .trim_start_matches("amqp://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let proxy = tokio::spawn(async move {
        let mut stalled = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            if stalled.is_empty() {
                stalled.push(socket); // accepted, never answered
                continue;
            }
            let broker = broker.clone();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(&broker).await {
                    let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                }
            });
        }
    });
    let mut config = common::config();
    config.url = format!("amqp://guest:guest@{addr}/%2f");
    config.connect_timeout = Duration::from_secs(6);
    let bus = eventsource_bus_rabbitmq::RabbitBus::connect(config)
        .await
        .expect("the second attempt connects");
    eventsource_core::EventBus::shutdown(&bus, Duration::from_secs(5))
        .await
        .expect("shutdown");
    proxy.abort();
}
