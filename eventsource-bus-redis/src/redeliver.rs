//! Delivering events again to one consumer group: the way a dead letter
//! goes back — through the aggregate's partition stream in partitioned
//! mode (the other groups skip a copy marked for this one), else the
//! group's replay stream, which only its members read.

use eventsource_core::{copy_for, EventEnvelope, Result};

use crate::client::{redis_err, Client};
use crate::wire;

/// Adds a copy of each of `events` for `group` alone, in one atomic
/// pipeline.
pub(crate) async fn redeliver(
    client: &Client,
    group: &str,
    events: &[EventEnvelope],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let config = &client.config;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for event in events {
        let copy = copy_for(event, group);
        let stream = match config.partitions {
            Some(_) => config.stream_of(&copy.aggregate_id),
            None => config.replay_stream(group),
        };
        let xadd = pipe.cmd("XADD").arg(stream).arg("*");
        for (k, v) in wire::encode(&copy, &config.source) {
            xadd.arg(k).arg(v);
        }
        xadd.ignore();
    }
    let mut conn = client.conn.clone();
    pipe.query_async::<()>(&mut conn).await.map_err(|e| {
        redis_err(
            format!(
                "delivering {} event(s) again to group `{group}`",
                events.len()
            ),
            e,
        )
    })?;
    for _ in events {
        client.stats.replayed(group);
    }
    Ok(())
}
