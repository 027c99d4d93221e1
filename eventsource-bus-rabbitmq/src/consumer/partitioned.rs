//! Partitioned mode: the member's rank among the group's members picks
//! the partitions it consumes, each on a channel of its own (closing it
//! gives back exactly what was not acked from it); a partition released
//! to another member closes once nothing of it is outstanding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::Result;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::GroupConsumer;
use crate::client::{amqp_err, short, Session};
use crate::membership::{members_of, take_rank};

/// One message of a partition not yet settled; dropping it counts it off.
pub(super) struct Outstanding {
    pub(super) partition: u32,
    pub(super) count: Arc<AtomicUsize>,
}

impl Outstanding {
    pub(super) fn new(partition: u32, count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Outstanding {
            partition,
            count: Arc::clone(count),
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A partition this member consumes (partitioned mode): its own channel,
/// so that closing it gives back exactly what this member had not acked
/// from it, and lets the queue's next consumer in.
pub(super) struct Owned {
    pub(super) channel: lapin::Channel,
    /// Messages of it queued or being handled here.
    pub(super) outstanding: Arc<AtomicUsize>,
    /// Meant for another member: what arrives is left unacked, and the
    /// channel closes once nothing is outstanding.
    pub(super) releasing: bool,
}

impl GroupConsumer {
    /// Partitioned mode: keeps this member's rank in its group and
    /// consumes the partitions it is assigned (`p % members == rank`),
    /// handing over the others; on a lost connection, starts again.
    pub(super) async fn partition_loop(self: Arc<Self>, first: Session) {
        let tick = Duration::from_millis(250);
        let mut backoff = Duration::from_millis(200);
        *self.session.lock().await = Some(first);
        let mut rank: Option<u32> = None;
        loop {
            if !self
                .session
                .lock()
                .await
                .as_ref()
                .is_some_and(Session::is_usable)
            {
                // What the dead connection delivered goes back to the
                // queues on the broker; the local copies must not be
                // handled twice, and its rank went with it.
                self.owned.lock().clear();
                let dropped = self.core.queue().drain().len();
                tracing::warn!(
                    group = self.group(),
                    dropped,
                    "rabbitmq member lost its connection; reconnecting"
                );
                rank = None;
                let Some(s) = self.reconnect(&mut backoff).await else {
                    return; // stopped
                };
                if let Some(old) = self.session.lock().await.replace(s) {
                    old.close().await;
                }
            }
            if let Err(e) = self.rebalance(&mut rank).await {
                tracing::warn!(group = self.group(), error = %e, "rebalancing partitions failed; trying again");
            }
            tokio::select! {
                () = self.core.token().cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// One round of partitioned membership: take (or improve) a rank,
    /// count the group's members, release what is not this member's,
    /// consume what is.
    pub(super) async fn rebalance(self: &Arc<Self>, rank: &mut Option<u32>) -> Result<()> {
        let config = &self.client.config;
        let Some(n) = config.partitions else {
            return Ok(());
        };
        let guard = self.session.lock().await;
        let Some(session) = guard.as_ref() else {
            return Ok(());
        };
        // This member counts itself even before the broker does.
        let members = members_of(session, config, self.group()).await?.max(1);
        // Ranks are dense once every member took the lowest free one; a
        // member whose rank is past the count moves down into a hole.
        let below = match *rank {
            Some(r) if r < members => None,
            Some(_) => Some(members),
            None => Some(u32::MAX),
        };
        if let Some(below) = below {
            if let Some(r) = take_rank(session, config, self.group(), below, *rank).await? {
                tracing::debug!(
                    group = self.group(),
                    rank = r,
                    members,
                    "took a rank in the group"
                );
                *rank = Some(r);
            }
        }
        let wanted: Vec<u32> = match *rank {
            Some(r) if r < members => (0..n).filter(|p| p % members == r).collect(),
            _ => Vec::new(),
        };
        // Release: stop taking from partitions meant for others; close
        // their channel once nothing of theirs is outstanding here.
        let mut closing = Vec::new();
        {
            let mut owned = self.owned.lock();
            for (p, part) in owned.iter_mut() {
                let keep = wanted.contains(p);
                if !keep && !part.releasing {
                    part.releasing = true;
                    // Not started: left unacked, so the broker gives them
                    // to the next owner first.
                    let p = *p;
                    drop(
                        self.core.queue().remove_where(|t| {
                            t.partition.as_ref().is_some_and(|o| o.partition == p)
                        }),
                    );
                }
                if part.releasing && part.outstanding.load(Ordering::Acquire) == 0 {
                    closing.push(*p);
                }
            }
        }
        for p in closing {
            let part = self.owned.lock().remove(&p);
            if let Some(part) = part {
                let _ = part.channel.close(200, "partition released".into()).await;
                tracing::debug!(group = self.group(), partition = p, "released a partition");
            }
        }
        // Take: consume the partitions meant for this member; the broker
        // makes the consumer active once the previous owner let go.
        for p in wanted {
            if self.owned.lock().contains_key(&p) {
                continue;
            }
            let queue = config.partition_queue(self.group(), p);
            let channel = session
                .connection
                .create_channel()
                .await
                .map_err(|e| amqp_err("opening a channel", e))?;
            channel
                .basic_qos(config.prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| amqp_err("setting prefetch (basic.qos)", e))?;
            let consumer = channel
                .basic_consume(
                    short("queue", &queue)?,
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_err(format!("consuming `{queue}`"), e))?;
            let outstanding = Arc::new(AtomicUsize::new(0));
            self.owned.lock().insert(
                p,
                Owned {
                    channel,
                    outstanding: Arc::clone(&outstanding),
                    releasing: false,
                },
            );
            tracing::debug!(group = self.group(), partition = p, "consuming a partition");
            self.core
                .tasks()
                .helper(Arc::clone(self).consume_partition(p, consumer, outstanding));
        }
        Ok(())
    }

    /// Takes one partition's deliveries until its channel closes; once the
    /// partition is being released, leaves them unacked.
    pub(super) async fn consume_partition(
        self: Arc<Self>,
        p: u32,
        mut consumer: lapin::Consumer,
        outstanding: Arc<AtomicUsize>,
    ) {
        let mut fresh = true;
        loop {
            let next = tokio::select! {
                () = self.core.token().cancelled() => {
                    self.hold_until_closed(consumer);
                    return;
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    if std::mem::take(&mut fresh) {
                        // The first delivery comes once the broker made this
                        // member the queue's active consumer: the previous
                        // owner has closed its channel, its letters are in.
                        self.took_over();
                    }
                    if self.takes_from(&self.owned.lock(), p, &outstanding) {
                        self.accept(delivery, Some((p, &outstanding))).await;
                    }
                }
                Some(Err(_)) | None => return,
            }
        }
    }

    /// Keeps a consumer this member stops taking from until `stop` has
    /// closed the connection. Dropping a lapin consumer cancels it on the
    /// broker (`basic.cancel`), and a cancelled single active consumer
    /// hands its queue to the next member at once, ahead of the messages
    /// it still holds unacked: the next member would get an aggregate's
    /// later events before the earlier ones come back. Closing the
    /// channel instead puts the unacked messages back in their places
    /// first, then lets the next consumer in.
    pub(super) fn hold_until_closed(&self, consumer: lapin::Consumer) {
        self.held.lock().push(consumer);
    }

    /// This member became the active consumer of a queue another member
    /// consumed: what it knows of parked aggregates is reloaded.
    pub(super) fn took_over(&self) {
        if let Some(parking) = self.core.parking() {
            parking.invalidate();
        }
    }
}
