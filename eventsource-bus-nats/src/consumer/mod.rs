//! One member of a consumer group, a file per concept: the member, its
//! start and its leave here; the pull reader (`reader.rs`); the messages
//! it holds, kept from redelivery while it lives and handed back when it
//! leaves (`held.rs`); and what becomes of a handled message (`settle.rs`).
//!
//! A group is a durable pull consumer with explicit acks on the events
//! stream, and another on the group's replay stream. The server shares a
//! durable's messages among the members that pull from it, and delivers
//! again what a member left unacked for `ack_wait` — a dead member's
//! messages, which is the takeover Redis does with XAUTOCLAIM.

mod held;
mod reader;
mod settle;

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_trait::async_trait;
use eventsource_core::driver::{refuse_parking, BrokerMember, Member, MemberCore};
use eventsource_core::{Result, Subscription};
use parking_lot::Mutex;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::client::{nats_err, Client, BACKEND};
use crate::membership;

/// Which of the group's two consumers a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Origin {
    /// The events stream, shared by every group.
    Events,
    /// The group's own replay stream.
    Replay,
}

/// What a worker needs to ack a message; holding it holds a prefetch slot.
pub(crate) struct Token {
    origin: Origin,
    /// The message's reply subject: where its ack goes.
    reply: String,
    /// Its sequence in its stream (for the letter's source).
    seq: u64,
    _slot: OwnedSemaphorePermit,
}

/// One subscription's member of its group: its reader, its progress
/// loop and its workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    core: MemberCore<Token>,
    /// This member's name in the group register.
    member: String,
    events: PullConsumer,
    replay: PullConsumer,
    register: Stream,
    /// The messages this member holds unacked: reply subject to where
    /// each came from.
    held: Mutex<HashMap<String, (Origin, u64)>>,
}

impl GroupConsumer {
    /// Joins the group's register, makes the group's consumers (and its
    /// replay and dead-letter streams) if needed and starts the tasks.
    pub(crate) async fn start(
        client: Arc<Client>,
        subscription: Subscription,
        stop: CancellationToken,
    ) -> Result<Arc<Self>> {
        let config = &client.config;
        let group = subscription.group().to_owned();
        refuse_parking(BACKEND, &subscription, false)?;
        let member = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let register = membership::register(&client).await?;
        let filter = subscription.filter().canonical();
        membership::join(&client, &register, &group, &member, &filter, false).await?;
        let made = async {
            let events =
                durable(&client, config.events_stream(), &group, DeliverPolicy::New).await?;
            client
                .ensure_stream(
                    config.replay_stream(&group),
                    config.replay_subject(&group),
                    None,
                )
                .await?;
            client
                .ensure_stream(config.dlq_stream(&group), config.dlq_subject(&group), None)
                .await?;
            let replay = durable(
                &client,
                config.replay_stream(&group),
                &group,
                DeliverPolicy::All,
            )
            .await?;
            Ok::<_, eventsource_core::Error>((events, replay))
        }
        .await;
        let (events, replay) = match made {
            Ok(made) => made,
            Err(e) => {
                membership::leave(&client, &register, &group, &member).await;
                return Err(e);
            }
        };
        let core = MemberCore::new(
            Arc::clone(&client.stats),
            subscription,
            config.prefetch,
            stop,
            || {
                Arc::new(crate::dlq::NatsDeadLetterQueue {
                    client: Arc::clone(&client),
                })
            },
        );
        let member = Arc::new(GroupConsumer {
            core,
            member,
            events,
            replay,
            register,
            held: Mutex::new(HashMap::new()),
            client,
        });
        let tasks = member.core.tasks();
        tasks.helper(Arc::clone(&member).read_loop());
        tasks.helper(Arc::clone(&member).progress_loop());
        MemberCore::spawn_workers(&member, &member.client.config.events_subject());
        tracing::debug!(group = member.group(), member = %member.member, "nats member started");
        Ok(member)
    }

    pub(super) fn group(&self) -> &str {
        self.core.group()
    }

    /// The stream a message of `origin` came from.
    pub(super) fn stream_name(&self, origin: Origin) -> String {
        let config = &self.client.config;
        match origin {
            Origin::Events => config.events_stream(),
            Origin::Replay => config.replay_stream(self.group()),
        }
    }
}

/// The group's durable pull consumer on `stream` (made if missing): explicit
/// acks, `ack_wait` from the config, no limit on deliveries (retries
/// happen in the member; a message comes again only when a member died
/// or let go of it), as many unacked as the members' prefetch allows.
pub(crate) async fn durable(
    client: &Client,
    stream: String,
    group: &str,
    deliver_policy: DeliverPolicy,
) -> Result<PullConsumer> {
    let config = &client.config;
    let name = config.consumer_name(group);
    let what = || format!("creating consumer `{name}` of group `{group}` on stream `{stream}`");
    let s = client
        .js
        .get_stream(&stream)
        .await
        .map_err(|e| nats_err(what(), e))?;
    s.get_or_create_consumer(
        &name,
        pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: -1,
            max_ack_pending: -1,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| nats_err(what(), e))
}

impl BrokerMember<Token> for GroupConsumer {
    fn core(&self) -> &MemberCore<Token> {
        &self.core
    }
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops pulling, lets in-flight handlers finish (until `deadline`, if
    /// any, then aborts them), hands back what it holds unfinished and
    /// leaves the register. Returns how many workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        // The reader sees the cancel, ends its pull request (handing back
        // what still arrives on it) and returns.
        self.core.token().cancel();
        let abandoned = self.core.tasks().stop(deadline).await;
        self.hand_back().await;
        membership::leave(&self.client, &self.register, self.group(), &self.member).await;
        abandoned
    }
}
