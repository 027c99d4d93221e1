//! One member of a consumer group: the XREADGROUP reader, the workers that
//! run the handler and XACK, the takeover of entries a dead member left
//! behind, and the refresher that keeps this member's own entries fresh.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_core::driver::{
    triage, Delivery, Intake, KeyedQueue, Member, MemberTasks, Outcome, Settle,
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
use crate::{membership, wire};

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
    subscription: Subscription,
    consumer: String,
    streams: [Arc<str>; 2],
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
    active: std::sync::atomic::AtomicBool,
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
                let written =
                    write_dead_letter(&self.client, &token.stream, &token.id, &body, &failure)
                        .await;
                match written {
                    Ok(()) => self.release(&token.stream, &token.id),
                    Err(e) => {
                        tracing::error!(error = %e, "could not dead-letter; the entry stays pending and will be redelivered")
                    }
                }
            }
            _ => self.ack(&token.stream, &token.id),
        }
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
        let streams: [Arc<str>; 2] = [
            config.events_stream().into(),
            config.replay_stream(&group).into(),
        ];
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
            active: std::sync::atomic::AtomicBool::new(true),
            client,
            subscription,
            consumer,
            streams,
        });
        // New events only on the shared stream (as a queue bound late would),
        // everything on the group's own replay stream.
        member.create_group(0, "$").await?;
        member.create_group(1, "0").await?;
        member.register().await?;
        let reader_conn = member
            .client
            .connection(member.client.config.block + Duration::from_secs(5))
            .await?;
        if member.client.config.single_active_consumer {
            let mut conn = member.client.conn.clone();
            let active = member.hold_lease(&mut conn).await;
            member
                .active
                .store(active, std::sync::atomic::Ordering::Release);
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
            |m| (&m.queue, &m.subscription, &m.client.stats),
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

    async fn create_group(&self, stream: usize, from: &str) -> Result<()> {
        let key = &self.streams[stream];
        let mut conn = self.client.conn.clone();
        let created: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&**key)
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

    /// Reads new entries while there are free prefetch slots.
    async fn read_loop(self: Arc<Self>, mut conn: ConnectionManager) {
        let block_ms = self.client.config.block.as_millis().to_string();
        let mut backoff = Duration::from_millis(100);
        let mut last_claim = tokio::time::Instant::now();
        let mut active = !self.client.config.single_active_consumer;
        let mut lease_checked = tokio::time::Instant::now();
        // With single_active_consumer, right after taking the lease: the
        // XAUTOCLAIM cursor of each stream over the group's pending entries.
        let mut draining: Option<[String; 2]> = None;
        loop {
            if self.client.config.single_active_consumer
                && (!active || lease_checked.elapsed() >= self.client.config.claim_interval)
            {
                lease_checked = tokio::time::Instant::now();
                let was_active = active;
                active = self.hold_lease(&mut conn).await;
                if !active {
                    tokio::select! {
                        () = self.tasks.token().cancelled() => return,
                        () = tokio::time::sleep(self.client.config.claim_interval) => {}
                    }
                    continue;
                }
                if !was_active {
                    tracing::info!(group = self.group(), consumer = %self.consumer, "this member is now the group's active reader");
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
            if last_claim.elapsed() >= self.client.config.claim_interval {
                last_claim = tokio::time::Instant::now();
                self.take_over(&mut conn, &mut slots).await;
                if slots.is_empty() {
                    continue;
                }
            }
            // Not cancelled midway: an XREADGROUP whose reply were dropped
            // would leave entries pending until another member claims them.
            let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(self.group())
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(slots.len())
                .arg("BLOCK")
                .arg(&block_ms)
                .arg("STREAMS")
                .arg(&*self.streams[0])
                .arg(&*self.streams[1])
                .arg(">")
                .arg(">")
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(reply) => {
                    backoff = Duration::from_millis(100);
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        let Some(stream) = self.streams.iter().find(|s| ***s == *key.key).cloned()
                        else {
                            continue;
                        };
                        for entry in key.ids {
                            let slot = match slots.pop() {
                                Some(slot) => slot,
                                // COUNT applies per stream: wait for a slot for the extra ones.
                                None => match Arc::clone(&self.slots).acquire_owned().await {
                                    Ok(slot) => slot,
                                    Err(_) => return,
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
                    for i in 0..2 {
                        if let Err(e) = self.create_group(i, "0").await {
                            tracing::warn!(error = %e, "recreating redis consumer group failed");
                        }
                    }
                }
                Err(e) => {
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
                if let Err(e) =
                    write_dead_letter(&self.client, stream, &entry.id, &body, &failure).await
                {
                    tracing::error!(error = %e, "could not dead-letter an undecodable entry; it stays pending");
                } else {
                    self.client.stats.dead_lettered(self.subscription.group());
                }
                self.release(stream, &entry.id);
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
                let acked: redis::RedisResult<i64> = redis::cmd("XACK")
                    .arg(&*stream)
                    .arg(self.group())
                    .arg(&ids)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = acked {
                    // Not lost: the entries stay pending and are delivered again.
                    tracing::warn!(group = self.group(), entries = ids.len(), error = %e, "XACK failed; the entries will be redelivered");
                }
                for id in &ids {
                    self.release(&stream, id);
                }
            }
        }
    }

    /// Takes over entries of this group idle longer than `claim_min_idle`
    /// (a dead member's), as many as `slots` allows (XAUTOCLAIM).
    async fn take_over(&self, conn: &mut ConnectionManager, slots: &mut Vec<OwnedSemaphorePermit>) {
        let min_idle = self.client.config.claim_min_idle.as_millis().to_string();
        for stream in &self.streams {
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
        for (stream, cursor) in self.streams.iter().zip(cursors.iter_mut()) {
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
        }
        true
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
                self.active
                    .store(active, std::sync::atomic::Ordering::Release);
            }
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
        let abandoned = self.tasks.stop(deadline).await;
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
        let mut conn = self.client.conn.clone();
        membership::leave(&mut conn, &self.client.config, self.group(), &self.consumer).await;
        let holds_nothing = self.held.lock().values().all(HashSet::is_empty);
        if holds_nothing {
            for stream in &self.streams {
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
