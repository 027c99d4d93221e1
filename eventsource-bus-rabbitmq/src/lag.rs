//! A group's backlog as the broker counts it: messages ready in its
//! queue (or its partitions' queues) and its members.

use eventsource_core::Result;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::client::{short, Session};
use crate::membership::members_of;
use crate::RabbitBusConfig;

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
