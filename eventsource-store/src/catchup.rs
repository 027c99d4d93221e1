//! Catch-up reading for projections: from a stored checkpoint through
//! everything stored, then following new events as they are appended.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use eventsource_core::{
    handler_fn, BoxError, Error, EventBus, EventStore, RecordedEvent, Result, Subscription,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::schema::{db_err, ts};
use crate::SqlEventStore;

/// Builds a read model from events in global order.
#[async_trait]
pub trait ProjectionHandler: Send + Sync {
    /// Handles one event. An error stops the runner; the checkpoint stays
    /// at the last completed batch, so the batch is handled again on the
    /// next run (make handlers idempotent, e.g. by position).
    async fn handle(&self, event: &RecordedEvent) -> std::result::Result<(), BoxError>;
}

/// A shared projection is a projection (to keep a handle on the read
/// model while a runner feeds it).
#[async_trait]
impl<P: ProjectionHandler + ?Sized> ProjectionHandler for Arc<P> {
    async fn handle(&self, event: &RecordedEvent) -> std::result::Result<(), BoxError> {
        (**self).handle(event).await
    }
}

/// Wraps a projection so it reads events with their personal data opened
/// by a [`Shredder`](eventsource_core::personal::Shredder) (decrypted, or
/// the replacement values once the subject is forgotten): a projection
/// rebuilt after forgetting holds none of the subject's data.
pub struct OpenedProjection<P> {
    shredder: Arc<eventsource_core::personal::Shredder>,
    inner: P,
}

impl<P: ProjectionHandler> OpenedProjection<P> {
    /// `inner`, fed events opened by `shredder`.
    pub fn new(shredder: Arc<eventsource_core::personal::Shredder>, inner: P) -> Self {
        OpenedProjection { shredder, inner }
    }
}

#[async_trait]
impl<P: ProjectionHandler> ProjectionHandler for OpenedProjection<P> {
    async fn handle(&self, event: &RecordedEvent) -> std::result::Result<(), BoxError> {
        if !event
            .envelope
            .metadata
            .contains_key(eventsource_core::personal::PERSONAL_HEADER)
        {
            return self.inner.handle(event).await;
        }
        let mut opened = event.clone();
        self.shredder.open_in_place(&mut opened.envelope).await?;
        self.inner.handle(&opened).await
    }
}

/// Named checkpoints (the last position a projection completed), in the SQL store.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    store: SqlEventStore,
}

impl Checkpoints {
    /// Checkpoints kept in `store`'s database.
    pub fn new(store: SqlEventStore) -> Self {
        Checkpoints { store }
    }

    /// The position `name` has completed (0 if never run).
    pub async fn load(&self, name: &str) -> Result<u64> {
        let p: Option<i64> =
            sqlx::query_scalar("SELECT position FROM es_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(|e| {
                    db_err(
                        self.store.backend(),
                        format!("reading checkpoint `{name}`"),
                        e,
                    )
                })?;
        Ok(p.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
    }

    /// Records that `name` has completed `position`.
    pub async fn save(&self, name: &str, position: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO es_checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(ts(Utc::now()))
        .execute(&self.store.pool)
        .await
        .map_err(|e| db_err(self.store.backend(), format!("saving checkpoint `{name}`"), e))?;
        Ok(())
    }
}

/// Runs a [`ProjectionHandler`] over `read_all`, from its checkpoint.
pub struct CatchUpRunner {
    name: String,
    store: Arc<dyn EventStore>,
    checkpoints: Checkpoints,
    handler: Arc<dyn ProjectionHandler>,
    batch_size: usize,
    poll_interval: Duration,
}

impl CatchUpRunner {
    /// A runner for projection `name` (batches of 500, polling every 100 ms when live).
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore>,
        checkpoints: Checkpoints,
        handler: Arc<dyn ProjectionHandler>,
    ) -> Self {
        CatchUpRunner {
            name: name.into(),
            store,
            checkpoints,
            handler,
            batch_size: 500,
            poll_interval: Duration::from_millis(100),
        }
    }

    /// Events read per batch (one checkpoint per batch).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How often to look for new events once caught up (with
    /// [`follow`](Self::follow), the fallback should a bus wake-up be lost).
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Handles one batch after `position`; returns the new position and how many were handled.
    async fn step(&self, position: u64) -> Result<(u64, usize)> {
        let batch = self.store.read_all(position, self.batch_size).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            return Ok((position, 0));
        };
        for event in &batch {
            self.handler
                .handle(event)
                .await
                .map_err(|e| Error::Backend {
                    backend: "projection",
                    context: format!(
                        "projection `{}` failed at position {}",
                        self.name, event.position
                    ),
                    source: e,
                })?;
        }
        self.checkpoints.save(&self.name, last).await?;
        Ok((last, batch.len()))
    }

    /// Handles everything stored after the checkpoint and returns the
    /// position reached (for rebuilds and tests).
    pub async fn catch_up(&self) -> Result<u64> {
        let mut position = self.checkpoints.load(&self.name).await?;
        loop {
            let (next, n) = self.step(position).await?;
            if n == 0 {
                return Ok(position);
            }
            position = next;
            tracing::info!(projection = %self.name, position, "catching up");
        }
    }

    /// Catches up, then follows new events until `stop` is cancelled.
    /// Returns the error of a failing handler or store.
    pub async fn run(&self, stop: CancellationToken) -> Result<()> {
        // Polling only: nothing ever wakes it early.
        self.follow_after_subscribing(&Notify::new(), &stop).await
    }

    /// Catches up from the checkpoint, then follows new events live through
    /// `bus`, until `stop` is cancelled.
    ///
    /// The runner subscribes first, as consumer group `group` (a group of
    /// its own, every event), and only then reads the store, so no event
    /// stored after the catch-up began goes unnoticed. Each event the bus
    /// delivers wakes the runner, which reads the store from its position:
    /// the projection sees every stored event exactly once across the
    /// switch, in global order (so in per-aggregate order), with its
    /// checkpoint saved after each batch as during catch-up, and a restart
    /// resumes from it. The bus carries the signal; the store stays the
    /// source of truth (an event published without being stored is not
    /// projected). [`poll_interval`](Self::poll_interval) is the fallback
    /// should a wake-up be lost (a bus outage, an outbox relay that has not
    /// published yet).
    pub async fn follow(
        &self,
        bus: &dyn EventBus,
        group: &str,
        stop: CancellationToken,
    ) -> Result<()> {
        let wake = Arc::new(Notify::new());
        let signal = Arc::clone(&wake);
        let subscription = Subscription::builder(group)
            .handler(handler_fn(move |_event| {
                // A permit is kept when the runner is busy: no wake-up is lost.
                signal.notify_one();
                async { Ok(()) }
            }))
            .build()?;
        let handle = bus.subscribe(subscription).await?;
        let followed = self.follow_after_subscribing(&wake, &stop).await;
        handle.unsubscribe().await;
        followed
    }

    async fn follow_after_subscribing(
        &self,
        wake: &Notify,
        stop: &CancellationToken,
    ) -> Result<()> {
        let mut position = self.checkpoints.load(&self.name).await?;
        tracing::info!(projection = %self.name, position, "projection starting");
        loop {
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let (next, n) = self.step(position).await?;
                position = next;
                if n == 0 {
                    break;
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = wake.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
