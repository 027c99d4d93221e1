//! Watching the events stream from outside every group: an ephemeral
//! ordered consumer at the new events, no durable, no acks.

use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use eventsource_core::{Error, EventFilter, EventWatch, Result, WatchFeed};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::client::{nats_err, Client, BACKEND};
use crate::wire;

/// Starts a watch of `client`'s events stream; `stop` ends it (with the bus).
pub(crate) async fn watch(
    client: &Arc<Client>,
    filter: EventFilter,
    stop: CancellationToken,
) -> Result<EventWatch> {
    let name = client.config.events_stream();
    let what = || format!("watching stream `{name}`");
    let stream = client
        .js
        .get_stream(&name)
        .await
        .map_err(|e| nats_err(what(), e))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err(what(), e))?;
    let messages = consumer.messages().await.map_err(|e| nats_err(what(), e))?;
    let (feed, watch) = EventWatch::channel(BACKEND, stop.clone());
    tokio::spawn(read(messages, name, filter, feed, stop));
    Ok(watch)
}

async fn read(
    mut messages: pull::Ordered,
    stream: String,
    filter: EventFilter,
    feed: WatchFeed,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            () = feed.closed() => return,
            message = messages.next() => message,
        };
        let open = match message {
            None => return,
            Some(Err(e)) => feed.offer(Err(nats_err(format!("watching stream `{stream}`"), e))),
            Some(Ok(message)) => match wire::decode(&message.payload) {
                Ok(event) if filter.matches(&event) => feed.offer(Ok(event)),
                Ok(_) => true,
                Err(reason) => {
                    let seq = message.info().map_or(0, |i| i.stream_sequence);
                    feed.offer(Err(Error::backend(
                        BACKEND,
                        format!("decoding message {seq} of `{stream}`"),
                        reason,
                    )))
                }
            },
        };
        if !open {
            return;
        }
    }
}
