//! Delivering events again to one consumer group: the way a dead letter
//! goes back, never by the events subject every group reads — in
//! partitioned mode through the aggregate's partition subject (the other
//! groups skip a copy marked for this one), else the group's own replay
//! stream.

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use eventsource_core::{copy_for, EventEnvelope, Result};

use crate::client::{nats_err, Client};
use crate::wire;

/// Where a copy for `group` goes: `envelope`'s partition subject in
/// partitioned mode, else (and for a message that did not decode: `None`)
/// the group's replay subject, whose stream is made if missing.
pub(crate) async fn destination(
    client: &Client,
    group: &str,
    envelope: Option<&EventEnvelope>,
) -> Result<String> {
    let config = &client.config;
    match (config.partitions, envelope) {
        (Some(_), Some(env)) => Ok(config.subject_of(&env.aggregate_id)),
        _ => {
            client
                .ensure_stream(config.replay_stream(group), config.replay_subject(group))
                .await?;
            Ok(config.replay_subject(group))
        }
    }
}

/// Publishes `headers` and `body` to `to` and waits for the stream's
/// acknowledgement. A fresh message id: the event's own would be dropped
/// as a duplicate within the window.
pub(crate) async fn send(
    client: &Client,
    to: String,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<()> {
    let what = || format!("delivering again to `{to}`");
    let publish = PublishMessage::build()
        .payload(body.into())
        .headers(headers)
        .message_id(uuid::Uuid::now_v7().to_string());
    client
        .js
        .send_publish(to.clone(), publish)
        .await
        .map_err(|e| nats_err(what(), e))?
        .await
        .map_err(|e| nats_err(what(), e))?;
    Ok(())
}

/// Publishes a copy of each of `events` for `group` alone, in order,
/// each acknowledged by its stream.
pub(crate) async fn redeliver(
    client: &Client,
    group: &str,
    events: &[EventEnvelope],
) -> Result<()> {
    for event in events {
        let copy = copy_for(event, group);
        let to = destination(client, group, Some(&copy)).await?;
        let (headers, body) = wire::encode(&copy, &client.config.source);
        send(client, to, headers, body).await?;
        client.stats.replayed(group);
    }
    Ok(())
}
