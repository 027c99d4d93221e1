//! Durable timeouts of process managers: the scheduler that fires them
//! when due, and the listing the CLI shows.
//!
//! A timeout is a row of `es_timeouts`, written in the transaction of the
//! step that scheduled it, so it survives any restart. The scheduler polls
//! for due ones and, in one transaction per round, claims them, delivers
//! each to its process's consumer group only ([`EventBus::redeliver`]),
//! and marks them fired. Several schedulers may run: on PostgreSQL each
//! claims with `FOR UPDATE SKIP LOCKED`, so they share the due rows
//! without waiting on each other; on SQLite the round's transaction takes
//! the database's single write lock, so one scheduler runs a round at a
//! time. A crash between delivering and committing leaves the timeout due,
//! and it is delivered again: the envelope carries the timeout's id, and
//! the runner handles an input once per instance.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventsource_core::process::timeout_envelope;
use eventsource_core::{Error, EventBus, EventEnvelope, Result};
use serde::Serialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::schema::{column_err, db_err, parse_ts, ts};
use crate::{Dialect, SqlEventStore};

/// Due timeouts claimed per round, at most.
const ROUND: i64 = 100;

/// Fires process managers' timeouts when they fall due.
#[derive(Clone)]
pub struct TimeoutScheduler {
    store: SqlEventStore,
    bus: Arc<dyn EventBus>,
    poll: Duration,
}

impl std::fmt::Debug for TimeoutScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutScheduler")
            .field("store", &self.store)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

/// A timeout as listed ([`TimeoutScheduler::list`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledTimeout {
    /// Its id (the event id it is delivered with).
    pub id: String,
    /// The process manager's name.
    pub process: String,
    /// The instance that scheduled it.
    pub instance: String,
    /// Its name within the instance.
    pub name: String,
    /// The consumer group it is delivered to.
    pub group: String,
    /// When it falls due.
    pub due_at: DateTime<Utc>,
    /// When it was scheduled.
    pub scheduled_at: DateTime<Utc>,
    /// When it was delivered, if it was.
    pub fired_at: Option<DateTime<Utc>>,
    /// When it was cancelled, if it was.
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl TimeoutScheduler {
    /// A scheduler for `store`'s timeouts, delivering through `bus`,
    /// polling every 500 ms (a timeout fires at most that late, plus a
    /// round's work).
    pub fn new(store: SqlEventStore, bus: Arc<dyn EventBus>) -> Self {
        TimeoutScheduler {
            store,
            bus,
            poll: Duration::from_millis(500),
        }
    }

    /// Polls every `poll` instead; refuses zero, naming the field.
    pub fn poll_interval(mut self, poll: Duration) -> Result<Self> {
        if poll.is_zero() {
            return Err(Error::config(
                "timeout scheduler: poll_interval must be above zero",
            ));
        }
        self.poll = poll;
        Ok(self)
    }

    /// Fires the timeouts due now (up to one round); returns how many were
    /// delivered. A group the bus refuses (it never subscribed there) keeps
    /// its timeouts due, logged, and the others still fire.
    pub async fn fire_due(&self) -> Result<usize> {
        let backend = self.store.backend();
        let mut tx = self.store.begin_write().await?;
        let lock = match self.store.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT id, process, instance, name, group_name, due_at FROM es_timeouts \
             WHERE fired_at IS NULL AND cancelled_at IS NULL AND due_at <= $1 \
             ORDER BY due_at LIMIT {ROUND}{lock}"
        ))
        .bind(ts(Utc::now()))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_err(backend, "reading due timeouts", e))?;
        let mut by_group: Vec<(String, Vec<EventEnvelope>)> = Vec::new();
        for row in &rows {
            let text = |c: &str| row.try_get::<String, _>(c).unwrap_or_default();
            let id = text("id");
            let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
                tracing::warn!(id, "a timeout with an id that is not a UUID; skipped");
                continue;
            };
            let envelope = timeout_envelope(
                &text("process"),
                &text("instance"),
                &text("name"),
                uuid,
                // A due time that does not read fires it now.
                parse_ts(&text("due_at")).unwrap_or_else(|_| Utc::now()),
            );
            let group = text("group_name");
            match by_group.iter_mut().find(|(g, _)| *g == group) {
                Some((_, events)) => events.push(envelope),
                None => by_group.push((group, vec![envelope])),
            }
        }
        let mut fired = 0;
        let now = ts(Utc::now());
        for (group, events) in by_group {
            if let Err(e) = self.bus.redeliver(&group, &events).await {
                tracing::warn!(group, error = %e, timeouts = events.len(), "due timeouts not delivered; they stay due");
                continue;
            }
            for e in &events {
                sqlx::query("UPDATE es_timeouts SET fired_at = $1 WHERE id = $2")
                    .bind(now.clone())
                    .bind(e.event_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_err(backend, "marking a timeout fired", e))?;
            }
            fired += events.len();
        }
        tx.commit()
            .await
            .map_err(|e| db_err(backend, "committing fired timeouts", e))?;
        if fired > 0 {
            tracing::debug!(fired, "timeouts delivered");
        }
        Ok(fired)
    }

    /// Fires due timeouts until `stop`: a full round goes again at once,
    /// otherwise it waits the poll interval. Errors are logged and retried.
    pub async fn run(&self, stop: CancellationToken) {
        loop {
            let wait = match self.fire_due().await {
                Ok(n) if n as i64 >= ROUND => Duration::ZERO,
                Ok(_) => self.poll,
                Err(e) => {
                    tracing::warn!(error = %e, "firing timeouts failed; retrying");
                    self.poll
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The timeouts of `store`, pending ones only unless `all`, of one
    /// process if given, soonest due first.
    pub async fn list(
        store: &SqlEventStore,
        process: Option<&str>,
        all: bool,
    ) -> Result<Vec<ScheduledTimeout>> {
        let mut sql = String::from(
            "SELECT id, process, instance, name, group_name, due_at, scheduled_at, fired_at, \
             cancelled_at FROM es_timeouts WHERE 1 = 1",
        );
        if !all {
            sql.push_str(" AND fired_at IS NULL AND cancelled_at IS NULL");
        }
        if process.is_some() {
            sql.push_str(" AND process = $1");
        }
        sql.push_str(" ORDER BY due_at, id");
        let mut query = sqlx::query(&sql);
        if let Some(p) = process {
            query = query.bind(p);
        }
        let rows = query
            .fetch_all(&store.pool)
            .await
            .map_err(|e| db_err(store.backend(), "listing timeouts", e))?;
        rows.iter()
            .map(|row| {
                let bad = |c: &str, e: &dyn std::fmt::Display| {
                    column_err(store.backend(), "reading a timeout", c, e)
                };
                let text = |c: &str| row.try_get::<String, _>(c).map_err(|e| bad(c, &e));
                let time = |c: &str| parse_ts(&text(c)?).map_err(|e| bad(c, &e));
                let maybe = |c: &str| -> Result<Option<DateTime<Utc>>> {
                    row.try_get::<Option<String>, _>(c)
                        .map_err(|e| bad(c, &e))?
                        .map(|t| parse_ts(&t).map_err(|e| bad(c, &e)))
                        .transpose()
                };
                Ok(ScheduledTimeout {
                    id: text("id")?,
                    process: text("process")?,
                    instance: text("instance")?,
                    name: text("name")?,
                    group: text("group_name")?,
                    due_at: time("due_at")?,
                    scheduled_at: time("scheduled_at")?,
                    fired_at: maybe("fired_at")?,
                    cancelled_at: maybe("cancelled_at")?,
                })
            })
            .collect()
    }
}
