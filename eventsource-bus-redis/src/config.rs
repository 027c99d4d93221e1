//! Configuration of the Redis Streams bus.

use std::time::Duration;

use eventsource_core::bounds::{self, DAY, HOUR, MILLISECOND, MINUTE};
use eventsource_core::{redact_url as redact, validate_name, Durability, Error, Result};
use serde::{Deserialize, Serialize};

use crate::cluster;

/// How to reach Redis and how to consume from it.
///
/// Keys live under `namespace`: the event stream `{namespace}:events`, one
/// replay stream `{namespace}:replay:{group}` and one dead-letter stream
/// `{namespace}:dlq:{group}` per consumer group.
///
/// ```
/// use std::time::Duration;
/// use eventsource_bus_redis::RedisBusConfig;
///
/// let config = RedisBusConfig::new("redis://127.0.0.1:6379")
///     .namespace("shop")
///     .claim_min_idle(Duration::from_secs(60))
///     .max_len(1_000_000)
///     .validated()?;
/// assert_eq!(config.events_stream(), "shop:events");
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisBusConfig {
    /// `redis://[user:password@]host:port[/db]`, or for a Redis Cluster
    /// `redis+cluster://[user:password@]host:port[,host:port…]` (the seed
    /// nodes; the client finds the rest). On a cluster every key starts
    /// with the hash tag `{namespace}`, so a namespace lives in one slot.
    pub url: String,
    /// Prefix of every key the bus uses.
    pub namespace: String,
    /// The CloudEvents `source` of published events (the producing service).
    pub source: String,
    /// Entries read (or claimed) at most per member and round trip; also
    /// how many a member holds unacked at once.
    pub prefetch: usize,
    /// How long one XREADGROUP blocks waiting for entries.
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// How long an entry must sit unacked before another member of its
    /// group takes it over (XAUTOCLAIM). Live members refresh their own
    /// entries well within this, so only a dead member's entries move.
    #[serde(with = "humantime_serde")]
    pub claim_min_idle: Duration,
    /// How often a member refreshes its entries and looks for abandoned ones.
    #[serde(with = "humantime_serde")]
    pub claim_interval: Duration,
    /// Approximate cap on the event stream's length (`XADD MAXLEN ~`); none by default.
    pub max_len: Option<usize>,
    /// How long a publish keeps retrying while Redis is unreachable.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long `connect` waits for a server that is still loading its
    /// data after a restart (it answers `LOADING`), retrying with backoff.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// One member of a group reads at a time, holding a lease
    /// (`{namespace}:lease:{group}`, renewed every `claim_interval`, lost
    /// after `claim_min_idle`); the others stand by and take over when it
    /// goes. An aggregate's events then stay in order across the whole
    /// group, not just within a member, at the cost of spreading work.
    /// The same option, and name, as RabbitMQ's (`single_active_member`
    /// in configuration written before is still read).
    #[serde(alias = "single_active_member")]
    pub single_active_consumer: bool,
    /// Partitioned mode: events go to `partitions` streams
    /// `{namespace}:events:{p}`, `p` = [`partition_of`](eventsource_core::partition_of)
    /// of the aggregate id, and each partition has one owner per group at
    /// a time (a lease `{namespace}:lease:{group}:{p}`), so an aggregate's
    /// events are handled in order across all members of a group while
    /// the partitions spread the work. Members split the partitions
    /// evenly and rebalance as they join and leave. `None` (the default):
    /// one stream, order within a member only.
    ///
    /// A namespace keeps the count it was first used with (stored in
    /// `{namespace}:partitions`): a bus configured otherwise is refused at
    /// connect, as is a partitioned bus on a namespace with unpartitioned
    /// events. Between 1 and 1024; at least the number of members you run,
    /// or some stand by.
    pub partitions: Option<u32>,
    /// What `connect` does when Redis does not keep what it acknowledges
    /// (`appendonly no`, `appendfsync no`, a `maxmemory-policy` that
    /// evicts): `warn` (the default) logs each setting, `require` refuses
    /// to connect (also when `CONFIG GET` is not allowed), `off` does not
    /// look.
    pub durability: Durability,
    /// How many replicas must hold each publish before it returns: the
    /// publish ends with `WAIT` on the master that took the events, for
    /// up to `publish_timeout` (at most 4 s, under the connection's
    /// response timeout), and fails when fewer acknowledge in time. The
    /// wait holds the connection the bus shares with acks. `0` (the default) returns once the master has the events;
    /// Redis replicates asynchronously, so a master that dies in the next
    /// moments can take them with it when its replica is promoted. Not a
    /// guarantee against every loss (WAIT does not make Redis strongly
    /// consistent), but a failover then promotes a replica that has them.
    pub replica_acks: u32,
}

impl std::fmt::Debug for RedisBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBusConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("source", &self.source)
            .field("prefetch", &self.prefetch)
            .field("block", &self.block)
            .field("claim_min_idle", &self.claim_min_idle)
            .field("claim_interval", &self.claim_interval)
            .field("max_len", &self.max_len)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("single_active_consumer", &self.single_active_consumer)
            .field("durability", &self.durability)
            .field("partitions", &self.partitions)
            .field("replica_acks", &self.replica_acks)
            .finish()
    }
}

impl Default for RedisBusConfig {
    fn default() -> Self {
        RedisBusConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            namespace: "eventsource".to_owned(),
            source: "eventsource".to_owned(),
            prefetch: 32,
            block: Duration::from_millis(500),
            claim_min_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            max_len: None,
            publish_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            single_active_consumer: false,
            partitions: None,
            durability: Durability::Warn,
            replica_acks: 0,
        }
    }
}

impl RedisBusConfig {
    /// Starts from the defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every value; the URL must parse as a Redis URL.
    pub fn validate(&self) -> Result<()> {
        if self.is_cluster() {
            cluster::parse(&self.url).map_err(|why| {
                Error::config(format!("redis: invalid url `{}`: {why}", redact(&self.url)))
            })?;
        } else {
            redis::Client::open(self.url.as_str()).map_err(|e| {
                Error::config(format!(
                    "redis: invalid url `{}`: {}",
                    redact(&self.url),
                    url_problem(&self.url).unwrap_or_else(|| e.kind_str())
                ))
            })?;
        }
        validate_name("redis namespace", &self.namespace)?;
        if self.source.trim().is_empty() {
            return Err(Error::config("redis: source must not be empty"));
        }
        bounds::count("redis: prefetch", self.prefetch, 1, 10_000)?;
        bounds::count("redis: replica_acks", self.replica_acks, 0, 64)?;
        // XREADGROUP's BLOCK also bounds how late a member notices a
        // leave or a rebalance; the claim settings are XAUTOCLAIM's
        // min-idle (doubled at shutdown) and its period.
        bounds::duration("redis: block", self.block, MILLISECOND, MINUTE)?;
        bounds::duration(
            "redis: publish_timeout",
            self.publish_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "redis: connect_timeout",
            self.connect_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "redis: claim_interval",
            self.claim_interval,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "redis: claim_min_idle",
            self.claim_min_idle,
            MILLISECOND,
            DAY,
        )?;
        if self.claim_min_idle <= self.claim_interval {
            return Err(Error::config(format!(
                "redis: claim_min_idle ({:?}) must exceed claim_interval ({:?}), \
                 or live members would lose their own entries",
                self.claim_min_idle, self.claim_interval
            )));
        }
        if let Some(max_len) = self.max_len {
            // XADD MAXLEN takes a signed 64-bit count.
            bounds::count("redis: max_len", max_len as u64, 1, i64::MAX as u64)?;
        }
        if let Some(n) = self.partitions {
            if !(1..=1024).contains(&n) {
                return Err(Error::config(format!(
                    "redis: partitions must be between 1 and 1024, got {n}"
                )));
            }
            if self.single_active_consumer {
                return Err(Error::config(
                    "redis: partitions and single_active_consumer are two answers to one need \
                     (order across a group's members); pick one — partitions spread the work",
                ));
            }
        }
        Ok(())
    }

    /// Whether [`url`](Self::url) names a Redis Cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        cluster::is_cluster_url(&self.url)
    }

    /// What every key starts with: the namespace, or on a cluster the
    /// namespace as a hash tag (`{shop}`).
    fn prefix(&self) -> std::borrow::Cow<'_, str> {
        cluster::key_prefix(&self.namespace, self.is_cluster())
    }

    /// The stream every event is published to.
    pub fn events_stream(&self) -> String {
        format!("{}:events", self.prefix())
    }

    /// The stream of partition `p` (in partitioned mode).
    pub fn partition_stream(&self, p: u32) -> String {
        format!("{}:events:{p}", self.prefix())
    }

    /// The streams events are published to: [`events_stream`](Self::events_stream),
    /// or one [`partition_stream`](Self::partition_stream) per partition.
    pub fn event_streams(&self) -> Vec<String> {
        match self.partitions {
            None => vec![self.events_stream()],
            Some(n) => (0..n).map(|p| self.partition_stream(p)).collect(),
        }
    }

    /// The stream `aggregate_id`'s events are published to.
    pub fn stream_of(&self, aggregate_id: &str) -> String {
        match self.partitions {
            None => self.events_stream(),
            Some(n) => self.partition_stream(eventsource_core::partition_of(aggregate_id, n)),
        }
    }

    /// The lease of partition `p` in `group` (in partitioned mode).
    pub fn partition_lease_key(&self, group: &str, p: u32) -> String {
        format!("{}:lease:{group}:{p}", self.prefix())
    }

    /// Where the namespace's partition count is kept.
    pub fn partitions_key(&self) -> String {
        format!("{}:partitions", self.prefix())
    }

    /// The stream replayed dead letters of `group` go to (read by that group only).
    pub fn replay_stream(&self, group: &str) -> String {
        format!("{}:replay:{group}", self.prefix())
    }

    /// The dead-letter stream of `group`.
    pub fn dlq_stream(&self, group: &str) -> String {
        format!("{}:dlq:{group}", self.prefix())
    }

    /// The lease key of `group` (with [`single_active_consumer`](Self::single_active_consumer)).
    pub fn lease_key(&self, group: &str) -> String {
        format!("{}:lease:{group}", self.prefix())
    }

    /// The sorted set of `group`'s live members, scored by when each
    /// stops counting as alive (ms, server time); with
    /// [`group_filters_key`](Self::group_filters_key), how the members of a
    /// group agree on one filter.
    pub fn group_members_key(&self, group: &str) -> String {
        format!("{}:members:{group}", self.prefix())
    }

    /// The hash of `group`'s live members to their filters.
    pub fn group_filters_key(&self, group: &str) -> String {
        format!("{}:filters:{group}", self.prefix())
    }

    /// The set of groups that have dead-letter streams.
    pub(crate) fn dlq_groups_key(&self) -> String {
        format!("{}:dlq-groups", self.prefix())
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// Why `url` is not a Redis URL, in words that never quote it (so no
/// password can show): what the URL parser objects to, or a wrong scheme.
fn url_problem(url: &str) -> Option<String> {
    match url::Url::parse(url) {
        Err(e) => Some(format!(
            "{e} (expected redis://[user:password@]host:port[/db]; \
             percent-encode `/`, `@` or `:` in a password)"
        )),
        Ok(u) if !matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {
            Some(format!(
                "scheme `{}` is not redis://, rediss://, redis+unix:// or unix://",
                u.scheme()
            ))
        }
        Ok(u)
            if u.scheme().starts_with("redis") && !u.scheme().contains("unix") && !u.has_host() =>
        {
            Some("no host (expected redis://host:port)".to_owned())
        }
        Ok(_) => None,
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// The error without its detail, which may quote the URL.
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}

eventsource_core::config_setters!(RedisBusConfig {
    namespace: impl Into<String>,
    source: impl Into<String>,
    prefetch: usize,
    block: Duration,
    claim_min_idle: Duration,
    claim_interval: Duration,
    publish_timeout: Duration,
    connect_timeout: Duration,
    single_active_consumer: bool,
    durability: Durability,
    replica_acks: u32,
} optional {
    max_len: usize,
    partitions: u32,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_url_says_why_without_quoting_the_password() {
        for (url, why) in [
            ("redis://127.0.0.1:99999", "invalid port number"),
            ("redis://u:s3c/ret@127.0.0.1:1", "percent-encode"),
            ("http://127.0.0.1:6379", "scheme `http`"),
            ("redis+cluster://u:s3c@h:1,:2", "no host"),
        ] {
            let err = RedisBusConfig::new(url).validated().expect_err(url);
            let text = err.to_string();
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains("s3c"), "{url}: {text}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        let config = RedisBusConfig::new("redis://u:hunter2@127.0.0.1")
            .validated()
            .expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
        let cluster = RedisBusConfig::new("redis+cluster://u:hunter2@h1:7000,h2:7001")
            .validated()
            .expect("valid");
        assert_eq!(
            cluster.redacted_url(),
            "redis+cluster://u:***@h1:7000,h2:7001"
        );
        assert!(!format!("{cluster:?}").contains("hunter2"));
    }

    /// On a cluster, every key of a namespace carries one hash tag, so the
    /// scripts and transactions that touch several stay in one slot.
    #[test]
    fn cluster_keys_share_the_namespace_hash_tag() {
        let single = RedisBusConfig::new("redis://h").namespace("shop");
        assert_eq!(single.events_stream(), "shop:events");
        let c = RedisBusConfig::new("redis+cluster://h:7000")
            .namespace("shop")
            .partitions(4);
        let keys = [
            c.events_stream(),
            c.partition_stream(3),
            c.partition_lease_key("g", 3),
            c.partitions_key(),
            c.replay_stream("g"),
            c.dlq_stream("g"),
            c.lease_key("g"),
            c.group_members_key("g"),
            c.group_filters_key("g"),
            c.dlq_groups_key(),
        ];
        for key in keys {
            assert!(key.starts_with("{shop}:"), "{key}");
        }
    }

    #[test]
    fn bad_values_are_rejected_at_construction() {
        let err = RedisBusConfig::new("http://u:hunter2@x")
            .validated()
            .expect_err("scheme");
        assert!(err.to_string().contains("invalid url"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(RedisBusConfig::new("redis://x")
            .namespace("a b")
            .validated()
            .is_err());
        assert!(RedisBusConfig::new("redis://x")
            .prefetch(0)
            .validated()
            .is_err());
        assert!(RedisBusConfig::new("redis://x")
            .claim_min_idle(Duration::from_secs(1))
            .claim_interval(Duration::from_secs(2))
            .validated()
            .is_err());
        assert!(RedisBusConfig::new("redis://x")
            .max_len(0)
            .validated()
            .is_err());
    }

    #[test]
    fn serde_round_trip_with_human_durations() {
        let c: RedisBusConfig =
            serde_json::from_str(r#"{"url":"redis://h","block":"2s","claim_min_idle":"1m"}"#)
                .expect("parse");
        assert_eq!(c.block, Duration::from_secs(2));
        assert_eq!(c.claim_min_idle, Duration::from_secs(60));
        assert_eq!(c.namespace, "eventsource");
        c.validate().expect("valid");
    }

    #[test]
    fn single_active_is_named_as_on_rabbitmq_and_the_old_name_still_reads() {
        for key in ["single_active_consumer", "single_active_member"] {
            let c: RedisBusConfig =
                serde_json::from_str(&format!(r#"{{"{key}":true}}"#)).expect("parse");
            assert!(c.single_active_consumer, "{key}");
        }
    }
}
