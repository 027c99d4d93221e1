//! The entries a member holds unacked: recorded as read, refreshed every
//! `claim_interval` so that no other member takes them, released when
//! settled, and handed back to the group when the member leaves.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::GroupConsumer;

impl GroupConsumer {
    pub(super) fn hold(&self, stream: &Arc<str>, id: &str) -> bool {
        self.held
            .lock()
            .entry(Arc::clone(stream))
            .or_default()
            .insert(id.to_owned())
    }

    /// XCLAIMs `ids` of `stream` to this member (JUSTID): with `idle`, sets
    /// their idle time to it (ms) so others take them at once; without,
    /// resets it so others leave them alone.
    pub(super) async fn claim_to_self(
        &self,
        stream: &str,
        ids: &[String],
        idle: Option<&str>,
    ) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(stream)
            .arg(self.group())
            .arg(&self.consumer)
            .arg(0)
            .arg(ids);
        if let Some(idle) = idle {
            cmd.arg("IDLE").arg(idle);
        }
        cmd.arg("JUSTID");
        let mut conn = self.client.conn.clone();
        cmd.query_async::<redis::Value>(&mut conn).await.map(|_| ())
    }

    /// The entries this member holds unacked, per stream.
    pub(super) fn held_ids(&self) -> Vec<(Arc<str>, Vec<String>)> {
        self.held
            .lock()
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(s, ids)| (Arc::clone(s), ids.iter().cloned().collect()))
            .collect()
    }

    /// Lets go of an entry whose partition another member owns now: it
    /// stays pending in the group under this member's name, for the owner
    /// to claim — so this member must not delete itself from the group.
    pub(super) fn forsake(&self, stream: &Arc<str>, id: &str) {
        tracing::warn!(group = self.group(), stream = %stream, entry = id, "not dead-lettered: this member no longer owns the partition; its new owner handles the entry");
        self.release(stream, id);
        self.left_pending.store(true, Ordering::Release);
    }

    pub(super) fn release(&self, stream: &Arc<str>, id: &str) {
        if let Some(ids) = self.held.lock().get_mut(stream) {
            ids.remove(id);
        }
    }

    /// Hands back the entries this member holds but will not finish (read
    /// ahead and never started, or cut off at shutdown): XCLAIM to itself
    /// with an idle time past `claim_min_idle`, so the next XAUTOCLAIM of
    /// any other member of the group takes them at once.
    pub(super) async fn hand_back(&self) {
        let held = self.held_ids();
        let idle = (self.client.config.claim_min_idle * 2)
            .as_millis()
            .to_string();
        for (stream, ids) in held {
            match self.claim_to_self(&stream, &ids, Some(&idle)).await {
                Ok(()) => {
                    tracing::debug!(group = self.group(), stream = %stream, entries = ids.len(), "handed unfinished entries back to the group")
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), error = %e, "could not hand entries back; other members take them over after claim_min_idle")
                }
            }
        }
    }

    /// Every `claim_interval`, resets the idle time of the entries this
    /// member holds (XCLAIM to itself with JUSTID), so that other members
    /// take over only a dead member's entries.
    pub(super) async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.core.token().cancelled() => return,
                () = tokio::time::sleep(self.client.config.claim_interval) => {}
            }
            if let Err(e) = self.register().await {
                tracing::error!(group = self.group(), error = %e, "could not renew this member in its group's register");
            }
            let mut conn = self.client.conn.clone();
            if self.ownership.single_active() {
                let active = self.hold_lease(&mut conn).await;
                self.active.store(active, Ordering::Release);
            }
            self.renew_partitions(&mut conn).await;
            for (stream, ids) in self.held_ids() {
                if let Err(e) = self.claim_to_self(&stream, &ids, None).await {
                    tracing::warn!(error = %e, "refreshing held redis entries failed");
                }
            }
        }
    }
}
