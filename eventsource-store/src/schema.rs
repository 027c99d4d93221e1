//! Embedded migrations, one list per dialect, applied in order at connect,
//! and how values are written into the schema (the bottom of the crate).

use chrono::{DateTime, SecondsFormat, Utc};
use eventsource_core::{Error, Result};
use sqlx::AnyPool;

use crate::Dialect;

/// The event type of a step in a process manager's stream
/// (`ProcessRunner`): the store's own record, left out of targeted
/// replays and of the schema census.
pub const STEP_EVENT_TYPE: &str = "ProcessStep";

/// Maps a sqlx error into the core error, naming the database and the operation.
pub(crate) fn db_err(backend: &'static str, context: impl Into<String>, e: sqlx::Error) -> Error {
    Error::backend(backend, context, e)
}

/// Timestamps are stored as RFC 3339 text in UTC with nanoseconds, so an
/// envelope reads back exactly as it was appended.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The error of a row's column that does not read as its type: what was
/// being read, the column, and why.
pub(crate) fn column_err(
    backend: &'static str,
    reading: &str,
    column: &str,
    e: &dyn std::fmt::Display,
) -> Error {
    Error::backend(backend, reading, format!("column `{column}`: {e}"))
}

/// A timestamp written by [`ts`], read back.
pub(crate) fn parse_ts(text: &str) -> std::result::Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// Migration 1, with `{SERIAL}` (an auto-increment primary key) and
/// `{INT64}` filled in per dialect.
const V1: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS es_events (
        position {SERIAL},
        stream TEXT NOT NULL,
        version {INT64} NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        correlation_id TEXT,
        causation_id TEXT,
        metadata TEXT NOT NULL,
        payload TEXT NOT NULL,
        UNIQUE (stream, version))",
    "CREATE TABLE IF NOT EXISTS es_outbox (
        id {SERIAL},
        event_id TEXT NOT NULL,
        envelope TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT)",
    "CREATE INDEX IF NOT EXISTS es_outbox_unsent ON es_outbox (id) WHERE sent_at IS NULL",
    "CREATE TABLE IF NOT EXISTS es_snapshots (
        stream TEXT PRIMARY KEY,
        version {INT64} NOT NULL,
        schema_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        taken_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS es_checkpoints (
        name TEXT PRIMARY KEY,
        position {INT64} NOT NULL,
        updated_at TEXT NOT NULL)",
];

/// Migration 2: the idempotent inbox (`Inbox`).
const V2: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS es_inbox (
        group_name TEXT NOT NULL,
        event_id TEXT NOT NULL,
        handled_at TEXT NOT NULL,
        PRIMARY KEY (group_name, event_id))",
    "CREATE INDEX IF NOT EXISTS es_inbox_handled_at ON es_inbox (handled_at)",
];

/// Migration 3: data subjects' keys (`SqlKeyStore`); the key is NULL once
/// the subject is forgotten.
const V3: [&str; 1] = ["CREATE TABLE IF NOT EXISTS es_subject_keys (
        subject TEXT PRIMARY KEY,
        key_material TEXT,
        created_at TEXT NOT NULL,
        forgotten_at TEXT)"];

/// Migration 4: targeted replays and their checkpoints (`TargetedReplay`).
const V4: [&str; 1] = ["CREATE TABLE IF NOT EXISTS es_replays (
        id TEXT PRIMARY KEY,
        group_name TEXT NOT NULL,
        selection TEXT NOT NULL,
        options TEXT NOT NULL,
        total {INT64} NOT NULL,
        delivered {INT64} NOT NULL,
        last_position {INT64} NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT)"];

/// Migration 5: process managers' timeouts (`ProcessRunner`,
/// `TimeoutScheduler`). A timeout is pending while neither fired nor
/// cancelled; the partial index keeps the scheduler's poll to the pending.
const V5: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS es_timeouts (
        id TEXT PRIMARY KEY,
        process TEXT NOT NULL,
        instance TEXT NOT NULL,
        name TEXT NOT NULL,
        group_name TEXT NOT NULL,
        due_at TEXT NOT NULL,
        scheduled_at TEXT NOT NULL,
        fired_at TEXT,
        cancelled_at TEXT)",
    "CREATE INDEX IF NOT EXISTS es_timeouts_due ON es_timeouts (due_at) \
        WHERE fired_at IS NULL AND cancelled_at IS NULL",
    "CREATE INDEX IF NOT EXISTS es_timeouts_instance ON es_timeouts (process, instance, name)",
];

/// `(version, statements)`; append new versions, never edit old ones.
fn migrations(dialect: Dialect) -> Vec<(i64, Vec<String>)> {
    let (serial, int64) = match dialect {
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT"),
        Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER"),
    };
    let fill = |sql: &str| sql.replace("{SERIAL}", serial).replace("{INT64}", int64);
    vec![
        (1, V1.iter().map(|s| fill(s)).collect()),
        (2, V2.iter().map(|s| fill(s)).collect()),
        (3, V3.iter().map(|s| fill(s)).collect()),
        (4, V4.iter().map(|s| fill(s)).collect()),
        (5, V5.iter().map(|s| fill(s)).collect()),
    ]
}

/// Applies the migrations not yet applied, each in its own transaction.
pub(crate) async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<()> {
    let backend = dialect.name();
    sqlx::query("CREATE TABLE IF NOT EXISTS es_schema_version (version BIGINT PRIMARY KEY)")
        .execute(pool)
        .await
        .map_err(|e| db_err(backend, "creating es_schema_version", e))?;
    for (version, statements) in migrations(dialect) {
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| db_err(backend, "starting a migration", e))?;
        if dialect == Dialect::Postgres {
            // Two processes migrating at once take turns.
            sqlx::query("SELECT pg_advisory_xact_lock(7426000)")
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err(backend, "locking for migration", e))?;
        }
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM es_schema_version WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_err(backend, "reading es_schema_version", e))?;
        if applied.is_some() {
            continue;
        }
        for statement in &statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err(backend, format!("applying migration {version}"), e))?;
        }
        sqlx::query("INSERT INTO es_schema_version (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err(backend, "recording migration", e))?;
        tx.commit()
            .await
            .map_err(|e| db_err(backend, "committing migration", e))?;
        tracing::info!(version, backend, "applied event store migration");
    }
    Ok(())
}
