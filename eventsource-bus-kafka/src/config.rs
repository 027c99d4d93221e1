//! Configuration of the Kafka bus.

use std::time::Duration;

use eventsource_core::bounds::{self, HOUR, MILLISECOND, MINUTE};
use eventsource_core::{redact_url, validate_name, Durability, Error, Result};
use serde::{Deserialize, Serialize};

/// Producer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression (default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How to reach Kafka and name the topics.
///
/// Topics: `{topic_prefix}.events` for every event (key = aggregate id, so
/// an aggregate stays in one partition), and per consumer group
/// `{topic_prefix}.{group}.replay` (replayed dead letters, read by that
/// group only), `{topic_prefix}.{group}.dlq` and `{topic_prefix}.{group}.dlq-done`
/// (ids of dead letters replayed or deleted). The Kafka group id is
/// `{topic_prefix}.{group}`. Missing topics are created with `partitions`.
///
/// ```
/// use eventsource_bus_kafka::KafkaBusConfig;
///
/// let config = KafkaBusConfig::from_url("kafka://127.0.0.1:9092")?
///     .topic_prefix("shop")
///     .partitions(6)
///     .validated()?;
/// assert_eq!(config.events_topic(), "shop.events");
/// assert_eq!(config.bootstrap_servers, "127.0.0.1:9092");
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaBusConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Prefix of every topic and group id.
    pub topic_prefix: String,
    /// Partitions of the topics the bus creates.
    pub partitions: i32,
    /// Replication factor of the topics the bus creates.
    pub replication: i32,
    /// Producer compression.
    pub compression: Compression,
    /// The CloudEvents `source` of published events.
    pub source: String,
    /// Messages a member holds unhandled at most.
    pub prefetch: usize,
    /// How long `publish` waits for the broker's acknowledgement.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Consumer session timeout (a dead member's partitions move after it).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often finished offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long `subscribe` waits to join the group (assigned partitions,
    /// or none: a member beyond the partition count stands by).
    #[serde(with = "humantime_serde")]
    pub assignment_timeout: Duration,
    /// Records per produce batch at most (librdkafka `batch.num.messages`);
    /// librdkafka's default when unset. `Some(1)` for a broker that cannot
    /// serve a fetch starting inside a batch (tansu 0.6: see
    /// `tests/broker_fidelity.rs`), at some cost in publish throughput.
    pub max_batch_records: Option<usize>,
    /// How long the broker may hold a fetch waiting for records
    /// (librdkafka `fetch.wait.max.ms`): the floor of a quiet topic's
    /// publish-to-handler latency. librdkafka's 500 ms gave a p50 of 384 ms
    /// at 1 k events/s; 10 ms costs more (cheap) fetch requests when idle.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// How long the producer waits to fill a batch (librdkafka
    /// `linger.ms`): throughput against publish latency.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// What `connect` does when the events topic does not keep what
    /// `acks=all` acknowledges (replicated, but `min.insync.replicas` 1 or
    /// unclean leader election on): `warn` (the default) logs it,
    /// `require` refuses to connect, `off` does not look. A topic on one
    /// broker (replication 1) has nothing to check.
    pub durability: Durability,
}

impl std::fmt::Debug for KafkaBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBusConfig")
            .field("bootstrap_servers", &self.redacted_servers())
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("compression", &self.compression)
            .field("source", &self.source)
            .field("prefetch", &self.prefetch)
            .field("publish_timeout", &self.publish_timeout)
            .field("session_timeout", &self.session_timeout)
            .field("commit_interval", &self.commit_interval)
            .field("assignment_timeout", &self.assignment_timeout)
            .field("max_batch_records", &self.max_batch_records)
            .field("durability", &self.durability)
            .field("fetch_wait_max", &self.fetch_wait_max)
            .field("linger", &self.linger)
            .finish()
    }
}

impl Default for KafkaBusConfig {
    fn default() -> Self {
        KafkaBusConfig {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            topic_prefix: "eventsource".to_owned(),
            partitions: 3,
            replication: 1,
            compression: Compression::None,
            source: "eventsource".to_owned(),
            prefetch: 256,
            publish_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_millis(200),
            assignment_timeout: Duration::from_secs(60),
            max_batch_records: None,
            durability: Durability::Warn,
            fetch_wait_max: Duration::from_millis(10),
            linger: Duration::from_millis(2),
        }
    }
}

impl KafkaBusConfig {
    /// Starts from the defaults with these bootstrap servers.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            ..Self::default()
        }
    }

    /// Starts from a `kafka://host:port[,host:port]` URL.
    pub fn from_url(url: &str) -> Result<Self> {
        let servers = url.strip_prefix("kafka://").ok_or_else(|| {
            Error::config(format!(
                "kafka: url `{}` must look like kafka://host:port[,host:port]",
                redact_url(url)
            ))
        })?;
        Ok(Self::new(servers.trim_end_matches('/')))
    }

    /// The bootstrap servers with any credentials replaced by `***`.
    pub fn redacted_servers(&self) -> String {
        let shown = redact_url(&format!("kafka://{}", self.bootstrap_servers));
        shown
            .strip_prefix("kafka://")
            .map_or(shown.clone(), str::to_owned)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.contains('@') {
            return Err(Error::config(format!(
                "kafka: bootstrap_servers `{}` carry credentials; this bus connects without \
                 authentication (PLAINTEXT), so credentials in the URL are refused rather than ignored",
                self.redacted_servers()
            )));
        }
        let servers_ok = !self.bootstrap_servers.is_empty()
            && self.bootstrap_servers.split(',').all(|s| {
                s.rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            });
        if !servers_ok {
            return Err(Error::config(format!(
                "kafka: bootstrap_servers `{}` must be host:port[,host:port]",
                self.redacted_servers()
            )));
        }
        validate_name("kafka topic_prefix", &self.topic_prefix)?;
        if self.topic_prefix.len() > 150 {
            return Err(Error::config(
                "kafka: topic_prefix must be at most 150 characters",
            ));
        }
        // Partition counts and replication as Kafka's protocol carries
        // them (replication is an INT16).
        bounds::count("kafka: partitions", self.partitions, 1, 100_000)?;
        bounds::count(
            "kafka: replication",
            self.replication,
            1,
            i32::from(i16::MAX),
        )?;
        if self.source.trim().is_empty() {
            return Err(Error::config("kafka: source must not be empty"));
        }
        bounds::count("kafka: prefetch", self.prefetch, 1, 1_000_000)?;
        if let Some(n) = self.max_batch_records {
            bounds::count("kafka: max_batch_records", n, 1, 1_000_000)?;
        }
        // librdkafka's limits: fetch.wait.max.ms 0..=300000, linger.ms
        // 0..=900000, session.timeout.ms 1..=3600000.
        bounds::duration(
            "kafka: fetch_wait_max",
            self.fetch_wait_max,
            Duration::ZERO,
            5 * MINUTE,
        )?;
        bounds::duration("kafka: linger", self.linger, Duration::ZERO, 15 * MINUTE)?;
        bounds::duration(
            "kafka: session_timeout",
            self.session_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "kafka: publish_timeout",
            self.publish_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "kafka: commit_interval",
            self.commit_interval,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "kafka: assignment_timeout",
            self.assignment_timeout,
            MILLISECOND,
            HOUR,
        )?;
        Ok(())
    }

    /// The topic every event is published to.
    pub fn events_topic(&self) -> String {
        format!("{}.events", self.topic_prefix)
    }

    /// The topic replayed dead letters of `group` go to.
    pub fn replay_topic(&self, group: &str) -> String {
        format!("{}.{group}.replay", self.topic_prefix)
    }

    /// The dead-letter topic of `group`.
    pub fn dlq_topic(&self, group: &str) -> String {
        format!("{}.{group}.dlq", self.topic_prefix)
    }

    /// The topic of dead-letter ids that were replayed or deleted.
    pub fn dlq_done_topic(&self, group: &str) -> String {
        format!("{}.{group}.dlq-done", self.topic_prefix)
    }

    /// The Kafka group id of consumer group `group`.
    pub fn group_id(&self, group: &str) -> String {
        format!("{}.{group}", self.topic_prefix)
    }
}

eventsource_core::config_setters!(KafkaBusConfig {
    topic_prefix: impl Into<String>,
    partitions: i32,
    replication: i32,
    compression: Compression,
    source: impl Into<String>,
    prefetch: usize,
    publish_timeout: Duration,
    session_timeout: Duration,
    fetch_wait_max: Duration,
    linger: Duration,
    durability: Durability,
} optional {
    max_batch_records: usize,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_refused_without_showing_the_password() {
        let err = KafkaBusConfig::from_url("kafka://u:s3cret@host:9092")
            .expect("the prefix is right")
            .validated()
            .expect_err("credentials are refused");
        let text = err.to_string();
        assert!(
            text.contains("credentials") && text.contains("u:***@host:9092"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let config = KafkaBusConfig {
            bootstrap_servers: "u:s3cret@host:9092".to_owned(),
            ..KafkaBusConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let err = KafkaBusConfig::from_url("kafka:u:s3cret@host:9092").expect_err("no //");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn urls_and_values_are_checked() {
        assert!(KafkaBusConfig::from_url("http://x:1").is_err());
        assert!(KafkaBusConfig::from_url("kafka://x")
            .expect("prefix")
            .validated()
            .is_err());
        assert!(KafkaBusConfig::from_url("kafka://a:1,b:2")
            .expect("prefix")
            .validated()
            .is_ok());
        assert!(KafkaBusConfig::new("a:1")
            .partitions(0)
            .validated()
            .is_err());
        assert!(KafkaBusConfig::new("a:1")
            .topic_prefix("bad prefix")
            .validated()
            .is_err());
        let c: KafkaBusConfig = serde_json::from_str(
            r#"{"bootstrap_servers":"h:9092","compression":"lz4","commit_interval":"1s"}"#,
        )
        .expect("parse");
        assert_eq!(c.compression, Compression::Lz4);
        assert_eq!(c.commit_interval, Duration::from_secs(1));
        c.validate().expect("valid");
    }
}
