//! The outbox relay: publishes outbox rows to a bus, in order, and marks
//! them sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use eventsource_core::bounds::{self, HOUR, MILLISECOND};
use eventsource_core::{Error, EventBus, EventEnvelope, Result};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::schema::{db_err, ts};
use crate::{Dialect, SqlEventStore};

/// How the relay polls and backs off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct OutboxRelayConfig {
    /// Rows published per batch (one `publish` call).
    pub batch_size: usize,
    /// How long to wait when the outbox is empty.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The longest wait between attempts while the bus is down.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for OutboxRelayConfig {
    fn default() -> Self {
        OutboxRelayConfig {
            batch_size: 100,
            poll_interval: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl OutboxRelayConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        bounds::count("outbox relay: batch_size", self.batch_size, 1, 10_000)?;
        bounds::duration(
            "outbox relay: poll_interval",
            self.poll_interval,
            MILLISECOND,
            HOUR,
        )?;
        bounds::duration(
            "outbox relay: max_backoff",
            self.max_backoff,
            MILLISECOND,
            HOUR,
        )?;
        if self.max_backoff < self.poll_interval {
            return Err(Error::config(
                "outbox relay: poll_interval must be more than zero and max_backoff at least poll_interval",
            ));
        }
        Ok(())
    }
}

eventsource_core::config_setters!(OutboxRelayConfig {
    batch_size: usize,
    poll_interval: Duration,
    max_backoff: Duration,
});

/// `UPDATE es_outbox SET {set} WHERE id IN ($2, ..)` for `n` ids; `set` uses `$1`.
fn update_by_ids(set: &str, n: usize) -> String {
    let placeholders = (2..n + 2)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE es_outbox SET {set} WHERE id IN ({placeholders})")
}

/// What a relay has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// Events published and marked sent.
    pub published: u64,
    /// Batches that failed to publish (and were retried).
    pub failures: u64,
}

/// Publishes the outbox of a [`SqlEventStore`] to an [`EventBus`].
///
/// Rows are published in the order they were appended, one batch per
/// `publish`, and marked sent once published (see
/// [`relay_once`](Self::relay_once) for the transactions on each database);
/// a failed publish leaves them unsent and the relay backs off (doubling up
/// to `max_backoff`) while the bus is down. Several relays may run against
/// one PostgreSQL database: a transaction-scoped advisory lock lets one of
/// them publish at a time, so order holds, and `FOR UPDATE SKIP LOCKED`
/// guards the rows. On SQLite run one relay per database file.
///
/// Delivery is at least once: a crash after publishing but before the
/// commit publishes that batch again.
pub struct OutboxRelay {
    store: SqlEventStore,
    bus: Arc<dyn EventBus>,
    config: OutboxRelayConfig,
    published: AtomicU64,
    failures: AtomicU64,
}

impl OutboxRelay {
    /// A relay with the default configuration.
    pub fn new(store: SqlEventStore, bus: Arc<dyn EventBus>) -> Self {
        OutboxRelay {
            store,
            bus,
            config: OutboxRelayConfig::default(),
            published: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Replaces the configuration (validated).
    pub fn with_config(mut self, config: OutboxRelayConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// What this relay has done so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            published: self.published.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Outbox rows not yet sent.
    pub async fn pending(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM es_outbox WHERE sent_at IS NULL")
            .fetch_one(&self.store.pool)
            .await
            .map_err(|e| db_err(self.store.backend(), "counting unsent outbox rows", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes rows sent more than `older_than` ago; returns how many.
    /// Sent rows are kept for inspection until pruned; run this now and
    /// then (unsent rows are never touched).
    pub async fn prune_sent(&self, older_than: Duration) -> Result<u64> {
        let too_large = || {
            Error::config(
                "outbox prune: older_than is too large (it reaches before the earliest date)",
            )
        };
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(too_large)?;
        let done = sqlx::query("DELETE FROM es_outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(ts(cutoff))
            .execute(&self.store.pool)
            .await
            .map_err(|e| db_err(self.store.backend(), "pruning sent outbox rows", e))?;
        Ok(done.rows_affected())
    }

    /// Publishes one batch; returns how many rows it sent (0 when the
    /// outbox is empty or another relay holds the turn).
    ///
    /// On PostgreSQL the batch is read, published and marked sent in one
    /// transaction holding the relay turn (an advisory lock) and the rows
    /// (`FOR UPDATE SKIP LOCKED`); neither blocks the application's
    /// appends. On SQLite any write transaction locks the whole file, so
    /// the batch is read without one, published, and then marked sent in
    /// a short write transaction: the application's saves never wait for
    /// the bus.
    pub async fn relay_once(&self) -> Result<usize> {
        let backend = self.store.backend();
        let batch = i64::try_from(self.config.batch_size).unwrap_or(100);
        let (mut tx, rows) = match self.store.dialect {
            Dialect::Postgres => {
                let mut tx = self.store.begin_write().await?;
                let turn: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(7426002)")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| db_err(backend, "taking the relay lock", e))?;
                if !turn {
                    return Ok(0);
                }
                let rows = sqlx::query(
                    "SELECT id, envelope FROM es_outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 \
                     FOR UPDATE SKIP LOCKED",
                )
                .bind(batch)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err(backend, "reading the outbox", e))?;
                (Some(tx), rows)
            }
            Dialect::Sqlite => {
                let rows = sqlx::query(
                    "SELECT id, envelope FROM es_outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
                )
                .bind(batch)
                .fetch_all(&self.store.pool)
                .await
                .map_err(|e| db_err(backend, "reading the outbox", e))?;
                (None, rows)
            }
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row
                .try_get("id")
                .map_err(|e| db_err(backend, "reading an outbox row", e))?;
            let json: String = row
                .try_get("envelope")
                .map_err(|e| db_err(backend, "reading an outbox row", e))?;
            let envelope: EventEnvelope = serde_json::from_str(&json).map_err(|e| {
                Error::backend(
                    backend,
                    format!("outbox row {id} holds no valid envelope"),
                    e,
                )
            })?;
            ids.push(id);
            events.push(envelope);
        }
        if let Err(e) = self.bus.publish(&events).await {
            drop(tx);
            self.failures.fetch_add(1, Ordering::Relaxed);
            let sql = update_by_ids("attempts = attempts + 1, last_error = $1", ids.len());
            let mut q = sqlx::query(&sql).bind(e.to_string());
            for id in &ids {
                q = q.bind(*id);
            }
            if let Err(db) = q.execute(&self.store.pool).await {
                tracing::warn!(error = %db, "could not record the outbox failure");
            }
            return Err(e);
        }
        let sql = update_by_ids("sent_at = $1, attempts = attempts + 1", ids.len());
        let mut q = sqlx::query(&sql).bind(ts(Utc::now()));
        for id in &ids {
            q = q.bind(*id);
        }
        let mut tx = match tx.take() {
            Some(tx) => tx,
            None => self.store.begin_write().await?,
        };
        q.execute(&mut *tx)
            .await
            .map_err(|e| db_err(backend, "marking outbox rows sent", e))?;
        tx.commit()
            .await
            .map_err(|e| db_err(backend, "committing the relay batch", e))?;
        self.published
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        Ok(ids.len())
    }

    /// Relays until `stop` is cancelled: batch after batch while there is
    /// work, `poll_interval` naps when there is none, backoff while the
    /// bus is down. Logs progress.
    pub async fn run(&self, stop: CancellationToken) {
        let mut backoff = self.config.poll_interval;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let wait = match self.relay_once().await {
                Ok(0) => self.config.poll_interval,
                Ok(n) => {
                    backoff = self.config.poll_interval;
                    tracing::debug!(
                        published = n,
                        total = self.stats().published,
                        "outbox relay batch sent"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "outbox relay: publish failed, backing off");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
