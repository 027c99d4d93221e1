//! Watching the exchange from outside every group: a server-named,
//! exclusive queue that is deleted with its connection, bound with the
//! watch's filter, consumed without acks.

use eventsource_core::{Error, EventFilter, EventWatch, Result, WatchFeed};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::client::{amqp_err, declare_exchange, short, Session, BACKEND};
use crate::topology::{bind, watch_keys};
use crate::{wire, RabbitBusConfig};

/// Starts a watch of the events exchange; `stop` ends it (with the bus).
pub(crate) async fn watch(
    config: &RabbitBusConfig,
    filter: EventFilter,
    stop: CancellationToken,
) -> Result<EventWatch> {
    let keys = watch_keys(config, &filter)?;
    let session = Session::open(config, false).await?;
    let channel = &session.channel;
    declare_exchange(channel, config).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_err("declaring a watch queue", e))?;
    let name = queue.name().as_str().to_owned();
    bind(channel, config, &name, &keys).await?;
    let consumer = channel
        .basic_consume(
            short("queue", &name)?,
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_err("consuming the watch queue", e))?;
    let (feed, watch) = EventWatch::channel(BACKEND, stop.clone());
    tokio::spawn(read(session, consumer, filter, feed, stop));
    Ok(watch)
}

async fn read(
    session: Session,
    mut consumer: lapin::Consumer,
    filter: EventFilter,
    feed: WatchFeed,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            () = feed.closed() => break,
            next = consumer.next() => next,
        };
        let open = match next {
            Some(Ok(delivery)) => match wire::decode(&delivery.properties, &delivery.data) {
                Ok(event) if filter.matches(&event) => feed.offer(Ok(event)),
                Ok(_) => true,
                Err(reason) => feed.offer(Err(Error::backend(
                    BACKEND,
                    "decoding a watched message",
                    reason,
                ))),
            },
            Some(Err(e)) => {
                feed.offer(Err(amqp_err("watching the exchange", e)));
                break;
            }
            None => break,
        };
        if !open {
            break;
        }
    }
    // The exclusive queue goes with the connection.
    session.close().await;
}
