//! What a memory-bus worker does with a finished delivery: nothing to ack,
//! or a dead letter to store. The loop itself is the core's
//! [`run_worker`](eventsource_core::dispatch::run_worker).

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::dispatch::{run_worker, Delivery, Outcome, Settle};
use eventsource_core::{DeadLetter, Subscription};
use tokio_util::sync::CancellationToken;

use crate::bus::Inner;
use crate::group::Group;

struct MemorySettle<'a> {
    inner: &'a Inner,
    group: &'a Group,
}

#[async_trait]
impl Settle<()> for MemorySettle<'_> {
    async fn settle(&self, delivery: Delivery<()>, outcome: Outcome) {
        if let Outcome::DeadLetter {
            error,
            last_failed_at,
        } = outcome
        {
            self.inner.dead_letters.insert(DeadLetter {
                id: String::new(),
                group: self.group.name.clone(),
                source: format!("memory:{}", self.group.name),
                envelope: Some((*delivery.envelope).clone()),
                raw: None,
                error,
                attempts: delivery.attempts,
                first_failed_at: delivery.first_failed_at.unwrap_or(last_failed_at),
                last_failed_at,
            });
        }
    }
}

/// Runs one worker of one member until `stop` is cancelled.
pub(crate) async fn run_member_worker(
    inner: Arc<Inner>,
    group: Arc<Group>,
    subscription: Subscription,
    stop: CancellationToken,
) {
    let settle = MemorySettle {
        inner: &inner,
        group: &group,
    };
    run_worker(
        "memory",
        &group.queue,
        &subscription,
        &stop,
        &inner.stats,
        &settle,
    )
    .await;
}
