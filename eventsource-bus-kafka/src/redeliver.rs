//! Delivering events again to one consumer group: the way a dead letter
//! goes back — through the aggregate's partition of the events topic, so
//! that the partition's owner handles it in order with the aggregate's
//! other events; the other groups skip a copy marked for this one.

use eventsource_core::{copy_for, partition_of, EventEnvelope, Result};

use crate::client::{Client, Outgoing};
use crate::wire;

/// The record that sends `envelope` (already marked for its group)
/// through its aggregate's partition of the events topic.
pub(crate) fn through_its_partition(client: &Client, envelope: &EventEnvelope) -> Outgoing {
    let config = &client.config;
    let (headers, payload) = wire::encode(envelope, &config.source);
    Outgoing {
        topic: config.events_topic(),
        key: envelope.aggregate_id.clone(),
        partition: Some(partition_of(&envelope.aggregate_id, client.event_partitions) as i32),
        headers,
        payload,
    }
}

/// Produces a copy of each of `events` for `group` alone (one produce,
/// every delivery report awaited).
pub(crate) async fn redeliver(
    client: &Client,
    group: &str,
    events: &[EventEnvelope],
) -> Result<()> {
    let records: Vec<Outgoing> = events
        .iter()
        .map(|event| through_its_partition(client, &copy_for(event, group)))
        .collect();
    client.produce(&records).await?;
    for _ in events {
        client.stats.replayed(group);
    }
    Ok(())
}
