//! Single active consumer: one member of the group pulls, holding the
//! group's lease; the others stand by and take over when it lapses (or is
//! released by a clean leave, after the leaver handed back what it held).

use super::ownership::Owned;
use super::GroupConsumer;
use crate::partitions::lease_subject;

impl GroupConsumer {
    /// Takes the group's lease if it is free (keeps it if held: renewals
    /// are the progress loop's). Returns whether this member reads.
    pub(super) async fn hold_group_lease(&self) -> bool {
        if self.owned.lock().contains_key(&0) {
            return true;
        }
        let subject = lease_subject(&self.client, self.group(), None);
        match self.lease().take(&subject).await {
            Ok(Some(seq)) => {
                let part = self.first_part(0).await;
                self.took_over();
                self.owned.lock().insert(0, Owned { part, lease: seq });
                tracing::info!(group = self.group(), member = %self.member, "this member is now the group's active reader");
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "could not check the group's lease; standing by");
                false
            }
        }
    }
}
