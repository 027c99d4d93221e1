//! Watching the events topic from outside every group: a consumer assigned
//! every partition at its end, which joins no group and commits nothing.

use std::sync::Arc;

use eventsource_core::{Error, EventFilter, EventWatch, Result, WatchFeed};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::client::{client_config, kafka_err, Client, BACKEND};
use crate::dlq::topic_bounds;
use crate::wire;

/// Starts a watch of the events topic; `stop` ends it (with the bus).
pub(crate) async fn watch(
    client: &Client,
    filter: EventFilter,
    stop: CancellationToken,
) -> Result<EventWatch> {
    let config = &client.config;
    let topic = config.events_topic();
    client.ensure_topics(std::slice::from_ref(&topic)).await?;
    let consumer: StreamConsumer = client_config(config)
        .set("group.id", format!("{}.watch", config.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait_max.as_millis().to_string(),
        )
        .create()
        .map_err(|e| kafka_err("creating a watch consumer", e))?;
    let consumer = Arc::new(consumer);
    let mut tpl = TopicPartitionList::new();
    for (partition, _, high) in topic_bounds(Arc::clone(&consumer), &topic).await? {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(high))
            .map_err(|e| kafka_err(format!("assigning `{topic}`"), e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_err(format!("assigning `{topic}`"), e))?;
    let (feed, watch) = EventWatch::channel(BACKEND, stop.clone());
    tokio::spawn(read(consumer, filter, feed, stop));
    Ok(watch)
}

async fn read(
    consumer: Arc<StreamConsumer>,
    filter: EventFilter,
    feed: WatchFeed,
    stop: CancellationToken,
) {
    loop {
        let open = tokio::select! {
            () = stop.cancelled() => return,
            () = feed.closed() => return,
            message = consumer.recv() => match message {
                Ok(m) => {
                    let headers = wire::headers_as_text(m.headers());
                    match wire::decode(&headers, m.payload()) {
                        Ok(event) if filter.matches(&event) => feed.offer(Ok(event)),
                        Ok(_) => true,
                        Err(reason) => feed.offer(Err(Error::backend(
                            BACKEND,
                            format!("decoding {}[{}]@{}", m.topic(), m.partition(), m.offset()),
                            reason,
                        ))),
                    }
                }
                Err(e) => feed.offer(Err(kafka_err("watching the events topic", e))),
            },
        };
        if !open {
            return;
        }
    }
}
