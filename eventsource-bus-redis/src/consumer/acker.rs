//! The acker: one task that sends XACKs in batches, one per stream for
//! everything finished since its last round trip (fenced by the
//! partition's lease in partitioned mode).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Ack, GroupConsumer};

impl GroupConsumer {
    /// Queues an ack; the entry stays held until the XACK is sent.
    pub(super) fn ack_later(&self, stream: &Arc<str>, id: &str) {
        match self.acks.lock().as_ref() {
            Some(tx) if tx.send((Arc::clone(stream), id.to_owned())).is_ok() => {}
            // Stopping: the entry stays pending and is delivered again.
            _ => tracing::debug!(
                group = self.group(),
                entry = id,
                "ack after stop; the entry will be redelivered"
            ),
        }
    }

    /// Sends queued acks, as many per round trip as have piled up.
    pub(super) async fn ack_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Ack>) {
        let mut conn = self.client.conn.clone();
        while let Some((stream, id)) = rx.recv().await {
            let mut batch: HashMap<Arc<str>, Vec<String>> = HashMap::new();
            batch.entry(stream).or_default().push(id);
            let mut n = 1;
            while n < 1_000 {
                let Ok((stream, id)) = rx.try_recv() else {
                    break;
                };
                batch.entry(stream).or_default().push(id);
                n += 1;
            }
            for (stream, ids) in batch {
                let acked = match self.partition(&stream) {
                    // Fenced: only while this member owns the partition.
                    Some(p) => self.lease().ack(&mut conn, p, &stream, &ids).await,
                    None => redis::cmd("XACK")
                        .arg(&*stream)
                        .arg(self.group())
                        .arg(&ids)
                        .query_async::<i64>(&mut conn)
                        .await
                        .map(|_| true),
                };
                match acked {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(group = self.group(), stream = %stream, entries = ids.len(), "not acked: this member no longer owns the partition; its new owner handles these entries again");
                        self.left_pending.store(true, Ordering::Release);
                    }
                    // Not lost: the entries stay pending and are delivered again.
                    Err(e) => {
                        tracing::warn!(group = self.group(), entries = ids.len(), error = %e, "XACK failed; the entries will be redelivered");
                    }
                }
                for id in &ids {
                    self.release(&stream, id);
                }
            }
        }
    }
}
