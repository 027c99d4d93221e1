//! Shared by the RabbitMQ integration tests: a config on the real broker
//! with a namespace of its own per bus.

#![allow(dead_code)]

use std::time::Duration;

use eventsource_bus_rabbitmq::{RabbitBus, RabbitBusConfig};

/// `AMQP_URL`, or the local broker the test script starts.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `RABBITMQ_CLUSTER_URL`, or the 3-node cluster `scripts/services.sh`
/// starts (`ensure_rabbitmq_cluster`): its nodes' addresses, first to last.
pub fn rabbitmq_cluster_url() -> String {
    std::env::var("RABBITMQ_CLUSTER_URL").unwrap_or_else(|_| {
        "amqp://guest:guest@127.0.0.1:5701,127.0.0.1:5702,127.0.0.1:5703/%2f".to_owned()
    })
}

/// [`config`] on the 3-node cluster, with quorum queues (see
/// [`on_next_node`]).
pub fn cluster_config() -> RabbitBusConfig {
    let mut config = config();
    config.url = rabbitmq_cluster_url();
    config.queue_type = eventsource_bus_rabbitmq::QueueType::Quorum;
    on_next_node(config)
}

/// `config` with its list of nodes starting from the next one at each
/// call (1-2-3, 2-3-1, 3-1-2, …), so that a test's buses connect to
/// different nodes: a publisher on one, a queue's leader on another and
/// its members on a third.
pub fn on_next_node(mut config: RabbitBusConfig) -> RabbitBusConfig {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nodes = config.node_urls();
    let turn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % nodes.len();
    // Each node's URL is the whole URL with one host: keep the first's
    // scheme, credentials and path, and list the hosts rotated.
    let mut hosts: Vec<String> = nodes.iter().map(|n| hosts_of(n)).collect();
    hosts.rotate_left(turn);
    config.url = with_hosts(&nodes[0], &hosts.join(","));
    config
}

/// The `host:port` part of `url` (after any credentials, before the path).
pub fn hosts_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    rest[..rest.find('/').unwrap_or(rest.len())].to_owned()
}

/// `url` with its `host:port` part replaced by `hosts`.
pub fn with_hosts(url: &str, hosts: &str) -> String {
    url.replacen(&hosts_of(url), hosts, 1)
}

/// A config with a fresh namespace whose queues expire when unused.
///
/// `connect_timeout` is 30 s, not the default 10 s: the membership cases
/// open ten buses and their consumers while the rest of the suite runs
/// beside them, and on a loaded 2-core machine one handshake once took
/// longer than 10 s (a clean-clone CI run failed on it, with nothing lost).
pub fn config() -> RabbitBusConfig {
    RabbitBusConfig::new(amqp_url())
        .namespace(format!("es-test-{}", uuid::Uuid::now_v7().simple()))
        .queue_expires(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(30))
        .validated()
        .expect("valid test config")
}

/// Connects, failing the test with how to start RabbitMQ if it is down.
pub async fn connect(config: RabbitBusConfig) -> RabbitBus {
    match RabbitBus::connect(config.clone()).await {
        Ok(bus) => bus,
        Err(e) => panic!(
            "RabbitMQ is not reachable at {} ({e}). Start it with ./scripts/test.sh, or \
             `rabbitmq-server -detached` (for the cluster: `source scripts/services.sh; \
             ensure_rabbitmq_cluster`), or set AMQP_URL (RABBITMQ_CLUSTER_URL).",
            config.redacted_url()
        ),
    }
}
