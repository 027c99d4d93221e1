//! One member of a consumer group, a file per concept: the member, its
//! start and its leave here; how the group's members share its streams
//! (`ownership.rs`), with the single active reader (`single_active.rs`)
//! and partitions (`partitioned.rs`) in files of their own; the
//! XREADGROUP reader (`reader.rs`); the entries it holds, kept fresh while
//! it lives and handed back when it leaves (`held.rs`); the takeover of
//! what a dead member left (`takeover.rs`); the batched XACKs
//! (`acker.rs`); and what becomes of a handled entry (`settle.rs`).

mod acker;
mod held;
mod ownership;
mod partitioned;
mod reader;
mod settle;
mod single_active;
mod takeover;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{refuse_parking, BrokerMember, Member, MemberCore};
use eventsource_core::{Result, Subscription};
use parking_lot::Mutex;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{redis_err, Client, BACKEND};
use crate::membership;
use ownership::Ownership;
use partitioned::Part;

/// What a worker needs to ack an entry; holding it holds a prefetch slot.
pub(crate) struct Token {
    stream: Arc<str>,
    id: String,
    _slot: OwnedSemaphorePermit,
}

/// An entry to ack: its stream and id.
type Ack = (Arc<str>, String);

/// One subscription's consumer in its Redis consumer group: its reader,
/// claimer, acker and workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    /// Its subscription, queue, slots, parking and tasks.
    core: MemberCore<Token>,
    consumer: String,
    /// The event streams: the namespace's one, or one per partition.
    events: Vec<Arc<str>>,
    /// The group's replay stream.
    replay: Arc<str>,
    /// Partitioned mode: the partitions this member holds the lease of.
    owned: Mutex<BTreeMap<u32, Part>>,
    /// Entry ids this member holds unacked, per stream.
    held: Mutex<HashMap<Arc<str>, HashSet<String>>>,
    /// Acks go to one task that sends them in batches: one XACK per stream
    /// for everything finished since its last round trip.
    acks: Mutex<Option<mpsc::UnboundedSender<Ack>>>,
    acker: Mutex<Option<JoinHandle<()>>>,
    /// Whether this member reads: always, or while it holds the group's
    /// lease with `single_active_consumer`.
    active: AtomicBool,
    /// Partitioned mode: entries were left pending under this member's
    /// name for a partition's new owner (acks or dead letters refused
    /// after the lease was lost), so leaving must not delete the consumer
    /// (XGROUP DELCONSUMER drops its pending entries).
    left_pending: AtomicBool,
    /// How the group's members share its streams.
    ownership: Ownership,
    /// The reader connection's server-side client id (`CLIENT ID`), or -1
    /// while unknown: a leave sends it `CLIENT UNBLOCK` rather than wait
    /// out a blocked XREADGROUP.
    reader_id: AtomicI64,
    /// Set when the reader has returned: the leave stops unblocking it.
    reader_ended: AtomicBool,
}

impl GroupConsumer {
    /// Creates the group on both streams if needed and starts the tasks.
    pub(crate) async fn start(
        client: Arc<Client>,
        subscription: Subscription,
        stop: CancellationToken,
    ) -> Result<Arc<Self>> {
        let config = &client.config;
        let group = subscription.group().to_owned();
        refuse_parking(
            BACKEND,
            &subscription,
            Ownership::of(config) != Ownership::Shared,
        )?;
        let events: Vec<Arc<str>> = config.event_streams().into_iter().map(Into::into).collect();
        let replay: Arc<str> = config.replay_stream(&group).into();
        let consumer = format!(
            "{}-{}-{}",
            std::process::id(),
            group,
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let ownership = Ownership::of(config);
        let core = MemberCore::new(
            Arc::clone(&client.stats),
            subscription,
            config.prefetch,
            stop,
            || {
                Arc::new(crate::dlq::RedisDeadLetterQueue {
                    client: Arc::clone(&client),
                })
            },
        );
        let member = Arc::new(GroupConsumer {
            core,
            held: Mutex::new(HashMap::new()),
            acks: Mutex::new(None),
            acker: Mutex::new(None),
            active: AtomicBool::new(true),
            left_pending: AtomicBool::new(false),
            owned: Mutex::new(BTreeMap::new()),
            client,
            consumer,
            events,
            replay,
            ownership,
            reader_id: AtomicI64::new(-1),
            reader_ended: AtomicBool::new(false),
        });
        // New events only on the shared streams (as a queue bound late would),
        // everything on the group's own replay stream.
        for stream in &member.events {
            member.create_group(stream, "$").await?;
        }
        member.create_group(&member.replay, "0").await?;
        member.register().await?;
        let reader_conn = member
            .client
            .connection(member.client.config.block + Duration::from_secs(5))
            .await?;
        if member.ownership.partitions().is_some() {
            member.take_share(&mut member.client.conn.clone()).await;
        }
        if member.ownership.single_active() {
            let mut conn = member.client.conn.clone();
            let active = member.hold_lease(&mut conn).await;
            member.active.store(active, Ordering::Release);
        }
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        *member.acks.lock() = Some(ack_tx);
        *member.acker.lock() = Some(tokio::spawn(Arc::clone(&member).ack_loop(ack_rx)));
        let tasks = member.core.tasks();
        tasks.helper(Arc::clone(&member).read_loop(reader_conn));
        tasks.helper(Arc::clone(&member).refresh_loop());
        MemberCore::spawn_workers(&member, &member.client.config.events_stream());
        tracing::debug!(group = member.group(), consumer = %member.consumer, "redis member started");
        Ok(member)
    }

    pub(super) fn group(&self) -> &str {
        self.core.group()
    }

    /// Registers (or renews) this member in its group's register, refused
    /// when a live member uses another filter.
    pub(super) async fn register(&self) -> Result<()> {
        let mut conn = self.client.conn.clone();
        membership::join(
            &mut conn,
            &self.client.config,
            self.group(),
            &self.consumer,
            &self.core.subscription().filter().canonical(),
        )
        .await
    }

    pub(super) async fn create_group(&self, key: &str, from: &str) -> Result<()> {
        let mut conn = self.client.conn.clone();
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(self.group())
            .arg(from)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(redis_err(
                format!("XGROUP CREATE `{key}` group `{}`", self.group()),
                e,
            )),
        }
    }
}

impl BrokerMember<Token> for GroupConsumer {
    fn core(&self) -> &MemberCore<Token> {
        &self.core
    }
}

#[async_trait]
impl Member for GroupConsumer {
    /// Stops fetching, lets in-flight handlers finish (until `deadline`,
    /// if any, then aborts them), and leaves the group — deleting the
    /// consumer when it holds nothing. Returns how many workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        // Cancel first, so that an unblocked reader returns rather than
        // reads again; then end its blocked XREADGROUP while the tasks are
        // joined, instead of waiting out `block`.
        self.core.token().cancel();
        let (abandoned, ()) = tokio::join!(self.core.tasks().stop(deadline), self.unblock_reader());
        // No more acks can come: let the acker send what is queued, then end.
        drop(self.acks.lock().take());
        let acker = self.acker.lock().take();
        if let Some(acker) = acker {
            let _ = acker.await;
        }
        // What is still held was never finished: the group takes it at
        // once. Only then may the next single active member start, so it
        // finds everything this one left.
        self.hand_back().await;
        self.release_lease().await;
        self.release_partitions().await;
        let mut conn = self.client.conn.clone();
        membership::leave(&mut conn, &self.client.config, self.group(), &self.consumer).await;
        let holds_nothing = self.held.lock().values().all(HashSet::is_empty)
            && !self.left_pending.load(Ordering::Acquire);
        if holds_nothing {
            for stream in self.events.iter().chain([&self.replay]) {
                // Only when the server, too, shows nothing pending for it:
                // DELCONSUMER drops a consumer's pending entries, and an
                // entry read just as the reader stopped may not be held.
                let pending: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XPENDING")
                    .arg(&**stream)
                    .arg(self.group())
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .arg(&self.consumer)
                    .query_async(&mut conn)
                    .await;
                if !pending.is_ok_and(|p| p.is_empty()) {
                    continue;
                }
                let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&**stream)
                    .arg(self.group())
                    .arg(&self.consumer)
                    .query_async(&mut conn)
                    .await;
            }
        }
        abandoned
    }
}
