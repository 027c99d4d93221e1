//! One member of a consumer group, a file per concept: the member, its
//! start and its leave here; how the group's members share its events
//! (`ownership.rs`), with the single active reader (`single_active.rs`)
//! and partitions (`partitioned.rs`) in files of their own; the reader
//! (`reader.rs`), with each lane's pull requests on one standing inbox
//! (`pull.rs`) and how far ahead of the workers it reads
//! (`read_ahead.rs`); the messages it holds, kept from redelivery while
//! it lives and handed back when it leaves (`held.rs`); and what becomes
//! of a handled message (`settle.rs`).
//!
//! A group is a durable pull consumer with explicit acks on the events
//! stream (one per partition in partitioned mode), and another on the
//! group's replay stream. The server shares a durable's messages among
//! the members that pull from it, and delivers again what a member left
//! unacked for `ack_wait` — a dead member's messages, which is the
//! takeover Redis does with XAUTOCLAIM.

mod held;
mod ownership;
mod partitioned;
mod pull;
mod read_ahead;
mod reader;
mod settle;
mod single_active;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::Subject;
use async_trait::async_trait;
use eventsource_core::driver::{refuse_parking, BrokerMember, Member, MemberCore};
use eventsource_core::{Result, Subscription};
use parking_lot::Mutex;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::client::{nats_err, Client, BACKEND};
use crate::membership;
use crate::partitions::Lease;
use ownership::{Owned, Ownership, Part};

/// Which of the group's consumers a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Origin {
    /// A lane of the events stream (a partition, or the one lane).
    Events(u32),
    /// The group's own replay stream.
    Replay,
}

/// What a worker needs to ack a message; holding it holds a prefetch slot.
pub(crate) struct Token {
    origin: Origin,
    /// The message's reply subject: where its ack goes (a shared buffer,
    /// not a copy).
    reply: Subject,
    /// Its sequence in its stream (for the letter's source).
    seq: u64,
    _slot: OwnedSemaphorePermit,
}

/// One subscription's member of its group: its reader, its progress
/// loop and its workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    core: MemberCore<Token>,
    /// This member's name in the group register and on its leases.
    member: String,
    ownership: Ownership,
    /// The group's consumers of the events stream, by lane.
    lanes: Vec<PullConsumer>,
    replay: PullConsumer,
    register: Stream,
    /// The lanes this member reads: in shared mode always lane 0; else
    /// those it holds the lease of.
    owned: Mutex<BTreeMap<u32, Owned>>,
    /// The messages this member holds unacked, in stream order: where
    /// each came from and its sequence there, to its reply subject.
    held: Mutex<BTreeMap<(Origin, u64), Subject>>,
    /// How many messages it has finished with (settled, or let go), for
    /// the reader's read-ahead.
    finished: AtomicU64,
    /// Cancelled when the reader has returned, its pulls ended.
    reader_ended: CancellationToken,
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
        let ownership = Ownership::of(config);
        refuse_parking(BACKEND, &subscription, ownership.ordered())?;
        let member = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let register = membership::register(&client).await?;
        let filter = subscription.filter().canonical();
        membership::join(&client, &register, &group, &member, &filter, false).await?;
        let made = async {
            let name = config.events_stream();
            let events = client.js.get_stream(&name).await.map_err(|e| {
                nats_err(format!("looking up stream `{name}` for group `{group}`"), e)
            })?;
            let mut lanes = Vec::new();
            match ownership {
                Ownership::Partitioned(n) => {
                    for p in 0..n {
                        let name = config.partition_consumer_name(&group, p);
                        let only = config.partition_subject(p);
                        lanes.push(
                            durable(&client, &events, name, Some(only), DeliverPolicy::New).await?,
                        );
                    }
                }
                _ => {
                    let name = config.consumer_name(&group);
                    let only = config.events_subject();
                    lanes.push(
                        durable(&client, &events, name, Some(only), DeliverPolicy::New).await?,
                    );
                }
            }
            let replay = client
                .ensure_stream(config.replay_stream(&group), config.replay_subject(&group))
                .await?;
            client
                .ensure_stream(config.dlq_stream(&group), config.dlq_subject(&group))
                .await?;
            let replay = durable(
                &client,
                &replay,
                config.consumer_name(&group),
                None,
                DeliverPolicy::All,
            )
            .await?;
            Ok::<_, eventsource_core::Error>((lanes, replay))
        }
        .await;
        let (lanes, replay) = match made {
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
        let mut owned = BTreeMap::new();
        if ownership == Ownership::Shared {
            owned.insert(
                0,
                Owned {
                    part: Part::Reading,
                    lease: 0,
                },
            );
        }
        let member = Arc::new(GroupConsumer {
            core,
            member,
            ownership,
            lanes,
            replay,
            register,
            owned: Mutex::new(owned),
            held: Mutex::new(BTreeMap::new()),
            finished: AtomicU64::new(0),
            reader_ended: CancellationToken::new(),
            client,
        });
        // Take what is this member's before reading anything.
        match member.ownership {
            Ownership::Partitioned(_) => member.take_share().await,
            Ownership::SingleActive => {
                member.hold_group_lease().await;
            }
            Ownership::Shared => {}
        }
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
            Origin::Events(_) => config.events_stream(),
            Origin::Replay => config.replay_stream(self.group()),
        }
    }

    /// This member's hold on its leases.
    pub(super) fn lease(&self) -> Lease<'_> {
        Lease {
            client: &self.client,
            register: &self.register,
            owner: &self.member,
        }
    }

    /// This member took what another held (a partition, or the group's
    /// lease): what it knows of parked aggregates is reloaded.
    pub(super) fn took_over(&self) {
        if let Some(parking) = self.core.parking() {
            parking.invalidate();
        }
    }

    /// Where a lane just taken starts: drained first when the group's
    /// consumer has messages out (a dead member's, due again after their
    /// `ack_wait`), else read at once.
    async fn first_part(&self, lane: u32) -> Part {
        let mut consumer = self.lanes[lane as usize].clone();
        match consumer.info().await {
            Ok(info) if info.num_ack_pending == 0 => Part::Reading,
            Ok(_) | Err(_) => {
                Part::Draining(tokio::time::Instant::now() + self.client.config.progress_interval)
            }
        }
    }
}

/// The group's durable pull consumer `name` on `stream` (made if missing),
/// on subject `only` if given: explicit acks, `ack_wait` from the config,
/// no limit on deliveries (retries happen in the member; a message comes
/// again only when a member died or let go of it), as many unacked as the
/// members' prefetch allows.
pub(crate) async fn durable(
    client: &Client,
    stream: &Stream,
    name: String,
    only: Option<String>,
    deliver_policy: DeliverPolicy,
) -> Result<PullConsumer> {
    let config = &client.config;
    stream
        .get_or_create_consumer(
            &name,
            PullConfig {
                durable_name: Some(name.clone()),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: -1,
                max_ack_pending: -1,
                filter_subject: only.unwrap_or_default(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            let stream = &stream.cached_info().config.name;
            nats_err(
                format!("creating consumer `{name}` on stream `{stream}`"),
                e,
            )
        })
}

impl BrokerMember<Token> for GroupConsumer {
    fn core(&self) -> &MemberCore<Token> {
        &self.core
    }
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops pulling, lets in-flight handlers finish (until `deadline`, if
    /// any, then aborts them), hands back what it holds unfinished, gives
    /// up its leases and leaves the register. Returns how many workers
    /// were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        // The reader sees the cancel, lets its pull requests run out
        // (within `block`; what still arrives on them is held, to be
        // handed back) and returns. It is waited for before the tasks are
        // joined within `deadline`: aborted, it would drop a pull the
        // server still delivers to, and what it delivered would come back
        // only after `ack_wait` — behind newer events of its aggregates.
        self.core.token().cancel();
        let ran_out = self.client.config.block + pull::GRACE;
        let _ = tokio::time::timeout(ran_out, self.reader_ended.cancelled()).await;
        let abandoned = self.core.tasks().stop(deadline).await;
        // Handed back before the leases go, so the next owner finds all of it.
        self.hand_back().await;
        self.release_all().await;
        membership::leave(&self.client, &self.register, self.group(), &self.member).await;
        abandoned
    }
}
