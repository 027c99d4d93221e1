//! The topology: a durable queue per group (one per partition, in
//! partitioned mode) bound with the group's filter, the group's
//! dead-letter queue, and the namespace's partition count.

use eventsource_core::{Error, EventFilter, Result};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use crate::client::{amqp_err, connect, short, within_connect_timeout};
use crate::{ExchangeType, QueueType, RabbitBusConfig};

/// The binding keys of `filter` on this exchange type.
pub(crate) fn binding_keys(config: &RabbitBusConfig, filter: &EventFilter) -> Result<Vec<String>> {
    match config.exchange_type {
        ExchangeType::Topic => Ok(filter.binding_keys()),
        ExchangeType::Fanout => Ok(vec![String::new()]),
        ExchangeType::Direct => match filter.exact_keys() {
            Some(keys) => Ok(keys.to_vec()),
            None => Err(Error::config(format!(
                "rabbitmq: a direct exchange routes exact keys only; filter `{}` needs a topic exchange \
                 (or list exact routing keys like `Order.Placed`)",
                filter.canonical()
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
    if config.queue_type == QueueType::Quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // No practical limit: retries are the bus's, and a message handed
        // back at every rebalance must not be dropped after some count.
        // (Not -1, RabbitMQ 4's "unlimited": 3.x reads it as a limit that
        // every returned message exceeds, and drops them all.)
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(i32::MAX)),
        );
    }
    args
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
        // A durable classic queue whose node is down is there, but out of
        // reach: "NOT_FOUND - home node '…' of durable queue '…' … is down
        // or inaccessible". Not "absent": that would read a partitioned
        // namespace as an unpartitioned one.
        Err(e) if e.to_string().contains("down or inaccessible") => Err(amqp_err(
            format!(
                "looking up `{name}`: the cluster node that holds it is down; connect again \
                 once it is back"
            ),
            e,
        )),
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
            binding_keys(&config, &EventFilter::all()).expect("fanout"),
            vec![""]
        );
    }
}
