//! Takeover: XAUTOCLAIM of entries a dead member left (idle past
//! `claim_min_idle`), and the draining of everything pending in a stream
//! by the one member no other competes with there.

use crate::client::Conn;
use std::sync::Arc;

use redis::streams::StreamAutoClaimReply;
use tokio::sync::OwnedSemaphorePermit;

use super::GroupConsumer;

impl GroupConsumer {
    /// Takes over entries of `streams` idle longer than `claim_min_idle`
    /// (a dead member's), as many as `slots` allows (XAUTOCLAIM). In
    /// partitioned mode `streams` are the partitions this member owns (a
    /// straggler a stalled former owner read after losing the lease) and
    /// the replay stream.
    pub(super) async fn take_over(
        &self,
        conn: &mut Conn,
        streams: &[Arc<str>],
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) {
        let min_idle = self.client.config.claim_min_idle.as_millis().to_string();
        for stream in streams {
            if slots.is_empty() {
                return;
            }
            let claimed = self
                .autoclaim(conn, stream, &min_idle, "0-0", slots.len())
                .await;
            match claimed {
                Ok(reply) => {
                    for entry in reply.claimed {
                        let Some(slot) = slots.pop() else { break };
                        tracing::info!(group = self.group(), entry = %entry.id, "took over an entry abandoned by another member");
                        self.accept(stream, entry.into(), slot).await;
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {}
                Err(e) => tracing::warn!(error = %e, stream = %stream, "XAUTOCLAIM failed"),
            }
        }
    }

    /// XAUTOCLAIM of up to `count` entries of `stream` idle at least
    /// `min_idle` ms, scanning the group's pending list from `cursor`.
    pub(super) async fn autoclaim(
        &self,
        conn: &mut Conn,
        stream: &str,
        min_idle: &str,
        cursor: &str,
        count: usize,
    ) -> redis::RedisResult<StreamAutoClaimReply> {
        redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(self.group())
            .arg(&self.consumer)
            .arg(min_idle)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await
    }

    /// Claims the group's pending entries whatever their idle time, from
    /// `cursors` on, as many as `slots` allows, in stream order. Returns
    /// `true` once both streams are scanned to the end. Only for the
    /// single active member: no other member reads meanwhile.
    pub(super) async fn take_over_all(
        &self,
        conn: &mut Conn,
        cursors: &mut [String; 2],
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) -> bool {
        let streams = [Arc::clone(&self.events[0]), Arc::clone(&self.replay)];
        for (stream, cursor) in streams.iter().zip(cursors.iter_mut()) {
            if !self.drain(conn, stream, cursor, slots).await {
                return false;
            }
        }
        true
    }

    /// Claims `stream`'s pending entries of the group whatever their idle
    /// time, from `cursor` on, as many as `slots` allows, in stream order.
    /// Returns `true` once the stream is scanned to the end. Only for a
    /// member no other member competes with on `stream` (the single active
    /// one, or a partition's owner).
    pub(super) async fn drain(
        &self,
        conn: &mut Conn,
        stream: &Arc<str>,
        cursor: &mut String,
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) -> bool {
        while cursor.as_str() != "done" {
            if slots.is_empty() {
                return false;
            }
            let claimed = self
                .autoclaim(conn, stream, "0", cursor.as_str(), slots.len())
                .await;
            match claimed {
                Ok(reply) => {
                    for entry in reply.claimed {
                        let Some(slot) = slots.pop() else { break };
                        self.accept(stream, entry.into(), slot).await;
                    }
                    *cursor = if reply.next_stream_id == "0-0" {
                        "done".to_owned()
                    } else {
                        reply.next_stream_id
                    };
                }
                Err(e) if e.code() == Some("NOGROUP") => *cursor = "done".to_owned(),
                Err(e) => {
                    tracing::warn!(error = %e, stream = %stream, "XAUTOCLAIM failed");
                    return false;
                }
            }
        }
        true
    }
}
