//! What a memory-bus worker does with a finished delivery: nothing to ack,
//! or a dead letter to store. The loop itself is the core's
//! [`Worker`](eventsource_core::driver::Worker).

use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::driver::{Letter, Member, MemberTasks, Settle, Worker};
use eventsource_core::{DeadLetter, Failure, Subscription};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::group::Group;

struct MemorySettle<'a> {
    client: &'a Client,
    group: &'a Group,
}

#[async_trait]
impl Settle<()> for MemorySettle<'_> {
    /// Nothing the memory bus carries fails to decode.
    type Raw = std::convert::Infallible;

    fn source(&self, (): &()) -> String {
        format!("memory:{}", self.group.name)
    }

    async fn ack(&self, (): ()) {}

    fn ack_now(&self, (): ()) -> Option<()> {
        None // A handled event needs no ack here.
    }

    async fn dead_letter(&self, (): (), letter: Letter<Self::Raw>, failure: &Failure) -> bool {
        let Letter::Event(envelope) = letter;
        let letter = DeadLetter::event(String::new(), (*envelope).clone(), failure.clone());
        self.client.dead_letters.insert(letter);
        true
    }
}

/// Runs one worker of one member until `stop` is cancelled.
pub(crate) async fn run_member_worker(
    client: Arc<Client>,
    group: Arc<Group>,
    subscription: Subscription,
    stop: CancellationToken,
) {
    let settle = MemorySettle {
        client: &client,
        group: &group,
    };
    Worker {
        backend: "memory",
        destination: &group.name,
        queue: &group.queue,
        subscription: &subscription,
        stop: &stop,
        counters: &client.stats,
        settle: &settle,
        parking: subscription.parks_aggregates().then_some(&*group.parking),
    }
    .run()
    .await;
}

/// One subscription's member of its group: its workers.
pub(crate) struct GroupConsumer {
    pub(crate) group: Arc<Group>,
    pub(crate) tasks: MemberTasks,
}

#[async_trait]
impl Member for GroupConsumer {
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        let abandoned = self.tasks.stop(deadline).await;
        self.group.leave();
        abandoned
    }
}
