//! Delivering events again to one consumer group: straight into its
//! queue, which only its members read.

use std::sync::Arc;

use eventsource_core::driver::Delivery;
use eventsource_core::{copy_for, Error, EventEnvelope, Result};

use crate::client::Client;

/// Queues a copy of each of `events` for `group` alone; the group must
/// exist (a member subscribed once).
pub(crate) fn redeliver(client: &Client, group: &str, events: &[EventEnvelope]) -> Result<()> {
    let target = client
        .group(group)
        .ok_or_else(|| Error::not_found(format!("memory bus: consumer group `{group}`")))?;
    for event in events {
        target
            .queue
            .push_now(Delivery::new(Arc::new(copy_for(event, group)), ()));
        client.stats.replayed(group);
    }
    Ok(())
}
