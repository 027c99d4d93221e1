//! An idempotent inbox: each event handled at most once per consumer group,
//! its record written in the same transaction as the handler's own writes.
//!
//! Every bus delivers at least once: after a crash between a handler's
//! work and the ack, the event comes again. With the inbox, the handler
//! receives a transaction on the store's database in which the inbox has
//! already recorded `(group, event id)`; the handler's writes and that
//! record commit together, or neither does. A redelivered event finds its
//! record and is skipped (acked, not handled again) — a targeted replay's
//! copy too, unless the replay reprocesses ([`crate::ReplayOptions::reprocess`]):
//! then the copy is recorded under the event id and the replay id, and
//! handled once more per replay. Two members handling
//! the same event at once (a takeover while the first still runs) queue on
//! the record's key, and the second skips.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use eventsource_core::{EventEnvelope, EventHandler, HandlerError, HandlerResult, Result};
use sqlx::{Any, Transaction};

use crate::schema::{db_err, ts};
use crate::SqlEventStore;

/// A handler whose writes go into the inbox's transaction.
///
/// ```no_run
/// use eventsource_core::{EventEnvelope, HandlerError, HandlerResult, Subscription};
/// use eventsource_store::{sqlx, Inbox, InboxHandler, SqlEventStore, StoreConfig};
///
/// struct Ledger;
///
/// #[async_trait::async_trait]
/// impl InboxHandler for Ledger {
///     async fn handle(
///         &self,
///         tx: &mut sqlx::Transaction<'static, sqlx::Any>,
///         event: &EventEnvelope,
///     ) -> HandlerResult {
///         sqlx::query("INSERT INTO ledger (invoice) VALUES ($1)")
///             .bind(&event.aggregate_id)
///             .execute(&mut **tx)
///             .await
///             .map_err(HandlerError::transient)?;
///         Ok(())
///     }
/// }
///
/// # async fn wire() -> eventsource_core::Result<()> {
/// let store = SqlEventStore::connect(StoreConfig::new("sqlite://app.db")).await?;
/// let inbox = Inbox::new(store);
/// let subscription = Subscription::builder("ledger")
///     .handler(inbox.handler("ledger", Ledger))
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait InboxHandler: Send + Sync + 'static {
    /// Handles `event`, writing through `tx`; an error rolls everything
    /// back (the inbox record too), so the event is retried.
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &EventEnvelope,
    ) -> HandlerResult;
}

/// The record of which events each consumer group has handled, in the SQL
/// store's database (table `es_inbox`).
#[derive(Debug, Clone)]
pub struct Inbox {
    store: SqlEventStore,
}

impl Inbox {
    /// An inbox in `store`'s database.
    pub fn new(store: SqlEventStore) -> Self {
        Inbox { store }
    }

    /// The [`EventHandler`] to subscribe as consumer group `group`
    /// (give the subscription the same group name): it runs `handler` at
    /// most once per event.
    pub fn handler(&self, group: impl Into<String>, handler: impl InboxHandler) -> InboxedHandler {
        InboxedHandler {
            store: self.store.clone(),
            group: group.into(),
            handler: Arc::new(handler),
        }
    }

    /// Whether `group` has handled event `event_id`.
    pub async fn contains(&self, group: &str, event_id: uuid::Uuid) -> Result<bool> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT event_id FROM es_inbox WHERE group_name = $1 AND event_id = $2",
        )
        .bind(group)
        .bind(event_id.to_string())
        .fetch_optional(&self.store.pool)
        .await
        .map_err(|e| {
            db_err(
                self.store.backend(),
                format!("reading the inbox of `{group}`"),
                e,
            )
        })?;
        Ok(found.is_some())
    }

    /// Deletes the records of events handled before `before` (redeliveries
    /// older than that would be handled again); returns how many.
    pub async fn prune(&self, before: chrono::DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM es_inbox WHERE handled_at < $1")
            .bind(ts(before))
            .execute(&self.store.pool)
            .await
            .map_err(|e| db_err(self.store.backend(), "pruning the inbox", e))?;
        Ok(done.rows_affected())
    }
}

/// The key an event is recorded under: its id; for a targeted replay's
/// copy meant to be handled again ([`eventsource_core::REPROCESS`]), its
/// id and the replay's, so that it is handled once more per replay.
fn inbox_key(event: &EventEnvelope) -> String {
    match eventsource_core::reprocessing(event) {
        Some(replay) => format!("{}/{replay}", event.event_id),
        None => event.event_id.to_string(),
    }
}

/// An [`EventHandler`] that runs an [`InboxHandler`] at most once per
/// event for its group; made by [`Inbox::handler`].
pub struct InboxedHandler {
    store: SqlEventStore,
    group: String,
    handler: Arc<dyn InboxHandler>,
}

impl InboxedHandler {
    fn db_error(&self, doing: &str, e: sqlx::Error) -> HandlerError {
        HandlerError::transient(db_err(
            self.store.backend(),
            format!("{doing} (inbox of `{}`)", self.group),
            e,
        ))
    }
}

#[async_trait]
impl EventHandler for InboxedHandler {
    async fn handle(&self, event: &EventEnvelope) -> HandlerResult {
        let mut tx = self
            .store
            .pool
            .begin()
            .await
            .map_err(|e| self.db_error("starting a transaction", e))?;
        let recorded = sqlx::query(
            "INSERT INTO es_inbox (group_name, event_id, handled_at) VALUES ($1, $2, $3) \
             ON CONFLICT (group_name, event_id) DO NOTHING",
        )
        .bind(&self.group)
        .bind(inbox_key(event))
        .bind(ts(Utc::now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_error("recording the event", e))?;
        if recorded.rows_affected() == 0 {
            tracing::debug!(group = %self.group, event_id = %event.event_id, "already handled; skipping the redelivery");
            return Ok(()); // `tx` rolls back on drop: nothing was written.
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit()
            .await
            .map_err(|e| self.db_error("committing", e))
    }

    fn name(&self) -> &str {
        "eventsource_store::InboxedHandler"
    }
}
