//! One member of a consumer group: the XREADGROUP reader, the workers that
//! run the handler and XACK, the takeover of entries a dead member left
//! behind, and the refresher that keeps this member's own entries fresh.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{
    refuse_parking, triage, Delivery, Intake, KeyedQueue, Member, MemberTasks, Outcome, Parking,
    Settle,
};
use eventsource_core::{Result, Subscription};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{is_transient, redis_err, Client, BACKEND};
use crate::dlq::{write_dead_letter, LetterBody};
use crate::partitions::{self, Lease};
use crate::{membership, wire};

/// What a worker needs to ack an entry; holding it holds a prefetch slot.
pub(crate) struct Token {
    stream: Arc<str>,
    id: String,
    _slot: OwnedSemaphorePermit,
}

/// An entry to ack: its stream and id.
type Ack = (Arc<str>, String);

/// Where a member stands with a partition it holds the lease of
/// (partitioned mode).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Just taken: claiming what the group left pending in it (a previous
    /// owner's entries), from this XAUTOCLAIM cursor, before reading new ones.
    Draining(String),
    /// Read with the other partitions.
    Reading,
    /// Meant for another member: no longer read; the lease goes once
    /// every entry read from it is acked.
    Releasing,
}

/// One subscription's consumer in its Redis consumer group: its reader,
/// claimer, acker and workers.
pub(crate) struct GroupConsumer {
    client: Arc<Client>,
    subscription: Subscription,
    consumer: String,
    /// The event streams: the namespace's one, or one per partition.
    events: Vec<Arc<str>>,
    /// The group's replay stream.
    replay: Arc<str>,
    /// Partitioned mode: the partitions this member holds the lease of.
    owned: Mutex<BTreeMap<u32, Part>>,
    queue: KeyedQueue<Token>,
    /// Entry ids this member holds unacked, per stream.
    held: Mutex<HashMap<Arc<str>, HashSet<String>>>,
    slots: Arc<Semaphore>,
    tasks: MemberTasks,
    workers: usize,
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
    /// The group's parked aggregates, when the subscription parks them.
    parking: Option<Arc<Parking>>,
    /// The reader connection's server-side client id (`CLIENT ID`), or -1
    /// while unknown: a leave sends it `CLIENT UNBLOCK` rather than wait
    /// out a blocked XREADGROUP.
    reader_id: AtomicI64,
    /// Set when the reader has returned: the leave stops unblocking it.
    reader_ended: AtomicBool,
}

/// Sets its flag when dropped: on every way out of the reader.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[async_trait]
impl Settle<Token> for GroupConsumer {
    async fn settle(&self, delivery: Delivery<Token>, outcome: Outcome) {
        let Delivery {
            envelope, token, ..
        } = delivery;
        match outcome {
            Outcome::DeadLetter(failure) => {
                let failure = failure.from_source(format!("{}/{}", token.stream, token.id));
                let body = LetterBody::Event((*envelope).clone());
                let written = write_dead_letter(
                    &self.client,
                    &token.stream,
                    &token.id,
                    &body,
                    &failure,
                    self.fence(&token.stream),
                )
                .await;
                match written {
                    Ok(true) => self.release(&token.stream, &token.id),
                    Ok(false) => self.forsake(&token.stream, &token.id),
                    Err(e) => {
                        tracing::error!(error = %e, "could not dead-letter; the entry stays pending and will be redelivered")
                    }
                }
            }
            _ => self.ack(&token.stream, &token.id),
        }
    }

    fn settle_now(
        &self,
        delivery: Delivery<Token>,
        outcome: Outcome,
    ) -> Option<(Delivery<Token>, Outcome)> {
        if outcome != Outcome::Handled {
            return Some((delivery, outcome));
        }
        // Acks are queued for the acker's next batch: nothing to wait for.
        self.ack(&delivery.token.stream, &delivery.token.id);
        None
    }
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
            config.partitions.is_some() || config.single_active_consumer,
        )?;
        let parking = subscription.parks_aggregates().then(|| {
            let dlq = Arc::new(crate::dlq::RedisDeadLetterQueue {
                client: Arc::clone(&client),
            });
            Parking::new(group.clone(), dlq)
        });
        let events: Vec<Arc<str>> = config.event_streams().into_iter().map(Into::into).collect();
        let replay: Arc<str> = config.replay_stream(&group).into();
        let consumer = format!(
            "{}-{}-{}",
            std::process::id(),
            group,
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let member = Arc::new(GroupConsumer {
            tasks: MemberTasks::new(stop),
            slots: Arc::new(Semaphore::new(config.prefetch)),
            queue: KeyedQueue::new(config.prefetch),
            held: Mutex::new(HashMap::new()),
            workers: subscription.concurrency(),
            acks: Mutex::new(None),
            acker: Mutex::new(None),
            active: AtomicBool::new(true),
            left_pending: AtomicBool::new(false),
            owned: Mutex::new(BTreeMap::new()),
            parking,
            client,
            subscription,
            consumer,
            events,
            replay,
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
        if member.client.config.partitions.is_some() {
            member.take_share(&mut member.client.conn.clone()).await;
        }
        if member.client.config.single_active_consumer {
            let mut conn = member.client.conn.clone();
            let active = member.hold_lease(&mut conn).await;
            member.active.store(active, Ordering::Release);
        }
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        *member.acks.lock() = Some(ack_tx);
        *member.acker.lock() = Some(tokio::spawn(Arc::clone(&member).ack_loop(ack_rx)));
        member
            .tasks
            .helper(Arc::clone(&member).read_loop(reader_conn));
        member.tasks.helper(Arc::clone(&member).refresh_loop());
        member.tasks.spawn_workers(
            BACKEND,
            member.client.config.events_stream(),
            &member,
            member.workers,
            |m| {
                (
                    &m.queue,
                    &m.subscription,
                    &m.client.stats,
                    m.parking.as_deref(),
                )
            },
        );
        tracing::debug!(group = member.group(), consumer = %member.consumer, "redis member started");
        Ok(member)
    }

    fn group(&self) -> &str {
        self.subscription.group()
    }

    /// Registers (or renews) this member in its group's register, refused
    /// when a live member uses another filter.
    async fn register(&self) -> Result<()> {
        let mut conn = self.client.conn.clone();
        membership::join(
            &mut conn,
            &self.client.config,
            self.group(),
            &self.consumer,
            &self.subscription.filter().canonical(),
        )
        .await
    }

    /// Hands back the entries this member holds but will not finish (read
    /// ahead and never started, or cut off at shutdown): XCLAIM to itself
    /// with an idle time past `claim_min_idle`, so the next XAUTOCLAIM of
    /// any other member of the group takes them at once.
    async fn hand_back(&self) {
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

    async fn create_group(&self, key: &str, from: &str) -> Result<()> {
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

    fn hold(&self, stream: &Arc<str>, id: &str) -> bool {
        self.held
            .lock()
            .entry(Arc::clone(stream))
            .or_default()
            .insert(id.to_owned())
    }

    /// XCLAIMs `ids` of `stream` to this member (JUSTID): with `idle`, sets
    /// their idle time to it (ms) so others take them at once; without,
    /// resets it so others leave them alone.
    async fn claim_to_self(
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
    fn held_ids(&self) -> Vec<(Arc<str>, Vec<String>)> {
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
    fn forsake(&self, stream: &Arc<str>, id: &str) {
        tracing::warn!(group = self.group(), stream = %stream, entry = id, "not dead-lettered: this member no longer owns the partition; its new owner handles the entry");
        self.release(stream, id);
        self.left_pending.store(true, Ordering::Release);
    }

    fn release(&self, stream: &Arc<str>, id: &str) {
        if let Some(ids) = self.held.lock().get_mut(stream) {
            ids.remove(id);
        }
    }

    /// With `single_active_consumer`: takes or keeps the group's lease.
    /// Returns whether this member may read. Always `true` without it.
    async fn hold_lease(&self, conn: &mut ConnectionManager) -> bool {
        let config = &self.client.config;
        if !config.single_active_consumer {
            return true;
        }
        let ttl = config.claim_min_idle.as_millis().to_string();
        // Take it if free, or extend it if ours; anything else: stand by.
        let held: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(
                "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
                 if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
                 return 0",
            )
            .arg(1)
            .arg(config.lease_key(self.group()))
            .arg(&self.consumer)
            .arg(&ttl)
            .query_async(conn)
            .await;
        match held {
            Ok(1) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "could not check the group lease; standing by");
                false
            }
        }
    }

    /// Gives the lease up if this member holds it.
    async fn release_lease(&self) {
        if !self.client.config.single_active_consumer {
            return;
        }
        let mut conn = self.client.conn.clone();
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(self.client.config.lease_key(self.group()))
            .arg(&self.consumer)
            .query_async(&mut conn)
            .await;
    }

    /// Partitioned mode, leaving: gives up every partition (after
    /// [`hand_back`](Self::hand_back), so the next owner finds all this
    /// member left pending).
    async fn release_partitions(&self) {
        let owned: Vec<u32> = std::mem::take(&mut *self.owned.lock())
            .into_keys()
            .collect();
        let mut conn = self.client.conn.clone();
        let lease = self.lease();
        for p in owned {
            if let Err(e) = lease.release(&mut conn, p).await {
                tracing::warn!(group = self.group(), partition = p, error = %e, "could not release a partition; it frees itself after claim_min_idle");
            }
        }
    }

    /// Partitioned mode: renews the lease of every partition held; drops
    /// (stops reading) one whose lease was lost, which happens only when
    /// this member stalled past `claim_min_idle` and another took it over.
    async fn renew_partitions(&self, conn: &mut ConnectionManager) {
        let owned: Vec<u32> = self.owned.lock().keys().copied().collect();
        let lease = self.lease();
        for p in owned {
            match lease.renew(conn, p).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(group = self.group(), partition = p, "lost the lease of a partition (stalled past claim_min_idle?); its new owner handles what this member did not ack");
                    self.owned.lock().remove(&p);
                    // Not this member's to refresh any more: a refresh
                    // (XCLAIM to itself) would take them from the new owner.
                    self.held.lock().remove(&self.events[p as usize]);
                    self.left_pending.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(group = self.group(), partition = p, error = %e, "could not renew a partition's lease")
                }
            }
        }
    }

    /// Reads new entries while there are free prefetch slots.
    async fn read_loop(self: Arc<Self>, mut conn: ConnectionManager) {
        let _ended = SetOnDrop(&self.reader_ended);
        let config = &self.client.config;
        let block_ms = config.block.as_millis().to_string();
        let mut backoff = Duration::from_millis(100);
        // When the reader's client id was last asked for: again after any
        // error (the connection may have been replaced) and every second.
        let mut id_asked: Option<tokio::time::Instant> = None;
        let mut last_claim = tokio::time::Instant::now();
        // The last take-over filled every slot it had: more may be waiting.
        let mut abandoned_left = false;
        let mut active = !config.single_active_consumer;
        let mut lease_checked = tokio::time::Instant::now();
        // With single_active_consumer, right after taking the lease: the
        // XAUTOCLAIM cursor of each stream over the group's pending entries.
        let mut draining: Option<[String; 2]> = None;
        // Partitioned: how often to look at the group's members.
        let rebalance_every = config.block.min(config.claim_interval);
        let mut last_rebalance: Option<tokio::time::Instant> = None;
        loop {
            if config.partitions.is_some()
                && last_rebalance.is_none_or(|t| t.elapsed() >= rebalance_every)
            {
                last_rebalance = Some(tokio::time::Instant::now());
                let _settled = self.rebalance(&mut conn).await;
            }
            if config.single_active_consumer
                && (!active || lease_checked.elapsed() >= config.claim_interval)
            {
                lease_checked = tokio::time::Instant::now();
                let was_active = active;
                active = self.hold_lease(&mut conn).await;
                if !active {
                    tokio::select! {
                        () = self.tasks.token().cancelled() => return,
                        () = tokio::time::sleep(config.claim_interval) => {}
                    }
                    continue;
                }
                if !was_active {
                    tracing::info!(group = self.group(), consumer = %self.consumer, "this member is now the group's active reader");
                    self.took_over();
                    // Take over everything the previous holder left, in
                    // stream order, before reading anything new.
                    draining = Some(["0-0".to_owned(), "0-0".to_owned()]);
                }
            }
            let first = tokio::select! {
                () = self.tasks.token().cancelled() => return,
                slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let mut slots = vec![first];
            while let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
                slots.push(slot);
            }
            if let Some(cursors) = draining.as_mut() {
                if self.take_over_all(&mut conn, cursors, &mut slots).await {
                    tracing::info!(
                        group = self.group(),
                        "took over every entry the previous active member left"
                    );
                    draining = None;
                }
                // Read new entries only once nothing older is left.
                continue;
            }
            if config.partitions.is_some() {
                self.drain_taken(&mut conn, &mut slots).await;
                if slots.is_empty() {
                    continue;
                }
            }
            let streams = self.readable();
            // Every claim_interval — and at once again while the last
            // round filled every free slot: entries handed back by members
            // that left (or a dead member's) may still be waiting, and a
            // member with room takes them now rather than `prefetch` per
            // interval.
            if abandoned_left || last_claim.elapsed() >= config.claim_interval {
                last_claim = tokio::time::Instant::now();
                let offered = slots.len();
                self.take_over(&mut conn, &streams, &mut slots).await;
                abandoned_left = offered > 0 && slots.is_empty();
                if slots.is_empty() {
                    continue;
                }
            }
            if id_asked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                id_asked = Some(tokio::time::Instant::now());
                let id: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await;
                self.reader_id.store(id.unwrap_or(-1), Ordering::Release);
            }
            // A leave cancels, then unblocks: past this check it finds
            // the XREADGROUP blocked and ends it.
            if self.tasks.token().is_cancelled() {
                return;
            }
            // COUNT applies per stream: split the free slots between them.
            let count = slots.len().div_ceil(streams.len()).max(1);
            let mut xread = redis::cmd("XREADGROUP");
            xread
                .arg("GROUP")
                .arg(self.group())
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(&block_ms)
                .arg("STREAMS");
            for stream in &streams {
                xread.arg(&**stream);
            }
            for _ in &streams {
                xread.arg(">");
            }
            // Not cancelled midway: an XREADGROUP whose reply were dropped
            // would leave entries pending until another member claims them.
            let reply: redis::RedisResult<Option<StreamReadReply>> =
                xread.query_async(&mut conn).await;
            match reply {
                Ok(reply) => {
                    backoff = Duration::from_millis(100);
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        let Some(stream) = streams.iter().find(|s| ***s == *key.key).cloned()
                        else {
                            continue;
                        };
                        for entry in key.ids {
                            let slot = match slots.pop() {
                                Some(slot) => slot,
                                // Rounded up per stream: wait for a slot for
                                // the extra ones — or, stopping, hold them
                                // unstarted so the leave hands them back.
                                None => tokio::select! {
                                    slot = Arc::clone(&self.slots).acquire_owned() => match slot {
                                        Ok(slot) => slot,
                                        Err(_) => return,
                                    },
                                    () = self.tasks.token().cancelled() => {
                                        self.hold(&stream, &entry.id);
                                        continue;
                                    }
                                },
                            };
                            self.accept(&stream, entry, slot).await;
                        }
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The server lost the group (restarted without persistence):
                    // recreate it from the start of whatever the stream holds now.
                    tracing::warn!(
                        group = self.group(),
                        "redis consumer group missing, recreating it"
                    );
                    for stream in self.events.iter().chain([&self.replay]) {
                        if let Err(e) = self.create_group(stream, "0").await {
                            tracing::warn!(error = %e, "recreating redis consumer group failed");
                        }
                    }
                }
                Err(e) => {
                    id_asked = None;
                    if !is_transient(&e) {
                        tracing::error!(group = self.group(), error = %e, "XREADGROUP failed");
                    } else {
                        tracing::warn!(group = self.group(), error = %e, ?backoff, "redis unreachable, reader backing off");
                    }
                    tokio::select! {
                        () = self.tasks.token().cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The streams to read now: the event stream and the replay stream, or
    /// in partitioned mode the partitions this member reads and the replay
    /// stream.
    fn readable(&self) -> Vec<Arc<str>> {
        let mut streams: Vec<Arc<str>> = if self.client.config.partitions.is_some() {
            self.owned
                .lock()
                .iter()
                .filter(|(_, part)| **part == Part::Reading)
                .map(|(p, _)| Arc::clone(&self.events[*p as usize]))
                .collect()
        } else {
            self.events.clone()
        };
        streams.push(Arc::clone(&self.replay));
        streams
    }

    /// This member took what another held (a partition, or the group's
    /// lease): what it knows of parked aggregates is reloaded.
    fn took_over(&self) {
        if let Some(parking) = &self.parking {
            parking.invalidate();
        }
    }

    /// The partition `stream` is, in partitioned mode.
    fn partition(&self, stream: &str) -> Option<u32> {
        self.client.config.partitions?;
        self.events
            .iter()
            .position(|s| **s == *stream)
            .map(|p| p as u32)
    }

    /// The lease a dead letter from `stream` needs, in partitioned mode.
    fn fence(&self, stream: &str) -> crate::dlq::Fence<'_> {
        self.partition(stream).map(|p| {
            (
                self.client.config.partition_lease_key(self.group(), p),
                self.consumer.as_str(),
            )
        })
    }

    fn lease(&self) -> Lease<'_> {
        Lease {
            config: &self.client.config,
            group: self.group(),
            owner: &self.consumer,
        }
    }

    /// Partitioned mode: compares the partitions this member holds with
    /// its share among the group's live members; starts releasing the
    /// ones it should not hold (their lease goes once what was read from
    /// them is acked), and takes the free ones it should.
    /// Returns whether this member holds exactly its share afterwards.
    async fn rebalance(&self, conn: &mut ConnectionManager) -> bool {
        let config = &self.client.config;
        let Some(n) = config.partitions else {
            return true;
        };
        let members = match partitions::live_members(conn, config, self.group()).await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(group = self.group(), error = %e, "could not read the group's members; partitions stay as they are");
                return false;
            }
        };
        let wanted = partitions::assigned(&members, &self.consumer, n);
        let drained: Vec<u32> = {
            let held = self.held.lock();
            let mut owned = self.owned.lock();
            for (p, part) in owned.iter_mut() {
                match (wanted.contains(p), &*part) {
                    (false, Part::Releasing) | (true, Part::Reading | Part::Draining(_)) => {}
                    (false, _) => {
                        tracing::debug!(
                            group = self.group(),
                            partition = p,
                            "releasing a partition to another member"
                        );
                        *part = Part::Releasing;
                    }
                    (true, Part::Releasing) => *part = Part::Reading,
                }
            }
            owned
                .iter()
                .filter(|(p, part)| {
                    **part == Part::Releasing
                        && held
                            .get(&self.events[**p as usize])
                            .is_none_or(HashSet::is_empty)
                })
                .map(|(p, _)| *p)
                .collect()
        };
        let lease = self.lease();
        for p in drained {
            if let Err(e) = lease.release(conn, p).await {
                tracing::warn!(group = self.group(), partition = p, error = %e, "could not release a partition; it frees itself after claim_min_idle");
            }
            self.owned.lock().remove(&p);
            tracing::debug!(group = self.group(), partition = p, "released a partition");
        }
        for p in wanted.iter().copied() {
            if self.owned.lock().contains_key(&p) {
                continue;
            }
            match lease.take(conn, p).await {
                Ok(true) => {
                    tracing::debug!(group = self.group(), partition = p, "took a partition");
                    self.took_over();
                    self.owned
                        .lock()
                        .insert(p, Part::Draining("0-0".to_owned()));
                }
                // Its owner has not let go yet: next round.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(group = self.group(), partition = p, error = %e, "could not take a partition")
                }
            }
        }
        self.owned.lock().keys().copied().eq(wanted)
    }

    /// Partitioned mode, joining: rebalances until this member holds its
    /// share, as long as the holders keep letting go — it stops waiting
    /// once three of the holders' rebalance rounds in a row brought it no
    /// new partition, or after `claim_min_idle`. A holder lets go of a
    /// partition only once what it read from it is acked, so one busy in
    /// a long handler (or a crashed one, whose lease lapses only after
    /// `claim_min_idle`) does not hold `subscribe` up: it once waited up to
    /// `claim_min_idle`, 30 s by default, for any of them. The reader goes
    /// on rebalancing and takes the rest as they come free.
    async fn take_share(&self, conn: &mut ConnectionManager) {
        let config = &self.client.config;
        let round = config.block.min(config.claim_interval);
        let deadline = tokio::time::Instant::now() + config.claim_min_idle;
        let every = round / 2;
        let (mut held, mut progress_at) = (0, tokio::time::Instant::now());
        while !self.rebalance(conn).await {
            let now = tokio::time::Instant::now();
            let holds = self.owned.lock().len();
            if holds > held {
                (held, progress_at) = (holds, now);
            }
            if now >= deadline || now.duration_since(progress_at) >= round * 3 {
                tracing::info!(group = self.group(), consumer = %self.consumer, partitions = holds, "joined without its whole share of partitions yet; it takes the rest as their holders let go");
                return;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Partitioned mode: claims what the group left pending in the
    /// partitions just taken (whatever its idle time: the lease says the
    /// previous owner is gone), in stream order, as many as `slots`
    /// allows; a partition is read once nothing older is left in it.
    async fn drain_taken(
        &self,
        conn: &mut ConnectionManager,
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) {
        let taken: Vec<(u32, String)> = self
            .owned
            .lock()
            .iter()
            .filter_map(|(p, part)| match part {
                Part::Draining(cursor) => Some((*p, cursor.clone())),
                _ => None,
            })
            .collect();
        for (p, mut cursor) in taken {
            let stream = Arc::clone(&self.events[p as usize]);
            let done = self.drain(conn, &stream, &mut cursor, slots).await;
            if let Some(part) = self.owned.lock().get_mut(&p) {
                if matches!(part, Part::Draining(_)) {
                    *part = if done {
                        Part::Reading
                    } else {
                        Part::Draining(cursor)
                    };
                }
            }
        }
    }

    /// Queues an entry for the workers, or acks it at once when the filter
    /// does not select it, or dead-letters it when it does not decode.
    async fn accept(&self, stream: &Arc<str>, entry: StreamId, slot: OwnedSemaphorePermit) {
        if !self.hold(stream, &entry.id) {
            return; // Already ours (claimed and read in the same round).
        }
        let fields = wire::fields_as_text(&entry.map);
        let source = || format!("{stream}/{}", entry.id);
        match triage(BACKEND, &self.subscription, wire::decode(&fields), source) {
            Intake::Handle(envelope) => {
                let token = Token {
                    stream: Arc::clone(stream),
                    id: entry.id,
                    _slot: slot,
                };
                self.queue
                    .push_now(Delivery::new(Arc::new(envelope), token));
            }
            Intake::Skip => self.ack(stream, &entry.id),
            Intake::DeadLetter(failure) => {
                let body = LetterBody::Raw(fields);
                let written = write_dead_letter(
                    &self.client,
                    stream,
                    &entry.id,
                    &body,
                    &failure,
                    self.fence(stream),
                )
                .await;
                match written {
                    Ok(true) => {
                        self.client.stats.dead_lettered(self.subscription.group());
                        self.release(stream, &entry.id);
                    }
                    Ok(false) => self.forsake(stream, &entry.id),
                    Err(e) => {
                        tracing::error!(error = %e, "could not dead-letter an undecodable entry; it stays pending");
                        self.release(stream, &entry.id);
                    }
                }
            }
        }
    }

    /// Queues an ack; the entry stays held until the XACK is sent.
    fn ack(&self, stream: &Arc<str>, id: &str) {
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
    async fn ack_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Ack>) {
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

    /// Takes over entries of `streams` idle longer than `claim_min_idle`
    /// (a dead member's), as many as `slots` allows (XAUTOCLAIM). In
    /// partitioned mode `streams` are the partitions this member owns (a
    /// straggler a stalled former owner read after losing the lease) and
    /// the replay stream.
    async fn take_over(
        &self,
        conn: &mut ConnectionManager,
        streams: &[Arc<str>],
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) {
        let min_idle = self.client.config.claim_min_idle.as_millis().to_string();
        for stream in streams {
            if slots.is_empty() {
                return;
            }
            let claimed = self
                .autoclaim(conn, stream, &min_idle, "0-0", slots.len())
                .await;
            match claimed {
                Ok(reply) => {
                    for entry in reply.claimed {
                        let Some(slot) = slots.pop() else { break };
                        tracing::info!(group = self.group(), entry = %entry.id, "took over an entry abandoned by another member");
                        self.accept(stream, entry, slot).await;
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {}
                Err(e) => tracing::warn!(error = %e, stream = %stream, "XAUTOCLAIM failed"),
            }
        }
    }

    /// XAUTOCLAIM of up to `count` entries of `stream` idle at least
    /// `min_idle` ms, scanning the group's pending list from `cursor`.
    async fn autoclaim(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
        min_idle: &str,
        cursor: &str,
        count: usize,
    ) -> redis::RedisResult<StreamAutoClaimReply> {
        redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(self.group())
            .arg(&self.consumer)
            .arg(min_idle)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(conn)
            .await
    }

    /// Claims the group's pending entries whatever their idle time, from
    /// `cursors` on, as many as `slots` allows, in stream order. Returns
    /// `true` once both streams are scanned to the end. Only for the
    /// single active member: no other member reads meanwhile.
    async fn take_over_all(
        &self,
        conn: &mut ConnectionManager,
        cursors: &mut [String; 2],
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) -> bool {
        let streams = [Arc::clone(&self.events[0]), Arc::clone(&self.replay)];
        for (stream, cursor) in streams.iter().zip(cursors.iter_mut()) {
            if !self.drain(conn, stream, cursor, slots).await {
                return false;
            }
        }
        true
    }

    /// Claims `stream`'s pending entries of the group whatever their idle
    /// time, from `cursor` on, as many as `slots` allows, in stream order.
    /// Returns `true` once the stream is scanned to the end. Only for a
    /// member no other member competes with on `stream` (the single active
    /// one, or a partition's owner).
    async fn drain(
        &self,
        conn: &mut ConnectionManager,
        stream: &Arc<str>,
        cursor: &mut String,
        slots: &mut Vec<OwnedSemaphorePermit>,
    ) -> bool {
        while cursor.as_str() != "done" {
            if slots.is_empty() {
                return false;
            }
            let claimed = self
                .autoclaim(conn, stream, "0", cursor.as_str(), slots.len())
                .await;
            match claimed {
                Ok(reply) => {
                    for entry in reply.claimed {
                        let Some(slot) = slots.pop() else { break };
                        self.accept(stream, entry, slot).await;
                    }
                    *cursor = if reply.next_stream_id == "0-0" {
                        "done".to_owned()
                    } else {
                        reply.next_stream_id
                    };
                }
                Err(e) if e.code() == Some("NOGROUP") => *cursor = "done".to_owned(),
                Err(e) => {
                    tracing::warn!(error = %e, stream = %stream, "XAUTOCLAIM failed");
                    return false;
                }
            }
        }
        true
    }

    /// Until the reader returns, ends its blocked XREADGROUP with `CLIENT
    /// UNBLOCK` (as if its BLOCK had run out: it reads nothing, so no entry
    /// is left pending by it). Repeated, as the reader may be between two
    /// commands when the first is sent; given up after `block`, which the
    /// reader then waits out.
    async fn unblock_reader(&self) {
        let mut conn = self.client.conn.clone();
        let give_up = tokio::time::Instant::now() + self.client.config.block;
        while !self.reader_ended.load(Ordering::Acquire) && tokio::time::Instant::now() < give_up {
            let id = self.reader_id.load(Ordering::Acquire);
            if id >= 0 {
                let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(id)
                    .query_async(&mut conn)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every `claim_interval`, resets the idle time of the entries this
    /// member holds (XCLAIM to itself with JUSTID), so that other members
    /// take over only a dead member's entries.
    async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.tasks.token().cancelled() => return,
                () = tokio::time::sleep(self.client.config.claim_interval) => {}
            }
            if let Err(e) = self.register().await {
                tracing::error!(group = self.group(), error = %e, "could not renew this member in its group's register");
            }
            let mut conn = self.client.conn.clone();
            if self.client.config.single_active_consumer {
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

#[async_trait]
impl Member for GroupConsumer {
    /// Stops fetching, lets in-flight handlers finish (until `deadline`,
    /// if any, then aborts them), and leaves the group — deleting the
    /// consumer when it holds nothing. Returns how many workers were aborted.
    async fn stop(&self, deadline: Option<tokio::time::Instant>) -> usize {
        // Cancel first, so that an unblocked reader returns rather than
        // reads again; then end its blocked XREADGROUP while the tasks are
        // joined, instead of waiting out `block`.
        self.tasks.token().cancel();
        let (abandoned, ()) = tokio::join!(self.tasks.stop(deadline), self.unblock_reader());
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
