//! Connections and the topology: the events exchange, a durable queue per
//! group bound with the group's filter, and the group's dead-letter queue.

use eventsource_core::{Error, EventFilter, Result};
use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::{ExchangeType, RabbitBusConfig};

pub(crate) const BACKEND: &str = "rabbitmq";

/// Maps a lapin error into the core error, saying what was being done.
pub(crate) fn amqp_err(context: impl Into<String>, e: lapin::Error) -> Error {
    Error::backend(BACKEND, context, e)
}

/// A connection and a channel on it.
pub(crate) struct Session {
    pub(crate) connection: Connection,
    pub(crate) channel: Channel,
    /// A consumer member's place in its group's register (see
    /// [`join_group`]); it lasts as long as the connection.
    pub(crate) presence: Option<lapin::Consumer>,
}

impl Session {
    /// Connects and opens a channel, with publisher confirms if `confirm`.
    /// Bounded by `connect_timeout` as a whole.
    pub(crate) async fn open(config: &RabbitBusConfig, confirm: bool) -> Result<Session> {
        within_connect_timeout(config, || Self::open_unbounded(config, confirm)).await
    }

    async fn open_unbounded(config: &RabbitBusConfig, confirm: bool) -> Result<Session> {
        let connection = connect(config).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_err("opening a channel", e))?;
        if confirm {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| amqp_err("enabling publisher confirms", e))?;
        }
        declare_exchange(&channel, config).await?;
        Ok(Session {
            connection,
            channel,
            presence: None,
        })
    }

    /// Whether the channel can still be used.
    pub(crate) fn is_usable(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the connection (unacked messages go back to their queues).
    pub(crate) async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// What connecting to the broker in `config` says when it fails.
fn connecting(config: &RabbitBusConfig) -> String {
    format!(
        "rabbitmq: connecting to {} (is RabbitMQ running? start it with `rabbitmq-server -detached`)",
        config.redacted_url()
    )
}

/// Opens a connection (unbounded: callers wrap it in
/// [`within_connect_timeout`]).
async fn connect(config: &RabbitBusConfig) -> Result<Connection> {
    Connection::connect(&config.url, ConnectionProperties::default())
        .await
        .map_err(|e| amqp_err(connecting(config), e))
}

/// Bounds `work` (which connects) by `connect_timeout`: a broker that
/// accepts and then stays silent fails with `Error::Timeout`.
///
/// An attempt that stalls is abandoned after a third of
/// `connect_timeout` (at least a second) and made again with a new
/// connection while time is left: under load a connection was seen
/// authenticated by the broker in 3 ms and then answered nothing more
/// for 30 s (the broker's log shows nothing for it until the client
/// closed it), while the next connection worked at once.
async fn within_connect_timeout<T, F, Fut>(config: &RabbitBusConfig, mut work: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let attempt = (config.connect_timeout / 3)
        .max(std::time::Duration::from_secs(1))
        .min(config.connect_timeout);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                operation: connecting(config),
                after: config.connect_timeout,
            });
        }
        match tokio::time::timeout(attempt.min(left), work()).await {
            Ok(done) => return done,
            Err(_) => {
                tracing::debug!(url = %config.redacted_url(), ?attempt, "a connection attempt stalled; trying again with a new one");
            }
        }
    }
}

/// A short string, or a typed error naming `what` when longer than 255 bytes.
pub(crate) fn short(what: &str, s: &str) -> Result<ShortString> {
    ShortString::try_new(s)
        .map_err(|_| Error::config(format!("rabbitmq: {what} `{s}` is longer than 255 bytes")))
}

pub(crate) async fn declare_exchange(channel: &Channel, config: &RabbitBusConfig) -> Result<()> {
    let kind = match config.exchange_type {
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Fanout => ExchangeKind::Fanout,
    };
    let exchange = config.exchange();
    channel
        .exchange_declare(
            short("exchange", &exchange)?,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                // With expiring queues the exchange goes when its last binding does.
                auto_delete: config.queue_expires.is_some(),
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_err(format!("declaring exchange `{exchange}`"), e))
}

/// The binding keys of `filter` on this exchange type.
pub(crate) fn binding_keys(config: &RabbitBusConfig, filter: &EventFilter) -> Result<Vec<String>> {
    match config.exchange_type {
        ExchangeType::Topic => Ok(filter.binding_keys()),
        ExchangeType::Fanout => Ok(vec![String::new()]),
        ExchangeType::Direct => match filter {
            EventFilter::Patterns(p) if p.iter().all(|k| !k.split('.').any(|w| w == "*" || w == "#")) => {
                Ok(p.clone())
            }
            other => Err(Error::config(format!(
                "rabbitmq: a direct exchange routes exact keys only; filter {other:?} needs a topic exchange \
                 (or list exact routing keys like `Order.Placed`)"
            ))),
        },
    }
}

/// The binding keys of `filter` for a watch: in partitioned mode any
/// partition's prefix (`*.`) before each.
pub(crate) fn watch_keys(config: &RabbitBusConfig, filter: &EventFilter) -> Result<Vec<String>> {
    let keys = binding_keys(config, filter)?;
    Ok(match config.partitions {
        None => keys,
        Some(_) => keys.iter().map(|k| format!("*.{k}")).collect(),
    })
}

fn queue_args(config: &RabbitBusConfig, dlq: bool) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(expires) = config.queue_expires {
        let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
    }
    // A partition's queue has one consumer at a time: the broker fences
    // the hand-over from one owner to the next.
    if (config.single_active_consumer || config.partitions.is_some()) && !dlq {
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    args
}

/// The queue argument that carries a group's filter on its register queue.
const FILTER_ARG: &str = "x-eventsource-filter";

/// Takes this member's place in `group`'s register, refused with
/// [`Error::GroupFilterConflict`] when the group's live members use
/// another filter. Call before binding anything for the filter.
///
/// The register is a non-durable, auto-delete queue `{queue}.members`
/// whose arguments carry the group's canonical filter;
/// each member consumes from it (nothing is ever routed there). RabbitMQ
/// refuses a declaration with another argument (406 PRECONDITION_FAILED)
/// while the queue exists, and deletes it when the last member's consumer
/// goes (clean leave, crash or lost connection), so a group's filter can
/// change once its old members are gone.
pub(crate) async fn join_group(
    channel: &Channel,
    config: &RabbitBusConfig,
    group: &str,
    filter: &EventFilter,
) -> Result<lapin::Consumer> {
    let register = format!("{}.members", config.queue(group));
    let canonical = filter.canonical();
    // RabbitMQ compares only the arguments it knows when a queue is
    // declared again; `x-dead-letter-routing-key` is one, takes any short
    // string, and is inert here: nothing is ever routed to this queue, so
    // nothing is ever dead-lettered from it. Filters longer than a short
    // string are compared by a hash.
    let key = if canonical.len() <= 255 {
        canonical.clone()
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        canonical.hash(&mut h);
        format!("hash {:016x}", h.finish())
    };
    let mut args = FieldTable::default();
    args.insert(
        FILTER_ARG.into(),
        AMQPValue::LongString(canonical.as_str().into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(key.as_str().into()),
    );
    let declared = channel
        .queue_declare(
            short("queue", &register)?,
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await;
    if let Err(e) = declared {
        let text = e.to_string();
        if text.contains("PRECONDITION_FAILED") && text.contains("x-dead-letter-routing-key") {
            // "... received 'B' but current is 'A'" (3.10), or
            // "... but current value is 'A' of type ..." (older).
            let existing = ["but current is '", "current value is '"]
                .iter()
                .find_map(|marker| text.split(marker).nth(1))
                .and_then(|rest| rest.split('\'').next())
                .unwrap_or("(unreadable)");
            return Err(Error::group_filter_conflict(group, existing, &canonical));
        }
        return Err(amqp_err(
            format!("declaring the register queue `{register}`"),
            e,
        ));
    }
    channel
        .basic_consume(
            short("queue", &register)?,
            "".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_err(format!("joining the register queue `{register}`"), e))
}

/// Declares the group's queue and dead-letter queue and binds the queue.
pub(crate) async fn declare_group(
    channel: &Channel,
    config: &RabbitBusConfig,
    group: &str,
    filter: &EventFilter,
) -> Result<()> {
    let keys = binding_keys(config, filter)?;
    // One queue per partition, each bound with its partition's prefix, or
    // the group's one queue.
    let queues: Vec<(String, Vec<String>)> = match config.partitions {
        None => vec![(config.queue(group), keys)],
        Some(n) => (0..n)
            .map(|p| {
                let keys = keys.iter().map(|k| format!("p{p}.{k}")).collect();
                (config.partition_queue(group, p), keys)
            })
            .collect(),
    };
    let dlq = (config.dlq(group), Vec::new());
    for (i, (name, keys)) in queues.iter().chain([&dlq]).enumerate() {
        channel
            .queue_declare(
                short("queue", name)?,
                QueueDeclareOptions::durable(),
                queue_args(config, i == queues.len()),
            )
            .await
            .map_err(|e| amqp_err(format!("declaring queue `{name}`"), e))?;
        bind(channel, config, name, keys).await?;
    }
    Ok(())
}

/// Checks the namespace's partition count against `config`'s, recording
/// it on first use in a durable, empty marker queue whose
/// `x-dead-letter-routing-key` argument holds it (RabbitMQ refuses to
/// declare it again with another: 406 PRECONDITION_FAILED); refuses a
/// partitioned bus on a namespace whose exchange exists without a marker
/// (unpartitioned events), and an unpartitioned bus where a marker is.
/// Bounded by `connect_timeout`.
pub(crate) async fn check_partitions(config: &RabbitBusConfig) -> Result<()> {
    within_connect_timeout(config, || async {
        let connection = connect(config).await?;
        let checked = check_partitions_on(&connection, config).await;
        let _ = connection.close(200, "bye".into()).await;
        checked
    })
    .await
}

async fn check_partitions_on(connection: &Connection, config: &RabbitBusConfig) -> Result<()> {
    let (ns, marker) = (&config.namespace, config.partitions_marker());
    let marked = exists(connection, Declared::Queue, &marker).await?;
    let Some(n) = config.partitions else {
        return if marked {
            Err(Error::config(format!(
                "rabbitmq: namespace `{ns}` is partitioned (marker queue `{marker}`); this bus is \
                 unpartitioned and would publish where no partitioned group reads. Configure the \
                 namespace's `partitions`, or use another namespace"
            )))
        } else {
            Ok(())
        };
    };
    if !marked && exists(connection, Declared::Exchange, &config.exchange()).await? {
        return Err(Error::config(format!(
            "rabbitmq: namespace `{ns}` has an unpartitioned exchange `{}`; a bus with \
             partitions = {n} would not reach its groups. Use a new namespace for the \
             partitioned layout, or leave `partitions` unset",
            config.exchange()
        )));
    }
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| amqp_err("opening a channel", e))?;
    // As for the register: a routing key needs a dead-letter exchange,
    // and nothing is ever routed to the marker, so both are inert.
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(format!("partitions={n}").as_str().into()),
    );
    let declared = channel
        .queue_declare(
            short("queue", &marker)?,
            QueueDeclareOptions::durable(),
            args,
        )
        .await;
    match declared {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
            let text = e.to_string();
            // "... received 'partitions=8' but current is 'partitions=16'"
            let stored = text
                .split("partitions=")
                .skip(1)
                .filter_map(|rest| rest.split('\'').next())
                .find(|count| *count != n.to_string())
                .unwrap_or("another number of");
            Err(Error::config(format!(
                "rabbitmq: namespace `{ns}` is partitioned into {stored} partitions (marker queue \
                 `{marker}`), this bus is configured with {n}: changing the count would move \
                 aggregates between partitions and break their order. Configure partitions = \
                 {stored}, or use a new namespace"
            )))
        }
        Err(e) => Err(amqp_err(
            format!("declaring the marker queue `{marker}`"),
            e,
        )),
    }
}

/// What [`exists`] looks for.
#[derive(Clone, Copy)]
pub(crate) enum Declared {
    Queue,
    Exchange,
}

/// Whether a queue or exchange exists (a passive declare on a channel of
/// its own: a miss closes the channel).
pub(crate) async fn exists(connection: &Connection, what: Declared, name: &str) -> Result<bool> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| amqp_err("opening a channel", e))?;
    let passive = match what {
        Declared::Queue => channel
            .queue_declare(
                short("queue", name)?,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(drop),
        Declared::Exchange => {
            channel
                .exchange_declare(
                    short("exchange", name)?,
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
        }
    };
    match passive {
        Ok(()) => {
            let _ = channel.close(200, "bye".into()).await;
            Ok(true)
        }
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(false),
        Err(e) => Err(amqp_err(format!("looking up `{name}`"), e)),
    }
}

/// Binds `queue` to the events exchange with each of `keys`.
pub(crate) async fn bind(
    channel: &Channel,
    config: &RabbitBusConfig,
    queue: &str,
    keys: &[String],
) -> Result<()> {
    let exchange = config.exchange();
    for key in keys {
        channel
            .queue_bind(
                short("queue", queue)?,
                short("exchange", &exchange)?,
                short("binding key", key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_err(format!("binding `{queue}` to `{exchange}` with `{key}`"), e))?;
    }
    Ok(())
}

/// How many members `group` has: the consumers of its register queue
/// (see [`join_group`]), read with a passive declare on `session`.
pub(crate) async fn members_of(
    session: &Session,
    config: &RabbitBusConfig,
    group: &str,
) -> Result<u32> {
    let register = format!("{}.members", config.queue(group));
    let q = session
        .channel
        .queue_declare(
            short("queue", &register)?,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_err(format!("counting the members of `{group}`"), e))?;
    Ok(q.consumer_count())
}

/// Takes the lowest free rank of `group` below `below`: declares the
/// exclusive queue `{queue}.rank.{r}` on `session`'s connection, which the
/// broker refuses (405 RESOURCE_LOCKED) while another connection holds it
/// and deletes when this one closes. On success gives up `current`.
/// `None` when every rank below `below` is held.
pub(crate) async fn take_rank(
    session: &Session,
    config: &RabbitBusConfig,
    group: &str,
    below: u32,
    current: Option<u32>,
) -> Result<Option<u32>> {
    let name = |r: u32| format!("{}.rank.{r}", config.queue(group));
    for r in 0..below.min(4_096) {
        // A refused declare closes its channel: one channel per try.
        let channel = session
            .connection
            .create_channel()
            .await
            .map_err(|e| amqp_err("opening a channel", e))?;
        let declared = channel
            .queue_declare(
                short("queue", &name(r))?,
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(_) => {
                if let Some(old) = current.filter(|old| *old != r) {
                    channel
                        .queue_delete(short("queue", &name(old))?, Default::default())
                        .await
                        .map_err(|e| amqp_err(format!("giving up rank {old}"), e))?;
                }
                let _ = channel.close(200, "bye".into()).await;
                return Ok(Some(r));
            }
            Err(e) if e.to_string().contains("RESOURCE_LOCKED") => {}
            Err(e) => return Err(amqp_err(format!("taking rank {r} in `{group}`"), e)),
        }
    }
    Ok(None)
}

/// `(messages ready, consumers)` of a queue, or `None` if it does not exist.
pub(crate) async fn queue_counts(
    config: &RabbitBusConfig,
    name: &str,
) -> Result<Option<(u32, u32)>> {
    // A passive declare of a missing queue closes the channel: use a fresh one.
    let session = Session::open(config, false).await?;
    let result = session
        .channel
        .queue_declare(
            short("queue", name)?,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    session.close().await;
    Ok(result.ok().map(|q| (q.message_count(), q.consumer_count())))
}

/// `(messages ready in every partition queue, members)` of a partitioned
/// group, or `None` if it has no queues.
pub(crate) async fn partitioned_counts(
    config: &RabbitBusConfig,
    group: &str,
    partitions: u32,
) -> Result<Option<(u32, u32)>> {
    let session = Session::open(config, false).await?;
    let mut ready = 0;
    for p in 0..partitions {
        let queue = config.partition_queue(group, p);
        let declared = session
            .channel
            .queue_declare(
                short("queue", &queue)?,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(q) => ready += q.message_count(),
            // A miss closes the channel; the group has no queues.
            Err(_) => {
                session.close().await;
                return Ok(None);
            }
        }
    }
    let members = members_of(&session, config, group).await.unwrap_or(0);
    session.close().await;
    Ok(Some((ready, members)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_exchange_takes_exact_keys_only() {
        let mut config = RabbitBusConfig {
            exchange_type: ExchangeType::Direct,
            ..Default::default()
        };
        let exact = EventFilter::patterns(["Order.Placed"]).expect("valid");
        assert_eq!(
            binding_keys(&config, &exact).expect("exact"),
            vec!["Order.Placed"]
        );
        let err = binding_keys(&config, &EventFilter::pattern("Order.*").expect("valid"))
            .expect_err("wildcard");
        assert!(err.to_string().contains("topic exchange"), "{err}");
        config.exchange_type = ExchangeType::Fanout;
        assert_eq!(
            binding_keys(&config, &EventFilter::All).expect("fanout"),
            vec![""]
        );
    }
}
