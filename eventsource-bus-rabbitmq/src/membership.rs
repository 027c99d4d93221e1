//! The group register: each member's place in its group (a consumer of
//! an auto-delete queue whose arguments carry the group's filter, so a
//! member with another filter is refused), the group's member count, and
//! the ranks that pick each member's partitions.

use eventsource_core::{Error, EventFilter, Result};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use crate::client::{amqp_err, short, Session};
use crate::RabbitBusConfig;

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
        match session.claim_exclusive(&name(r)).await? {
            Ok(channel) => {
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
