//! Delivering events again to one consumer group: the way a dead letter
//! goes back — by the default exchange straight into the group's queue
//! (in partitioned mode, the queue of the aggregate's partition), which
//! only its members read.

use eventsource_core::{copy_for, partition_of, EventEnvelope, Result};

use crate::client::{Client, Outgoing};
use crate::wire;

/// Publishes a copy of each of `events` for `group` alone, with
/// confirms. The caller checks that the group's queues exist (the
/// default exchange drops what no queue takes).
pub(crate) async fn redeliver(
    client: &Client,
    group: &str,
    events: &[EventEnvelope],
) -> Result<()> {
    let config = &client.config;
    let messages: Vec<Outgoing<'static>> = events
        .iter()
        .map(|event| {
            let copy = copy_for(event, group);
            let queue = match config.partitions {
                Some(n) => config.partition_queue(group, partition_of(&copy.aggregate_id, n)),
                None => config.queue(group),
            };
            let (properties, body) = wire::encode(&copy, &config.source);
            Outgoing {
                exchange: "",
                routing_key: queue,
                properties,
                body,
            }
        })
        .collect();
    let redacted = config.redacted_url();
    let queue = config.queue(group);
    client
        .publish_confirmed(&client.target(&queue, &redacted), &messages)
        .await?;
    for _ in events {
        client.stats.replayed(group);
    }
    Ok(())
}
