//! Configuration of the NATS JetStream bus.

use std::time::Duration;

use eventsource_core::bounds::{self, DAY, HOUR, MILLISECOND, MINUTE};
use eventsource_core::{redact_url as redact, validate_name, Durability, Error, Result};
use serde::{Deserialize, Serialize};

/// How to reach NATS and how to consume from it.
///
/// Everything lives under `namespace`: the events stream `{NS}-events`
/// (subject `{namespace}.events`), and per consumer group a durable pull
/// consumer `{G}` on it, a replay stream `{NS}-replay-{G}` (subject
/// `{namespace}.replay.{group}`) and a dead-letter stream `{NS}-dlq-{G}`
/// (subject `{namespace}.dlq.{group}`); the groups' register is the
/// stream `{NS}-members` (subjects `{namespace}.members.{G}.{member}`). `{NS}` and `{G}` are the namespace and
/// the group with `_` doubled, `.` written `_d` and `-` written `_h`
/// (stream and consumer names may not hold a dot).
///
/// ```
/// use std::time::Duration;
/// use eventsource_bus_nats::NatsBusConfig;
///
/// let config = NatsBusConfig::new("nats://127.0.0.1:4222")
///     .namespace("shop")
///     .ack_wait(Duration::from_secs(60))
///     .validated()?;
/// assert_eq!(config.events_stream(), "shop-events");
/// assert_eq!(config.events_subject(), "shop.events");
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsBusConfig {
    /// `nats://[user:password@]host:port` (or `tls://`).
    pub url: String,
    /// Prefix of every stream and subject the bus uses.
    pub namespace: String,
    /// The CloudEvents `source` of published events (the producing service).
    pub source: String,
    /// How many messages a member holds unacked at once, asked for and
    /// not yet received included. 128 by default (32 on Redis and
    /// RabbitMQ): a pull costs a round trip, and at 32 fast handlers
    /// wait on it. A member reads only as far ahead as its handlers' pace
    /// calls for (at least 32, at most this), in requests of at most 32,
    /// so slow handlers do not sit on a burst that idle members could
    /// take (ADR 0013).
    pub prefetch: usize,
    /// How long one pull request waits for messages (its `expires`); also
    /// bounds how long a leaving member waits for its last request.
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// The consumers' `ack_wait`: how long a message may stay unacked
    /// before the server delivers it again, to any member of the group.
    /// Live members extend it for what they hold (`+WIP`) every
    /// `progress_interval`, so only a dead member's messages move.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// How often a member extends what it holds and renews itself in the
    /// group register.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// How long a publish waits for the stream's acknowledgements
    /// (PubAck), retrying while NATS is unreachable.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long `connect` waits for the server.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Copies of each stream in a JetStream cluster (1 to 5). An
    /// acknowledged publish is on a majority of them; with 1 (a single
    /// server), it is in that server's file store but, with JetStream's
    /// default `sync_interval` (2 min), not necessarily on disk: a power
    /// loss (not a crash of the process) can lose it. See the guide.
    pub replicas: usize,
    /// How long the server remembers a published event's id to drop a
    /// second publish of it (`Nats-Msg-Id` is the event id): a publish
    /// retried after a lost PubAck is stored once.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Cap on the events stream's message count (oldest dropped); none by default.
    pub max_messages: Option<u64>,
    /// One member of a group reads at a time, holding the group's lease
    /// (in the register stream, renewed every `progress_interval`, lost
    /// after `ack_wait`); the others stand by and take over when it goes.
    /// An aggregate's events then stay in order across the whole group,
    /// at the cost of spreading work. The same option, and name, as on
    /// Redis and RabbitMQ.
    pub single_active_consumer: bool,
    /// Partitioned mode: events go to `partitions` subjects
    /// `{namespace}.events.{p}` of the events stream, `p` =
    /// [`partition_of`](eventsource_core::partition_of) of the aggregate
    /// id; a group has a durable consumer per partition, `{G}-p{p}`, and
    /// one owner per partition at a time (a lease in the register stream),
    /// so an aggregate's events are handled in order across all members
    /// of a group while the partitions spread the work. Members split the
    /// partitions evenly and rebalance as they join and leave. `None`
    /// (the default): one subject, order within a member only.
    ///
    /// A namespace keeps the count it was first used with (in the events
    /// stream's description): a bus configured otherwise is refused at
    /// connect, as is a partitioned bus on a namespace with unpartitioned
    /// events. Between 1 and 1024; at least the number of members you
    /// run, or some stand by.
    pub partitions: Option<u32>,
    /// What `connect` does when the events stream does not keep what it
    /// acknowledges (a stream of that name made before in memory, or with
    /// limits that discard old events): `warn` (the default) logs it,
    /// `require` refuses to connect, `off` does not look.
    pub durability: Durability,
}

impl std::fmt::Debug for NatsBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBusConfig")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("source", &self.source)
            .field("prefetch", &self.prefetch)
            .field("block", &self.block)
            .field("ack_wait", &self.ack_wait)
            .field("progress_interval", &self.progress_interval)
            .field("publish_timeout", &self.publish_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("max_messages", &self.max_messages)
            .field("single_active_consumer", &self.single_active_consumer)
            .field("partitions", &self.partitions)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Default for NatsBusConfig {
    fn default() -> Self {
        NatsBusConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            namespace: "eventsource".to_owned(),
            source: "eventsource".to_owned(),
            prefetch: 128,
            block: Duration::from_millis(500),
            ack_wait: Duration::from_secs(30),
            progress_interval: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_messages: None,
            single_active_consumer: false,
            partitions: None,
            durability: Durability::Warn,
        }
    }
}

impl NatsBusConfig {
    /// Starts from the defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every value; the URL must be a `nats://` (or `tls://`) URL
    /// with a host.
    pub fn validate(&self) -> Result<()> {
        if let Some(problem) = url_problem(&self.url) {
            return Err(Error::config(format!(
                "nats: invalid url `{}`: {problem}",
                redact(&self.url)
            )));
        }
        validate_name("nats namespace", &self.namespace)?;
        if self.source.trim().is_empty() {
            return Err(Error::config("nats: source must not be empty"));
        }
        bounds::count("nats: prefetch", self.prefetch, 1, 10_000)?;
        bounds::count("nats: replicas", self.replicas, 1, 5)?;
        bounds::duration("nats: block", self.block, MILLISECOND * 10, MINUTE)?;
        bounds::duration(
            "nats: publish_timeout",
            self.publish_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "nats: connect_timeout",
            self.connect_timeout,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "nats: progress_interval",
            self.progress_interval,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration("nats: ack_wait", self.ack_wait, MILLISECOND, DAY)?;
        bounds::duration(
            "nats: duplicate_window",
            self.duplicate_window,
            MILLISECOND,
            DAY,
        )?;
        if self.ack_wait <= self.progress_interval {
            return Err(Error::config(format!(
                "nats: ack_wait ({:?}) must exceed progress_interval ({:?}), \
                 or the server would hand live members' messages to others",
                self.ack_wait, self.progress_interval
            )));
        }
        if let Some(max) = self.max_messages {
            bounds::count("nats: max_messages", max, 1, i64::MAX as u64)?;
        }
        if let Some(n) = self.partitions {
            bounds::count("nats: partitions", n, 1, 1024)?;
            if self.single_active_consumer {
                return Err(Error::config(
                    "nats: partitions and single_active_consumer are two answers to one need \
                     (order across a group's members); pick one — partitions spread the work",
                ));
            }
        }
        Ok(())
    }

    /// The events stream's name.
    pub fn events_stream(&self) -> String {
        format!("{}-events", escape(&self.namespace))
    }

    /// The subject events are published to (without partitions; with
    /// them, [`partition_subject`](Self::partition_subject)).
    pub fn events_subject(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The subject of partition `p` (in partitioned mode).
    pub fn partition_subject(&self, p: u32) -> String {
        format!("{}.events.{p}", self.namespace)
    }

    /// The subject `aggregate_id`'s events are published to.
    pub fn subject_of(&self, aggregate_id: &str) -> String {
        match self.partitions {
            None => self.events_subject(),
            Some(n) => self.partition_subject(eventsource_core::partition_of(aggregate_id, n)),
        }
    }

    /// The durable consumer of `group` on the replay stream, and on the
    /// events stream without partitions.
    pub fn consumer_name(&self, group: &str) -> String {
        escape(group)
    }

    /// The durable consumer of `group` for partition `p` of the events stream.
    pub fn partition_consumer_name(&self, group: &str, p: u32) -> String {
        format!("{}-p{p}", escape(group))
    }

    /// The stream replayed dead letters of `group` go to (read by that group only).
    pub fn replay_stream(&self, group: &str) -> String {
        format!("{}-replay-{}", escape(&self.namespace), escape(group))
    }

    /// The subject of [`replay_stream`](Self::replay_stream).
    pub fn replay_subject(&self, group: &str) -> String {
        format!("{}.replay.{group}", self.namespace)
    }

    /// The dead-letter stream of `group`.
    pub fn dlq_stream(&self, group: &str) -> String {
        format!("{}-dlq-{}", escape(&self.namespace), escape(group))
    }

    /// The subject of [`dlq_stream`](Self::dlq_stream).
    pub fn dlq_subject(&self, group: &str) -> String {
        format!("{}.dlq.{group}", self.namespace)
    }

    /// The name every dead-letter stream of the namespace starts with.
    pub(crate) fn dlq_stream_prefix(&self) -> String {
        format!("{}-dlq-", escape(&self.namespace))
    }

    /// The stream of the groups' registers: one subject per member,
    /// holding its filter.
    pub fn members_stream(&self) -> String {
        format!("{}-members", escape(&self.namespace))
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// A name (namespace, group: letters, digits, `-`, `_`, `.`) as a stream,
/// or consumer name, which may not hold `.`: `_` doubled, `.` as
/// `_d`, `-` as `_h` — so two names never map to one, and `-` is free to
/// join the parts of a name (`{NS}-dlq-{group}`) without ambiguity.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            '-' => out.push_str("_h"),
            c => out.push(c),
        }
    }
    out
}

/// The name [`escape`] was given, or `None` when `escaped` is not one of
/// its outputs.
pub(crate) fn unescape(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => out.push('_'),
                'd' => out.push('.'),
                'h' => out.push('-'),
                _ => return None,
            },
            '-' | '.' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Why `url` is not a NATS URL, in words that never quote it (so no
/// password can show).
fn url_problem(url: &str) -> Option<String> {
    match url::Url::parse(url) {
        Err(e) => Some(format!(
            "{e} (expected nats://[user:password@]host:port; \
             percent-encode `/`, `@` or `:` in a password)"
        )),
        Ok(u) if !matches!(u.scheme(), "nats" | "tls") => {
            Some(format!("scheme `{}` is not nats:// or tls://", u.scheme()))
        }
        Ok(u) if !u.has_host() || u.host_str() == Some("") => {
            Some("no host (expected nats://host:port)".to_owned())
        }
        Ok(_) => None,
    }
}

eventsource_core::config_setters!(NatsBusConfig {
    namespace: impl Into<String>,
    source: impl Into<String>,
    prefetch: usize,
    block: Duration,
    ack_wait: Duration,
    progress_interval: Duration,
    publish_timeout: Duration,
    connect_timeout: Duration,
    replicas: usize,
    duplicate_window: Duration,
    single_active_consumer: bool,
    durability: Durability,
} optional {
    max_messages: u64,
    partitions: u32,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_url_says_why_without_quoting_the_password() {
        for (url, why) in [
            ("nats://127.0.0.1:99999", "invalid port number"),
            ("nats://u:s3c/ret@127.0.0.1:1", "percent-encode"),
            ("http://u:s3cret@127.0.0.1:4222", "scheme `http`"),
            ("nats://", "no host"),
        ] {
            let err = NatsBusConfig::new(url).validated().expect_err(url);
            let text = err.to_string();
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains("s3c"), "{url}: {text}");
        }
        let config = NatsBusConfig::new("nats://u:hunter2@127.0.0.1:4222")
            .validated()
            .expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.redacted_url(), "nats://u:***@127.0.0.1:4222");
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let base = || NatsBusConfig::new("nats://x:4222");
        for (config, field) in [
            (base().namespace("a b"), "namespace"),
            (base().prefetch(0), "prefetch"),
            (base().replicas(7), "replicas"),
            (base().block(Duration::ZERO), "block"),
            (
                base()
                    .ack_wait(Duration::from_secs(1))
                    .progress_interval(Duration::from_secs(2)),
                "ack_wait",
            ),
            (base().max_messages(0), "max_messages"),
            (base().partitions(0u32), "partitions"),
            (
                base().partitions(4u32).single_active_consumer(true),
                "single_active_consumer",
            ),
        ] {
            let err = config.validated().expect_err(field);
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn names_escape_dots_and_never_collide() {
        let names = ["a.b", "a_b", "a__b", "a_db", "a-b", "a_hb", "ab"];
        let escaped: std::collections::BTreeSet<String> = names.iter().map(|n| escape(n)).collect();
        assert_eq!(escaped.len(), names.len(), "{escaped:?}");
        for n in names {
            assert!(!escape(n).contains(['.', '-']), "{n}");
            assert_eq!(unescape(&escape(n)).as_deref(), Some(n));
        }
        assert_eq!(unescape("a_x"), None);
        let c = NatsBusConfig::new("nats://h:4222").namespace("shop.eu");
        assert_eq!(c.dlq_stream("billing.v2"), "shop_deu-dlq-billing_dv2");
        assert_eq!(c.dlq_subject("billing.v2"), "shop.eu.dlq.billing.v2");
    }

    #[test]
    fn serde_round_trip_with_human_durations() {
        let c: NatsBusConfig =
            serde_json::from_str(r#"{"url":"nats://h:4222","block":"2s","ack_wait":"1m"}"#)
                .expect("parse");
        assert_eq!(c.block, Duration::from_secs(2));
        assert_eq!(c.ack_wait, Duration::from_secs(60));
        c.validate().expect("valid");
        assert!(serde_json::from_str::<NatsBusConfig>(r#"{"acks":"1m"}"#).is_err());
    }
}
