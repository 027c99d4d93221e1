//! Watching the event stream from outside every group: plain `XREAD`s from
//! the last entry at the time the watch began, no consumer group, no acks.

use std::sync::Arc;

use eventsource_core::{Error, EventFilter, EventWatch, Result, WatchFeed};
use redis::streams::{StreamRangeReply, StreamReadReply};
use tokio_util::sync::CancellationToken;

use crate::client::{redis_err, Client, Conn, BACKEND};
use crate::wire;

/// Starts a watch of `client`'s event stream; `stop` ends it (with the bus).
pub(crate) async fn watch(
    client: &Arc<Client>,
    filter: EventFilter,
    stop: CancellationToken,
) -> Result<EventWatch> {
    let config = &client.config;
    let mut conn = client.connection(config.block * 2).await?;
    // Where each stream ends now: the watch starts after it.
    let mut cursors = Vec::new();
    for stream in config.event_streams() {
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_err(format!("XREVRANGE `{stream}`"), e))?;
        let from = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        cursors.push((stream, from));
    }
    let (feed, watch) = EventWatch::channel(BACKEND, stop.clone());
    let block_ms = config.block.as_millis().to_string();
    tokio::spawn(read(conn, cursors, block_ms, filter, feed, stop));
    Ok(watch)
}

/// Reads every stream of `cursors` (stream, last id seen) from its cursor on.
async fn read(
    mut conn: Conn,
    mut cursors: Vec<(String, String)>,
    block_ms: String,
    filter: EventFilter,
    feed: WatchFeed,
    stop: CancellationToken,
) {
    loop {
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(&block_ms)
            .arg("STREAMS");
        for (stream, _) in &cursors {
            xread.arg(stream);
        }
        for (_, from) in &cursors {
            xread.arg(from);
        }
        let reply: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            () = stop.cancelled() => return,
            () = feed.closed() => return,
            reply = xread.query_async(&mut conn) => reply,
        };
        let entries = match reply {
            Ok(reply) => reply.map(|r| r.keys).unwrap_or_default(),
            Err(e) => {
                let streams: Vec<&str> = cursors.iter().map(|(s, _)| s.as_str()).collect();
                feed.offer(Err(redis_err(format!("XREAD {streams:?}"), e)));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
            }
        };
        for key in entries {
            let Some(cursor) = cursors.iter_mut().find(|(s, _)| *s == key.key) else {
                continue;
            };
            let stream = cursor.0.clone();
            for entry in key.ids {
                cursor.1.clone_from(&entry.id);
                let decoded = wire::decode(&wire::fields_as_text(entry.map));
                let open = match decoded {
                    Ok(event) if filter.matches(&event) => feed.offer(Ok(event)),
                    Ok(_) => true,
                    Err(reason) => feed.offer(Err(Error::backend(
                        BACKEND,
                        format!("decoding entry {} of `{stream}`", entry.id),
                        reason,
                    ))),
                };
                if !open {
                    return;
                }
            }
        }
    }
}
