//! Targeted replay: stored events delivered again to **one** consumer
//! group, selected by position, time, aggregate and event type, at a
//! bounded rate, checkpointed so that a replay cut off (a crash, a
//! SIGKILL, Ctrl-C) resumes where it stopped.
//!
//! The store is the truth; each backend's
//! [`redeliver`](eventsource_core::EventBus::redeliver) is the way in
//! that reaches one group only (the other groups get nothing, the
//! group's live position is untouched). Each copy carries the replay's
//! id ([`REPLAY_ID`]): an [`Inbox`](crate::Inbox) skips a copy of an
//! event it already handled, unless the replay was started to reprocess
//! ([`ReplayOptions::reprocess`]), when it records the copy under the
//! event id and the replay id and hands it to the handler again.
//!
//! ```no_run
//! # async fn run(bus: &dyn eventsource_core::EventBus) -> eventsource_core::Result<()> {
//! use eventsource_store::{ReplayOptions, ReplaySelection, SqlEventStore, StoreConfig, TargetedReplay};
//!
//! let store = SqlEventStore::connect(StoreConfig::new("sqlite://app.db")).await?;
//! let replays = TargetedReplay::new(store);
//! let selection = ReplaySelection::new().aggregate_type("Order").event_type("Placed");
//! println!("{} events would go", replays.count(&selection).await?);
//! let replay = replays
//!     .start("billing", selection, ReplayOptions::new().rate(500))
//!     .await?;
//! let done = replays.run(&replay.id, bus, &|status| eprintln!("{status}")).await?;
//! assert_eq!(done.delivered, done.total);
//! # Ok(()) }
//! ```
//!
//! A replay is a row of `es_replays` (migration 4): its group, selection,
//! options, how many events it selected, how many it delivered and the
//! position of the last one. Each batch is sent, then the row is updated:
//! a crash between the two sends that batch again on resume — at least
//! once, never a selected event missed; with an inbox (reprocessing or
//! not) the repeat is skipped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eventsource_core::{Error, EventBus, EventEnvelope, Result, REPLAY_ID, REPROCESS};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::schema::{db_err, parse_ts, ts};
use crate::store::{envelope_from_row, EVENT_COLUMNS};
use crate::SqlEventStore;

/// Which stored events a targeted replay sends: every condition given
/// must hold (an empty selection is every stored event but process
/// managers' steps, which are never replayed). Built with
/// setters; serializable (it is stored with the replay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySelection {
    /// From this global position on (inclusive).
    pub from_position: Option<u64>,
    /// Up to this global position (inclusive).
    pub to_position: Option<u64>,
    /// Events that occurred at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Events that occurred before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Only this aggregate type.
    pub aggregate_type: Option<String>,
    /// Only these aggregates (any, when empty).
    pub aggregate_ids: Vec<String>,
    /// Only these event types (any, when empty).
    pub event_types: Vec<String>,
}

impl ReplaySelection {
    /// Every stored event.
    pub fn new() -> Self {
        Self::default()
    }

    /// From global position `position` on (inclusive).
    #[must_use]
    pub fn from_position(mut self, position: u64) -> Self {
        self.from_position = Some(position);
        self
    }

    /// Up to global position `position` (inclusive).
    #[must_use]
    pub fn to_position(mut self, position: u64) -> Self {
        self.to_position = Some(position);
        self
    }

    /// Events that occurred at or after `t`.
    #[must_use]
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }

    /// Events that occurred before `t`.
    #[must_use]
    pub fn until(mut self, t: DateTime<Utc>) -> Self {
        self.until = Some(t);
        self
    }

    /// Only aggregates of type `aggregate_type`.
    #[must_use]
    pub fn aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.aggregate_type = Some(aggregate_type.into());
        self
    }

    /// Adds an aggregate to the ones selected.
    #[must_use]
    pub fn aggregate_id(mut self, aggregate_id: impl Into<String>) -> Self {
        self.aggregate_ids.push(aggregate_id.into());
        self
    }

    /// Adds an event type to the ones selected.
    #[must_use]
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// Refuses a selection that can select nothing by construction, with
    /// a typed error naming the fields.
    pub fn validate(&self) -> Result<()> {
        if let (Some(from), Some(to)) = (self.from_position, self.to_position) {
            if from > to {
                return Err(Error::config(format!(
                    "replay selection: from_position {from} is after to_position {to}"
                )));
            }
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err(Error::config(format!(
                    "replay selection: since {since} is not before until {until}"
                )));
            }
        }
        Ok(())
    }

    /// The `WHERE` conditions (after `position > $1`), numbered from
    /// `$2`, and their values.
    fn conditions(&self) -> (String, Vec<Bound>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        let mut push = |sql: &mut String, cond: &str, value: Bound| {
            values.push(value);
            sql.push_str(&cond.replace('?', &format!("${}", values.len() + 1)));
        };
        // A process manager's steps are its own record, not domain
        // events: never delivered again.
        push(
            &mut sql,
            " AND event_type <> ?",
            Bound::Text(crate::schema::STEP_EVENT_TYPE.to_owned()),
        );
        if let Some(p) = self.from_position {
            push(&mut sql, " AND position >= ?", Bound::Int(to_i64(p)));
        }
        if let Some(p) = self.to_position {
            push(&mut sql, " AND position <= ?", Bound::Int(to_i64(p)));
        }
        // Stored as RFC 3339 in UTC with nanoseconds: text order is time order.
        if let Some(t) = self.since {
            push(&mut sql, " AND occurred_at >= ?", Bound::Text(ts(t)));
        }
        if let Some(t) = self.until {
            push(&mut sql, " AND occurred_at < ?", Bound::Text(ts(t)));
        }
        if let Some(t) = &self.aggregate_type {
            push(&mut sql, " AND aggregate_type = ?", Bound::Text(t.clone()));
        }
        for (column, list) in [
            ("aggregate_id", &self.aggregate_ids),
            ("event_type", &self.event_types),
        ] {
            if list.is_empty() {
                continue;
            }
            sql.push_str(&format!(" AND {column} IN ("));
            for (i, v) in list.iter().enumerate() {
                push(
                    &mut sql,
                    if i == 0 { "?" } else { ", ?" },
                    Bound::Text(v.clone()),
                );
            }
            sql.push(')');
        }
        (sql, values)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A value bound to a selection's condition.
enum Bound {
    Int(i64),
    Text(String),
}

/// `sql` (a query over `es_events` with `position > $1` then a
/// selection's conditions) with `after` and the conditions' `values`
/// bound.
fn bound(
    sql: &str,
    after: i64,
    values: Vec<Bound>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    values
        .into_iter()
        .fold(sqlx::query(sql).bind(after), |query, v| match v {
            Bound::Int(i) => query.bind(i),
            Bound::Text(t) => query.bind(t),
        })
}

/// How a targeted replay runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayOptions {
    /// At most this many events per second (`None`: as fast as the
    /// broker takes them).
    pub rate: Option<u32>,
    /// Whether an inbox hands each copy to its handler again
    /// ([`REPROCESS`]) rather than skipping the events it has handled.
    pub reprocess: bool,
    /// Events sent per batch, at most (default 100; with a rate, at most
    /// a twentieth of a second's worth).
    pub batch: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rate: None,
            reprocess: false,
            batch: 100,
        }
    }
}

impl ReplayOptions {
    /// As fast as the broker takes them, batches of 100, the inbox skips.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `per_second` events per second.
    #[must_use]
    pub fn rate(mut self, per_second: u32) -> Self {
        self.rate = Some(per_second);
        self
    }

    /// Whether an inbox handles each copy again.
    #[must_use]
    pub fn reprocess(mut self, reprocess: bool) -> Self {
        self.reprocess = reprocess;
        self
    }

    /// At most `batch` events per batch.
    #[must_use]
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Refuses a rate or batch of 0, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.rate == Some(0) {
            return Err(Error::config(
                "replay options: rate must be at least 1 event per second",
            ));
        }
        if self.batch == 0 {
            return Err(Error::config("replay options: batch must be at least 1"));
        }
        Ok(())
    }

    /// The batch size: [`batch`](Self::batch), and with a rate at most a
    /// twentieth of a second's worth, so the pace is even.
    fn batch_size(&self) -> usize {
        match self.rate {
            Some(rate) => self.batch.min((rate as usize / 20).max(1)),
            None => self.batch,
        }
    }
}

/// A targeted replay as recorded in `es_replays`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplayStatus {
    /// The replay's id (a UUID v7), carried by each copy ([`REPLAY_ID`]).
    pub id: String,
    /// The one consumer group it delivers to.
    pub group: String,
    /// Which events it sends.
    pub selection: ReplaySelection,
    /// How it runs.
    pub options: ReplayOptions,
    /// How many events the selection held when it started.
    pub total: u64,
    /// How many it has delivered.
    pub delivered: u64,
    /// The global position of the last event delivered (0: none yet).
    pub last_position: u64,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// When it delivered its last batch (or started).
    pub updated_at: DateTime<Utc>,
    /// When it finished, if it has.
    pub finished_at: Option<DateTime<Utc>>,
}

impl std::fmt::Display for ReplayStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = if self.total == 0 {
            100.0
        } else {
            self.delivered as f64 * 100.0 / self.total as f64
        };
        write!(
            f,
            "replay {} to group `{}`: {}/{} events ({percent:.0}%)",
            self.id, self.group, self.delivered, self.total
        )?;
        if self.finished_at.is_some() {
            f.write_str(", finished")?;
        }
        Ok(())
    }
}

/// Starts, runs, resumes and lists targeted replays of one store (see
/// the guide, section "Reprocessing").
#[derive(Debug, Clone)]
pub struct TargetedReplay {
    store: SqlEventStore,
}

impl TargetedReplay {
    /// Replays from `store`.
    pub fn new(store: SqlEventStore) -> Self {
        TargetedReplay { store }
    }

    /// How many stored events `selection` holds now (the dry run).
    pub async fn count(&self, selection: &ReplaySelection) -> Result<u64> {
        selection.validate()?;
        let (conditions, values) = selection.conditions();
        let sql = format!("SELECT COUNT(*) FROM es_events WHERE position > $1{conditions}");
        let n: i64 = bound(&sql, 0, values)
            .fetch_one(&self.store.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| db_err(self.store.backend(), "counting the events to replay", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records a new replay of `selection` to `group` (counting what it
    /// selects) without sending anything: [`run`](Self::run) sends.
    pub async fn start(
        &self,
        group: &str,
        selection: ReplaySelection,
        options: ReplayOptions,
    ) -> Result<ReplayStatus> {
        if group.trim().is_empty() {
            return Err(Error::config("replay: the group must not be empty"));
        }
        options.validate()?;
        let total = self.count(&selection).await?;
        let now = Utc::now();
        let status = ReplayStatus {
            id: uuid::Uuid::now_v7().to_string(),
            group: group.to_owned(),
            selection,
            options,
            total,
            delivered: 0,
            last_position: 0,
            started_at: now,
            updated_at: now,
            finished_at: None,
        };
        sqlx::query(
            "INSERT INTO es_replays (id, group_name, selection, options, total, delivered, \
             last_position, started_at, updated_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $6, NULL)",
        )
        .bind(&status.id)
        .bind(&status.group)
        .bind(serde_json::to_string(&status.selection).expect("a selection serializes"))
        .bind(serde_json::to_string(&status.options).expect("options serialize"))
        .bind(to_i64(total))
        .bind(ts(now))
        .execute(&self.store.pool)
        .await
        .map_err(|e| db_err(self.store.backend(), "recording a replay", e))?;
        Ok(status)
    }

    /// The replay `id`, or `None`.
    pub async fn status(&self, id: &str) -> Result<Option<ReplayStatus>> {
        let row = sqlx::query(&format!(
            "SELECT {REPLAY_COLUMNS} FROM es_replays WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(|e| db_err(self.store.backend(), format!("reading replay {id}"), e))?;
        row.map(|r| status_from_row(&r, self.store.backend()))
            .transpose()
    }

    /// Every replay, the newest first.
    pub async fn list(&self) -> Result<Vec<ReplayStatus>> {
        let rows = sqlx::query(&format!(
            "SELECT {REPLAY_COLUMNS} FROM es_replays ORDER BY started_at DESC"
        ))
        .fetch_all(&self.store.pool)
        .await
        .map_err(|e| db_err(self.store.backend(), "listing replays", e))?;
        rows.iter()
            .map(|r| status_from_row(r, self.store.backend()))
            .collect()
    }

    /// Sends replay `id`'s events (those after its checkpoint) to its
    /// group through `bus`, batch by batch at its rate, updating the
    /// checkpoint after each and calling `progress` with it; returns the
    /// finished status. Resumes a replay that was cut off; a finished one
    /// returns at once. Fails, before sending anything, when `bus` has
    /// never seen the group.
    pub async fn run(
        &self,
        id: &str,
        bus: &dyn EventBus,
        progress: &(dyn Fn(&ReplayStatus) + Send + Sync),
    ) -> Result<ReplayStatus> {
        let mut status = self
            .status(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("replay `{id}`")))?;
        if status.finished_at.is_some() {
            return Ok(status);
        }
        if bus.group_stats(&status.group).await?.is_none() {
            return Err(Error::not_found(format!(
                "consumer group `{}` on the {} bus: it has never subscribed there, so a replay \
                 would reach no one (subscribe it first, or check the namespace)",
                status.group,
                bus.backend()
            )));
        }
        let batch = status.options.batch_size();
        let pace = status.options.rate.map(|r| Duration::from_secs(1) / r);
        let started = tokio::time::Instant::now();
        let mut sent: u32 = 0;
        loop {
            let events = self.next_batch(&status, batch).await?;
            let Some(last) = events.last().map(|(p, _)| *p) else {
                break;
            };
            if let Some(pace) = pace {
                // Batch k leaves at k × batch / rate: an even pace from
                // the (re)start, whatever the batches took.
                tokio::time::sleep_until(started + pace * sent).await;
            }
            let copies: Vec<EventEnvelope> = events
                .into_iter()
                .map(|(_, mut e)| {
                    e.metadata.insert(REPLAY_ID.to_owned(), status.id.clone());
                    if status.options.reprocess {
                        e.metadata.insert(REPROCESS.to_owned(), "true".to_owned());
                    }
                    e
                })
                .collect();
            bus.redeliver(&status.group, &copies).await?;
            let n = copies.len() as u64;
            status.delivered += n;
            status.last_position = last;
            status.updated_at = Utc::now();
            self.checkpoint(&status).await?;
            sent = sent.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            progress(&status);
        }
        status.finished_at = Some(Utc::now());
        status.updated_at = Utc::now();
        self.checkpoint(&status).await?;
        tracing::info!(replay = %status.id, group = %status.group, delivered = status.delivered, "targeted replay finished");
        progress(&status);
        Ok(status)
    }

    /// Up to `limit` selected events after the checkpoint, with their
    /// positions, in position order.
    async fn next_batch(
        &self,
        status: &ReplayStatus,
        limit: usize,
    ) -> Result<Vec<(u64, EventEnvelope)>> {
        let (conditions, values) = status.selection.conditions();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM es_events WHERE position > $1{conditions} \
             ORDER BY position LIMIT {limit}"
        );
        let rows = bound(&sql, to_i64(status.last_position), values)
            .fetch_all(&self.store.pool)
            .await
            .map_err(|e| db_err(self.store.backend(), "reading the events to replay", e))?;
        rows.iter()
            .map(|r| envelope_from_row(r, self.store.backend()).map(|r| (r.position, r.envelope)))
            .collect()
    }

    async fn checkpoint(&self, status: &ReplayStatus) -> Result<()> {
        sqlx::query(
            "UPDATE es_replays SET delivered = $1, last_position = $2, updated_at = $3, \
             finished_at = $4 WHERE id = $5",
        )
        .bind(to_i64(status.delivered))
        .bind(to_i64(status.last_position))
        .bind(ts(status.updated_at))
        .bind(status.finished_at.map(ts))
        .bind(&status.id)
        .execute(&self.store.pool)
        .await
        .map_err(|e| {
            db_err(
                self.store.backend(),
                format!("checkpointing replay {}", status.id),
                e,
            )
        })?;
        Ok(())
    }
}

const REPLAY_COLUMNS: &str = "id, group_name, selection, options, total, delivered, \
     last_position, started_at, updated_at, finished_at";

fn status_from_row(row: &sqlx::any::AnyRow, backend: &'static str) -> Result<ReplayStatus> {
    let bad = |column: &str, e: &dyn std::fmt::Display| {
        crate::schema::column_err(backend, "reading a replay row", column, e)
    };
    let text = |name: &str| row.try_get::<String, _>(name).map_err(|e| bad(name, &e));
    let int = |name: &str| {
        row.try_get::<i64, _>(name)
            .map(|v| u64::try_from(v).unwrap_or(0))
            .map_err(|e| bad(name, &e))
    };
    let time = |name: &str, value: String| parse_ts(&value).map_err(|e| bad(name, &e));
    let finished_at = row
        .try_get::<Option<String>, _>("finished_at")
        .map_err(|e| bad("finished_at", &e))?
        .map(|t| time("finished_at", t))
        .transpose()?;
    Ok(ReplayStatus {
        id: text("id")?,
        group: text("group_name")?,
        selection: serde_json::from_str(&text("selection")?).map_err(|e| bad("selection", &e))?,
        options: serde_json::from_str(&text("options")?).map_err(|e| bad("options", &e))?,
        total: int("total")?,
        delivered: int("delivered")?,
        last_position: int("last_position")?,
        started_at: time("started_at", text("started_at")?)?,
        updated_at: time("updated_at", text("updated_at")?)?,
        finished_at,
    })
}
