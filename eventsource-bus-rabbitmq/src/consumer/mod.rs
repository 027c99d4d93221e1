//! One member of a consumer group, a file per concept: the member, its
//! start and its leave here; its consuming connection with the consume
//! loop and reconnection (`reader.rs`); partitioned mode, with its rank in
//! the group and a channel per partition it owns (`partitioned.rs`); and
//! what becomes of a handled message (`settle.rs`).

mod partitioned;
mod reader;
mod settle;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use eventsource_core::driver::{refuse_parking, BrokerMember, Member, MemberCore};
use eventsource_core::{Result, Subscription};
use lapin::options::BasicQosOptions;
use lapin::Acker;
use tokio_util::sync::CancellationToken;

use crate::client::{amqp_err, within_connect_timeout, Client, Session, BACKEND};
use crate::membership::join_group;
use crate::topology::declare_group;
use partitioned::{Outstanding, Owned};

/// What a worker needs to settle a message.
pub(crate) struct Token {
    acker: Acker,
    routing_key: String,
    /// Partitioned mode: the partition it came from, counted outstanding
    /// until the token is dropped (settled, or dropped unacked when the
    /// partition is released).
    partition: Option<Outstanding>,
}

/// How many times a join is tried again when the group's register queue
/// is deleted under it (each time, the last other member left just then).
const JOIN_RACES: u32 = 5;

/// One subscription's consumer of its group's queue: its consume loop
/// (reconnecting) and its workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    /// Its subscription, queue, parking and tasks (the broker holds the
    /// prefetch: basic.qos).
    core: MemberCore<Token>,
    /// The consuming connection; kept open after `stop` until the workers
    /// have acked, then closed (unacked messages go back to the queue).
    session: tokio::sync::Mutex<Option<Session>>,
    /// Partitioned mode: the partitions this member consumes.
    owned: parking_lot::Mutex<BTreeMap<u32, Owned>>,
    /// Consumers let go of at `stop`, kept (not cancelled) until the
    /// connection is closed: see [`GroupConsumer::hold_until_closed`].
    held: parking_lot::Mutex<Vec<lapin::Consumer>>,
}

impl GroupConsumer {
    /// Declares the group's topology (so a bad filter or an unreachable
    /// broker fails here) and starts consuming.
    pub(crate) async fn start(
        client: Arc<Client>,
        subscription: Subscription,
        stop: CancellationToken,
    ) -> Result<Arc<Self>> {
        let config = &client.config;
        refuse_parking(
            BACKEND,
            &subscription,
            config.partitions.is_some() || config.single_active_consumer,
        )?;
        let session = Self::open(&client, &subscription).await?;
        let prefetch = usize::from(config.prefetch);
        let core = MemberCore::new(
            Arc::clone(&client.stats),
            subscription,
            prefetch,
            stop,
            || {
                Arc::new(crate::dlq::RabbitDeadLetterQueue {
                    client: Arc::clone(&client),
                })
            },
        );
        let member = Arc::new(GroupConsumer {
            core,
            session: tokio::sync::Mutex::new(None),
            owned: parking_lot::Mutex::new(BTreeMap::new()),
            held: parking_lot::Mutex::new(Vec::new()),
            client,
        });
        let tasks = member.core.tasks();
        if member.client.config.partitions.is_some() {
            tasks.helper(Arc::clone(&member).partition_loop(session));
        } else {
            tasks.helper(Arc::clone(&member).consume_loop(session));
        }
        let queue = member.client.config.queue(member.group());
        MemberCore::spawn_workers(&member, &queue);
        Ok(member)
    }

    pub(crate) fn group(&self) -> &str {
        self.core.group()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// Opens the member's session: connection, register, queues and
    /// prefetch, bounded as a whole by `connect_timeout`. An attempt that
    /// stalls is dropped (closing its connection) and made again: after a
    /// broker restart, a consumer's new connection was seen authenticated
    /// and then never answered, and the member consumed nothing more.
    pub(super) async fn open(client: &Client, subscription: &Subscription) -> Result<Session> {
        within_connect_timeout(&client.config, || Self::open_once(client, subscription)).await
    }

    async fn open_once(client: &Client, subscription: &Subscription) -> Result<Session> {
        // The register queue is auto-delete: the group's last other member
        // leaving between its declaration and our consume deletes it, and
        // the consume fails NOT_FOUND (closing the channel). A rolling
        // deploy hits this; a new session declares it again.
        let mut races = 0;
        let session = loop {
            let mut session = Session::open(&client.config, false).await?;
            match join_group(
                &session.channel,
                &client.config,
                subscription.group(),
                subscription.filter(),
            )
            .await
            {
                Ok(presence) => {
                    session.presence = Some(presence);
                    break session;
                }
                Err(e) if races < JOIN_RACES && e.to_string().contains("NOT_FOUND") => {
                    races += 1;
                    tracing::debug!(group = subscription.group(), error = %e,
                        "the group's register went away as we joined (its last member left); joining again");
                    session.close().await;
                }
                Err(e) => return Err(e),
            }
        };
        declare_group(
            &session.channel,
            &client.config,
            subscription.group(),
            subscription.filter(),
        )
        .await?;
        session
            .channel
            .basic_qos(client.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_err("setting prefetch (basic.qos)", e))?;
        Ok(session)
    }
}

impl BrokerMember<Token> for GroupConsumer {
    fn core(&self) -> &MemberCore<Token> {
        &self.core
    }
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops consuming and waits for the workers (until `deadline`, if
    /// any, then aborts them); closes the connection. Returns how many
    /// workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        let abandoned = self.core.tasks().stop(deadline).await;
        if let Some(session) = self.session.lock().await.take() {
            session.close().await;
        }
        // Closed with the connection: dropping them cancels nothing now.
        self.held.lock().clear();
        abandoned
    }
}
