//! Configuration of the RabbitMQ bus.

use std::time::Duration;

use eventsource_core::bounds::{self, HOUR, MILLISECOND};
use eventsource_core::{redact_url, validate_name, Error, Result};
use serde::{Deserialize, Serialize};

/// The kind of the events exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeType {
    /// Routing keys matched against the subscriptions' patterns (default).
    #[default]
    Topic,
    /// Routing keys matched exactly: only filters of exact routing keys
    /// (patterns without `*` or `#`) can subscribe.
    Direct,
    /// Every group queue gets every event; filters apply client-side.
    Fanout,
}

/// The kind of a group's queues (its partition queues and its
/// dead-letter queue too), fixed when they are first declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// On one node (default): what every RabbitMQ runs, mirrored by
    /// nothing since RabbitMQ 4 removed classic mirroring.
    #[default]
    Classic,
    /// Replicated on a Raft majority of the cluster's nodes
    /// (`x-queue-type: quorum`), the highly available kind: recommended
    /// in production. Declared with an `x-delivery-limit` of 2^31 − 1, so
    /// the broker never drops a message that went back to the queue many
    /// times (at leaves and rebalances) behind the bus's retry policy
    /// (RabbitMQ 4 would drop it after 20 by default).
    Quorum,
}

/// How to reach RabbitMQ and how to name and consume the topology.
///
/// Names: the exchange `{namespace}.events`, a durable queue
/// `{namespace}.{group}` per consumer group and its dead-letter queue
/// `{namespace}.{group}.dlq`.
///
/// ```
/// use eventsource_bus_rabbitmq::{ExchangeType, RabbitBusConfig};
///
/// let config = RabbitBusConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .namespace("shop")
///     .exchange_type(ExchangeType::Topic)
///     .prefetch(64)
///     .validated()?;
/// assert_eq!(config.exchange(), "shop.events");
/// assert_eq!(config.queue("billing"), "shop.billing");
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RabbitBusConfig {
    /// `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`); for a
    /// cluster, the nodes' addresses separated by commas,
    /// `amqp://user:password@host1:port,host2:port,host3:port/vhost`:
    /// every connection (a publisher's, a member's, and each reconnect)
    /// tries them in the order given and keeps the first that answers.
    pub url: String,
    /// Prefix of the exchange and queue names.
    pub namespace: String,
    /// The kind of the events exchange.
    pub exchange_type: ExchangeType,
    /// The CloudEvents `source` of published events.
    pub source: String,
    /// Unacked messages per member (basic.qos).
    pub prefetch: u16,
    /// Deletes a group's queues after they have had no consumer for this
    /// long (`x-expires`), and makes the exchange auto-delete with its last
    /// binding; none by default. Meant for tests and short-lived
    /// environments: an expired queue takes its messages with it.
    #[serde(with = "humantime_serde")]
    pub queue_expires: Option<Duration>,
    /// How long a publish waits for the broker (reconnection included).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long opening a connection (TCP, AMQP handshake, a channel) may
    /// take before it fails with `Error::Timeout`: a broker that accepts
    /// and then stalls, or a client library that does not report a refused
    /// connection, must not hang `connect` or a reconnect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Declares group queues with `x-single-active-consumer`: one member of
    /// a group consumes at a time and the others stand by, so an
    /// aggregate's events stay in order across the whole group (not just
    /// within a member), at the cost of spreading work over members. Fixed
    /// when a group's queue is first declared.
    pub single_active_consumer: bool,
    /// Partitioned mode: each event is routed with the key
    /// `p{p}.{routing key}`, `p` = [`partition_of`](eventsource_core::partition_of)
    /// of its aggregate id, and a group has one queue per partition,
    /// `{namespace}.{group}.p{p}`, each consumed with
    /// `x-single-active-consumer` by the member it is assigned to.
    /// Members take a rank in their group (an exclusive queue
    /// `{namespace}.{group}.rank.{r}`, gone with its connection) and
    /// consume the partitions `p % members == rank`; when membership
    /// changes, a member lets go of a partition only after what it started
    /// from it is acked, and what it had not started goes back to the
    /// queue, ahead of the rest, for the next owner. So an aggregate's
    /// events are handled in order across all members of a group while
    /// the partitions spread the work. `None` (the default): one queue per
    /// group, order within a member only.
    ///
    /// Needs a topic exchange. A namespace keeps the count it was first
    /// used with (a durable marker queue `{namespace}.partitions`): a bus
    /// configured otherwise, or unpartitioned, is refused at connect, as
    /// is a partitioned bus on a namespace that already has an
    /// unpartitioned exchange. Between 1 and 1024.
    pub partitions: Option<u32>,
    /// The kind of the group queues: [`QueueType::Classic`] (default) or
    /// [`QueueType::Quorum`]. A group's queues keep the kind they were
    /// first declared with (RabbitMQ refuses another:
    /// `PRECONDITION_FAILED`, reported naming the queue).
    pub queue_type: QueueType,
}

impl std::fmt::Debug for RabbitBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBusConfig")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("exchange_type", &self.exchange_type)
            .field("source", &self.source)
            .field("prefetch", &self.prefetch)
            .field("queue_expires", &self.queue_expires)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("single_active_consumer", &self.single_active_consumer)
            .field("partitions", &self.partitions)
            .field("queue_type", &self.queue_type)
            .finish()
    }
}

impl Default for RabbitBusConfig {
    fn default() -> Self {
        RabbitBusConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            namespace: "eventsource".to_owned(),
            exchange_type: ExchangeType::Topic,
            source: "eventsource".to_owned(),
            prefetch: 32,
            queue_expires: None,
            publish_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            single_active_consumer: false,
            partitions: None,
            queue_type: QueueType::Classic,
        }
    }
}

impl RabbitBusConfig {
    /// Starts from the defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every value; the URL (each node's, for a list of nodes)
    /// must parse as an AMQP URI.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: &str| {
            Error::config(format!(
                "rabbitmq: invalid url `{}`: {why}expected amqp://user:password@host:port/vhost \
                 or, for a cluster, amqp://user:password@host1:port,host2:port/vhost",
                redact_url(&self.url)
            ))
        };
        for node in self.node_urls() {
            if node.is_empty() {
                return Err(invalid("a host in its list of nodes is empty; "));
            }
            node.parse::<lapin::uri::AMQPUri>()
                .map_err(|_| invalid(""))?;
        }
        validate_name("rabbitmq namespace", &self.namespace)?;
        if self.namespace.len() > 100 {
            return Err(Error::config(
                "rabbitmq: namespace must be at most 100 characters",
            ));
        }
        if self.source.trim().is_empty() {
            return Err(Error::config("rabbitmq: source must not be empty"));
        }
        bounds::count("rabbitmq: prefetch", self.prefetch, 1, u16::MAX)?;
        if let Some(expires) = self.queue_expires {
            // x-expires: RabbitMQ takes up to 2^32-1 ms (about 49 days).
            bounds::duration(
                "rabbitmq: queue_expires",
                expires,
                Duration::from_secs(1),
                Duration::from_millis(u64::from(u32::MAX)),
            )?;
        }
        bounds::duration(
            "rabbitmq: connect_timeout",
            self.connect_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "rabbitmq: publish_timeout",
            self.publish_timeout,
            MILLISECOND,
            HOUR,
        )?;
        if let Some(n) = self.partitions {
            if !(1..=1024).contains(&n) {
                return Err(Error::config(format!(
                    "rabbitmq: partitions must be between 1 and 1024, got {n}"
                )));
            }
            if self.exchange_type != ExchangeType::Topic {
                return Err(Error::config(
                    "rabbitmq: partitions route by a `p{partition}.` prefix on the routing key, \
                     which needs a topic exchange",
                ));
            }
            if self.single_active_consumer {
                return Err(Error::config(
                    "rabbitmq: partitions and single_active_consumer are two answers to one need \
                     (order across a group's members); pick one — partitions spread the work",
                ));
            }
        }
        Ok(())
    }

    /// The exchange events are published to.
    pub fn exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The queue of consumer group `group`.
    pub fn queue(&self, group: &str) -> String {
        format!("{}.{group}", self.namespace)
    }

    /// The queue of partition `p` of `group` (in partitioned mode).
    pub fn partition_queue(&self, group: &str, p: u32) -> String {
        format!("{}.{group}.p{p}", self.namespace)
    }

    /// The routing key of an event with `routing_key` of `aggregate_id`:
    /// `p{partition}.{routing_key}` in partitioned mode.
    pub fn routing_key_of(&self, aggregate_id: &str, routing_key: String) -> String {
        match self.partitions {
            None => routing_key,
            Some(n) => format!(
                "p{}.{routing_key}",
                eventsource_core::partition_of(aggregate_id, n)
            ),
        }
    }

    /// Where the namespace's partition count is kept (a durable, empty queue).
    pub fn partitions_marker(&self) -> String {
        format!("{}.partitions", self.namespace)
    }

    /// The dead-letter queue of consumer group `group`.
    pub fn dlq(&self, group: &str) -> String {
        format!("{}.{group}.dlq", self.namespace)
    }

    /// The URL of each node [`url`](Self::url) names, in its order: the
    /// URL itself for one host; for a comma-separated list of hosts, the
    /// URL with each host in turn (an empty string for an empty host).
    pub fn node_urls(&self) -> Vec<String> {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return vec![self.url.clone()];
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };
        if !hosts.contains(',') {
            return vec![self.url.clone()];
        }
        hosts
            .split(',')
            .map(|host| match host.trim() {
                "" => String::new(),
                host => format!("{scheme}://{userinfo}{host}{path}"),
            })
            .collect()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

eventsource_core::config_setters!(RabbitBusConfig {
    namespace: impl Into<String>,
    exchange_type: ExchangeType,
    source: impl Into<String>,
    prefetch: u16,
    publish_timeout: Duration,
    connect_timeout: Duration,
    single_active_consumer: bool,
    queue_type: QueueType,
} optional {
    queue_expires: Duration,
    partitions: u32,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_redacts() {
        let err = RabbitBusConfig::new("http://u:hunter2@x")
            .validated()
            .expect_err("scheme");
        assert!(err.to_string().contains("invalid url"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(RabbitBusConfig::new("amqp://x")
            .prefetch(0)
            .validated()
            .is_err());
        assert!(RabbitBusConfig::new("amqp://x")
            .namespace("a b")
            .validated()
            .is_err());
        let c = RabbitBusConfig::new("amqp://u:hunter2@h:5672/%2f")
            .validated()
            .expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.dlq("g"), "eventsource.g.dlq");
    }

    #[test]
    fn a_list_of_nodes_is_one_url_per_node_in_order() {
        let c = RabbitBusConfig::new("amqp://u:hunter2@a:5701,b:5702,c/%2f?heartbeat=5")
            .validated()
            .expect("valid");
        assert_eq!(
            c.node_urls(),
            [
                "amqp://u:hunter2@a:5701/%2f?heartbeat=5",
                "amqp://u:hunter2@b:5702/%2f?heartbeat=5",
                "amqp://u:hunter2@c/%2f?heartbeat=5",
            ]
        );
        assert_eq!(
            RabbitBusConfig::new("amqp://h:5672").node_urls(),
            ["amqp://h:5672"]
        );
        let err = RabbitBusConfig::new("amqp://u:hunter2@a:5701,,c/%2f")
            .validated()
            .expect_err("an empty host");
        assert!(err.to_string().contains("is empty"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(RabbitBusConfig::new("amqp://a,b:notaport")
            .validated()
            .is_err());
    }

    #[test]
    fn serde_reads_human_durations() {
        let c: RabbitBusConfig = serde_json::from_str(
            r#"{"url":"amqp://h","exchange_type":"fanout","queue_expires":"5m"}"#,
        )
        .expect("parse");
        assert_eq!(c.exchange_type, ExchangeType::Fanout);
        assert_eq!(c.queue_expires, Some(Duration::from_secs(300)));
        c.validate().expect("valid");
    }
}
