//! [`SqlEventStore`]: the [`EventStore`] on SQLite or PostgreSQL.

use std::sync::OnceLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventsource_core::{
    check_batch, redact_url, AppendResult, Error, EventEnvelope, EventStore, ExpectedVersion,
    RecordedEvent, Result,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::schema::{self, db_err, ts};
use crate::{Dialect, StoreConfig};

/// An event store on SQLite (embedded) or PostgreSQL (production), chosen by URL.
///
/// Appends run in one transaction per batch (a single event without the
/// outbox: one statement, which is its own transaction): the expected
/// version is checked, every event inserted (a duplicate `event_id`
/// rejects the whole batch), and — when the outbox is enabled — an outbox
/// row written per event, committed together with the events. Appends are serialized
/// (a PostgreSQL advisory lock, SQLite's write lock), so global positions
/// are committed in order and a `read_all` reader never skips an event that
/// commits later with a lower position.
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_core::EventStore;
/// use eventsource_store::{SqlEventStore, StoreConfig};
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let store: Arc<dyn EventStore> =
///     Arc::new(SqlEventStore::connect(StoreConfig::new("sqlite://events.db").validated()?).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqlEventStore {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    pub(crate) config: StoreConfig,
}

impl std::fmt::Debug for SqlEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEventStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) const EVENT_COLUMNS: &str =
    "position, stream, version, event_id, event_type, schema_version, aggregate_type, \
     aggregate_id, occurred_at, correlation_id, causation_id, metadata, payload";

impl SqlEventStore {
    /// Connects (creating a SQLite file if missing) and applies migrations.
    pub async fn connect(config: StoreConfig) -> Result<Self> {
        let dialect = config.validate()?;
        sqlx::any::install_default_drivers();
        let url = match dialect {
            Dialect::Sqlite
                if !config.url.contains("mode=") && !config.url.contains(":memory:") =>
            {
                let sep = if config.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}mode=rwc", config.url)
            }
            _ => config.url.clone(),
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout);
        if dialect == Dialect::Sqlite && config.url.contains(":memory:") {
            // Each SQLite connection to `:memory:` is a database of its own:
            // one connection, kept for the pool's life, is one database.
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        if dialect == Dialect::Sqlite {
            let busy_ms = config.acquire_timeout.as_millis();
            options = options.after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        if dialect == Dialect::Postgres {
            // The pool retries a refused connection until acquire_timeout
            // and then says only "pool timed out": one direct connection
            // first says why (refused, unknown host, auth), at once.
            let probe = tokio::time::timeout(
                config.acquire_timeout,
                <sqlx::AnyConnection as sqlx::Connection>::connect(&url),
            )
            .await;
            let cause = match probe {
                Ok(Ok(conn)) => {
                    let _ = sqlx::Connection::close(conn).await;
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {:?}", config.acquire_timeout)),
            };
            if let Some(cause) = cause {
                return Err(Error::backend(
                    dialect.name(),
                    format!("connecting to {}", redact_url(&config.url)),
                    cause,
                ));
            }
        }
        let pool = options.connect(&url).await.map_err(|e| {
            db_err(
                dialect.name(),
                format!("connecting to {}", redact_url(&config.url)),
                e,
            )
        })?;
        crate::durability::check(&pool, dialect, &config).await?;
        schema::migrate(&pool, dialect).await?;
        Ok(SqlEventStore {
            pool,
            dialect,
            config,
        })
    }

    /// The database kind.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The connection pool (for projections that share the database).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// How many stored events there are of each aggregate type, event
    /// type and schema version: what `eventsource schema check` compares
    /// with the application's
    /// [`SchemaManifest`](eventsource_core::manifest::SchemaManifest).
    /// Process managers' steps are left out: they are the store's own
    /// record, not the application's event types.
    pub async fn event_census(&self) -> Result<Vec<eventsource_core::manifest::Census>> {
        let rows = sqlx::query(
            "SELECT aggregate_type, event_type, CAST(schema_version AS BIGINT) AS version, \
             CAST(COUNT(*) AS BIGINT) AS n FROM es_events WHERE event_type <> $1 \
             GROUP BY aggregate_type, event_type, schema_version \
             ORDER BY aggregate_type, event_type, schema_version",
        )
        .bind(crate::schema::STEP_EVENT_TYPE)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(self.backend(), "counting events by type and version", e))?;
        rows.iter()
            .map(|r| {
                let get = |e| db_err(self.backend(), "reading the event census", e);
                let aggregate_type: String = r.try_get("aggregate_type").map_err(get)?;
                let event_type: String = r.try_get("event_type").map_err(get)?;
                let version: i64 = r.try_get("version").map_err(get)?;
                let n: i64 = r.try_get("n").map_err(get)?;
                Ok(eventsource_core::manifest::Census::new(
                    &aggregate_type,
                    &event_type,
                    u32::try_from(version).unwrap_or(u32::MAX),
                    u64::try_from(n).unwrap_or(0),
                    eventsource_core::manifest::Found::Stored,
                ))
            })
            .collect()
    }

    pub(crate) fn backend(&self) -> &'static str {
        self.dialect.name()
    }

    /// Starts a write transaction: `BEGIN IMMEDIATE` on SQLite, so the
    /// write lock is taken up front instead of failing on upgrade.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        };
        tx.map_err(|e| db_err(self.backend(), "starting a transaction", e))
    }

    /// The ids of `chunk` already stored, for the error (or all of them if
    /// that read fails). PostgreSQL has aborted `tx`: read on another
    /// connection. SQLite undid only the statement: read in `tx` (an
    /// in-memory database has one connection, which `tx` holds). Without
    /// a `tx` (a lone statement failed), read on the pool.
    async fn already_stored(
        &self,
        mut tx: Option<&mut Transaction<'static, Any>>,
        chunk: &[EventEnvelope],
    ) -> String {
        let mut found = Vec::new();
        for e in chunk {
            let id = e.event_id.to_string();
            let query = sqlx::query_scalar("SELECT event_id FROM es_events WHERE event_id = $1")
                .bind(id.clone());
            let stored: std::result::Result<Option<String>, _> = match (self.dialect, &mut tx) {
                (Dialect::Sqlite, Some(tx)) => query.fetch_optional(&mut ***tx).await,
                _ => query.fetch_optional(&self.pool).await,
            };
            match stored {
                Ok(Some(_)) => found.push(id),
                Ok(None) => {}
                Err(_) => {
                    return chunk
                        .iter()
                        .map(|e| e.event_id.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                }
            }
        }
        found.join(", ")
    }

    /// Starts an append's transaction: [`begin_write`](Self::begin_write),
    /// and on PostgreSQL the append lock taken in the same round trip.
    pub(crate) async fn begin_append(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => {
                self.pool
                    .begin_with(format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({APPEND_LOCK})"
                    ))
                    .await
            }
        };
        tx.map_err(|e| db_err(self.backend(), "starting an append", e))
    }

    /// The version of `stream`: read in `tx`, or on another connection
    /// when there is none or PostgreSQL has aborted it (`aborted`, after
    /// a failed insert).
    async fn version_of(
        &self,
        tx: Option<&mut Transaction<'static, Any>>,
        stream: &str,
        aborted: bool,
    ) -> Result<u64> {
        let query =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM es_events WHERE stream = $1")
                .bind(stream);
        let current: i64 = match tx {
            Some(tx) if !(aborted && self.dialect == Dialect::Postgres) => {
                query.fetch_one(&mut **tx).await
            }
            _ => query.fetch_one(&self.pool).await,
        }
        .map_err(|e| {
            db_err(
                self.backend(),
                format!("reading the version of `{stream}`"),
                e,
            )
        })?;
        Ok(u64::try_from(current).unwrap_or(0))
    }

    /// Appends inside `tx`, which holds the append lock ([`begin_append`](Self::begin_append)),
    /// with outbox rows for the events when `outbox`.
    ///
    /// A single event says which version it follows (its version minus
    /// one). When that agrees with `expected`, the version is not read
    /// first: the insert itself checks it — the row goes in only if the
    /// stream's event at that version exists, and the unique (stream,
    /// version) key refuses it if a later one does. Only a conflict reads
    /// the version, to report it. One statement instead of two is what a
    /// one-event append costs most; a batch reads the version first (the
    /// guarded form of a multi-row insert is slower on SQLite than the
    /// read it saves).
    pub(crate) async fn append_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
        outbox: bool,
    ) -> Result<AppendResult> {
        let follows = follows(events);
        if !guarded(stream, expected, events) {
            let current = self.version_of(Some(tx), stream, false).await?;
            expected.check(stream, current)?;
            check_batch(stream, current, events)?;
            if events.is_empty() {
                return Ok(AppendResult {
                    version: current,
                    last_position: 0,
                });
            }
        }
        match self
            .insert_after(tx, stream, follows, events, outbox)
            .await?
        {
            Some(last_position) => Ok(AppendResult {
                version: follows + events.len() as u64,
                last_position,
            }),
            None => Err(self.conflict(Some(tx), stream, expected, events).await),
        }
    }

    /// The error of an append of `events` that inserted nothing: the
    /// stream was not where they follow. Reads the version (in `tx`, or on
    /// the pool) to say where it is.
    async fn conflict(
        &self,
        tx: Option<&mut Transaction<'static, Any>>,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Error {
        let current = match self.version_of(tx, stream, true).await {
            Ok(current) => current,
            Err(e) => return e,
        };
        if let Err(e) = expected
            .check(stream, current)
            .and_then(|()| check_batch(stream, current, events))
        {
            return e;
        }
        // Moved between the insert and the read: still a conflict.
        Error::Concurrency {
            stream: stream.to_owned(),
            expected: expected.to_string(),
            actual: current,
        }
    }

    /// Appends one event with one statement and no explicit transaction
    /// (a statement is atomic on its own): on PostgreSQL the append lock
    /// is taken inside it, before its position is drawn, and held until
    /// it commits; on SQLite the statement holds the write lock. The
    /// insert checks the version itself as [`append_in`](Self::append_in)'s
    /// does. Three round trips (begin, insert, commit) become one.
    async fn append_alone(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        event: &EventEnvelope,
    ) -> Result<AppendResult> {
        let events = std::slice::from_ref(event);
        let follows = follows(events);
        let guard = (follows > 0).then_some(follows);
        let sql = insert_alone_sql(self.dialect, guard.is_some());
        let inserted = bind_events(sql, events, stream, guard)?
            .fetch_optional(&self.pool)
            .await
            .and_then(|row| row.as_ref().map(returned_position).transpose());
        match inserted {
            Ok(position) => match position {
                Some(position) => Ok(AppendResult {
                    version: event.aggregate_version,
                    last_position: u64::try_from(position).unwrap_or(0),
                }),
                None => Err(self.conflict(None, stream, expected, events).await),
            },
            Err(sqlx::Error::Database(db))
                if db.is_unique_violation() && db.message().contains("event_id") =>
            {
                Err(Error::DuplicateEvent {
                    stream: stream.to_owned(),
                    event_id: self.already_stored(None, events).await,
                })
            }
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(self.conflict(None, stream, expected, events).await)
            }
            Err(err) => Err(db_err(
                self.backend(),
                format!("appending to `{stream}`"),
                err,
            )),
        }
    }

    /// Inserts `events` (consistent: versions `follows + 1, …`, ids
    /// distinct) and, when `outbox`, their outbox rows. The last position, or `None` when
    /// the stream is not at `follows` (a concurrency conflict). A batch of
    /// one checks that in its insert; a longer one was checked before.
    async fn insert_after(
        &self,
        tx: &mut Transaction<'static, Any>,
        stream: &str,
        follows: u64,
        events: &[EventEnvelope],
        outbox: bool,
    ) -> Result<Option<u64>> {
        let backend = self.backend();
        let mut last_position: i64 = 0;
        // Multi-row inserts: one statement per ROWS_PER_INSERT events (12
        // parameters each, well under either database's limit).
        for chunk in events.chunks(ROWS_PER_INSERT) {
            // A lone event of a stream that exists checks the version.
            let guard = (events.len() == 1 && follows > 0).then_some(follows);
            let inserted = if guard.is_none()
                && self.dialect == Dialect::Sqlite
                && chunk.len() > RETURNED_ROWS_MAX
            {
                let insert =
                    bind_events(insert_events_plain_sql(chunk.len()), chunk, stream, None)?;
                insert_plain(tx, insert).await
            } else {
                insert_events(chunk, stream, guard)?
                    .fetch_all(&mut **tx)
                    .await
                    .and_then(|rows| rows.iter().map(returned_position).collect())
            };
            let positions: Vec<i64> = match inserted {
                Ok(positions) if positions.is_empty() => return Ok(None),
                Ok(positions) => positions,
                Err(sqlx::Error::Database(db))
                    if db.is_unique_violation() && db.message().contains("event_id") =>
                {
                    return Err(Error::DuplicateEvent {
                        stream: stream.to_owned(),
                        event_id: self.already_stored(Some(tx), chunk).await,
                    });
                }
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(None),
                Err(err) => return Err(db_err(backend, format!("appending to `{stream}`"), err)),
            };
            last_position = last_position.max(positions.into_iter().max().unwrap_or(0));
            if outbox {
                self.write_outbox(tx, chunk).await?;
            }
        }
        Ok(Some(u64::try_from(last_position).unwrap_or(0)))
    }

    /// Writes outbox rows for `events` (at most [`ROWS_PER_INSERT`] of
    /// them) in `tx`: the relay publishes them once `tx` commits.
    pub(crate) async fn write_outbox(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[EventEnvelope],
    ) -> Result<()> {
        let now = ts(Utc::now());
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let mut query = sqlx::query(insert_outbox_sql(chunk.len()));
            for e in chunk {
                query = query
                    .bind(e.event_id.to_string())
                    .bind(serde_json::to_string(e).expect("an envelope serializes"))
                    .bind(now.clone());
            }
            query
                .execute(&mut **tx)
                .await
                .map_err(|err| db_err(self.backend(), "writing the outbox", err))?;
        }
        Ok(())
    }
}

/// The version the first of `events` follows (its version minus one).
fn follows(events: &[EventEnvelope]) -> u64 {
    events
        .first()
        .map_or(0, |e| e.aggregate_version.saturating_sub(1))
}

/// Whether `events` are one event whose insert can check the version
/// itself: the version it follows agrees with `expected`.
fn guarded(stream: &str, expected: ExpectedVersion, events: &[EventEnvelope]) -> bool {
    let follows = follows(events);
    events.len() == 1
        && expected.check(stream, follows).is_ok()
        && check_batch(stream, follows, events).is_ok()
}

/// The PostgreSQL advisory lock that serializes appends, so positions are
/// committed in order.
const APPEND_LOCK: i64 = 7_426_001;

/// SQLite: chunks of more rows than this are inserted without
/// `RETURNING` and their last position read after (one more statement);
/// returning a few rows costs less than that statement (batch of 10:
/// 0.75–0.88 of raw with `RETURNING`, 0.71 without; batch of 100: 0.66
/// with, 0.96–1.02 without).
const RETURNED_ROWS_MAX: usize = 16;

/// Events per multi-row insert (12 parameters each, well under either
/// database's limit).
const ROWS_PER_INSERT: usize = 64;

/// `INSERT INTO {table} ({columns}) VALUES ($1, ...), (...){suffix}` for
/// 1 to `ROWS_PER_INSERT` rows, written once per process.
fn multi_row_sql(
    cache: &'static OnceLock<Vec<String>>,
    head: &str,
    columns: usize,
    suffix: impl Fn(usize) -> String,
    rows: usize,
) -> &'static str {
    let all = cache.get_or_init(|| {
        (1..=ROWS_PER_INSERT)
            .map(|n| {
                let values: Vec<String> = (0..n)
                    .map(|r| {
                        let row: Vec<String> = (1..=columns)
                            .map(|c| format!("${}", r * columns + c))
                            .collect();
                        format!("({})", row.join(", "))
                    })
                    .collect();
                format!("{head}VALUES {}{}", values.join(", "), suffix(n))
            })
            .collect()
    });
    &all[rows - 1]
}

const INSERT_EVENTS: &str = "INSERT INTO es_events (stream, version, event_id, event_type, \
     schema_version, aggregate_type, aggregate_id, occurred_at, correlation_id, causation_id, \
     metadata, payload) ";

fn insert_events_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    multi_row_sql(
        &SQL,
        INSERT_EVENTS,
        12,
        |_| " RETURNING position".into(),
        rows,
    )
}

/// [`insert_events_sql`] without `RETURNING`, for SQLite, where the last
/// row's position is the connection's last insert rowid: sqlx's `Any`
/// driver returning 64 rows per statement made a batch of 100 cost 1.5x
/// the same inserts without them.
fn insert_events_plain_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    multi_row_sql(&SQL, INSERT_EVENTS, 12, |_| String::new(), rows)
}

/// [`insert_events_sql`] inserting nothing unless `$1`'s event at version
/// `$last` (one past the rows' parameters) exists.
fn insert_events_after_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    multi_row_sql(
        &SQL,
        &format!("{INSERT_EVENTS}SELECT * FROM ("),
        12,
        |n| {
            format!(
                ") AS v WHERE EXISTS (SELECT 1 FROM es_events WHERE stream = $1 AND version = ${}) \
                 RETURNING position",
                n * 12 + 1
            )
        },
        rows,
    )
}

/// The one-statement append of one event: its parameters selected
/// directly (no `VALUES` subquery to materialize), with `guarded` only if
/// `$1`'s event at version `$13` exists. On PostgreSQL the append lock is
/// taken in a materialized CTE the row is selected from, so it is held
/// before the row's position is drawn (and until the statement commits);
/// SQLite's statement holds the write lock.
fn insert_alone_sql(dialect: Dialect, guarded: bool) -> &'static str {
    static SQL: OnceLock<[String; 4]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let values: Vec<String> = (1..=12).map(|c| format!("${c}")).collect();
        let select = format!("{INSERT_EVENTS}SELECT {}", values.join(", "));
        let locked = format!(
            "WITH append_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({APPEND_LOCK})) \
             {select} FROM append_lock"
        );
        let guard = " WHERE EXISTS (SELECT 1 FROM es_events WHERE stream = $1 AND version = $13)";
        [
            format!("{locked} RETURNING position"),
            format!("{locked}{guard} RETURNING position"),
            format!("{select} RETURNING position"),
            format!("{select}{guard} RETURNING position"),
        ]
    });
    let dialect = match dialect {
        Dialect::Postgres => 0,
        Dialect::Sqlite => 2,
    };
    &all[dialect + usize::from(guarded)]
}

fn insert_outbox_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    multi_row_sql(
        &SQL,
        "INSERT INTO es_outbox (event_id, envelope, created_at) ",
        3,
        |_| String::new(),
        rows,
    )
}

/// The insert of `chunk` into `stream`, bound; with `after`, only if the
/// stream's event at that version exists.
fn insert_events<'q>(
    chunk: &'q [EventEnvelope],
    stream: &'q str,
    after: Option<u64>,
) -> Result<sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>> {
    let sql = match after {
        Some(_) => insert_events_after_sql(chunk.len()),
        None => insert_events_sql(chunk.len()),
    };
    bind_events(sql, chunk, stream, after)
}

/// SQLite: runs `insert` (rows without `RETURNING`) in `tx` and reads
/// the last row's position (the connection's last insert rowid) after
/// it; nothing when it inserted nothing.
async fn insert_plain<'q>(
    tx: &mut Transaction<'static, Any>,
    insert: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
) -> std::result::Result<Vec<i64>, sqlx::Error> {
    if insert.execute(&mut **tx).await?.rows_affected() == 0 {
        return Ok(Vec::new());
    }
    let last: i64 = sqlx::query_scalar("SELECT last_insert_rowid()")
        .fetch_one(&mut **tx)
        .await?;
    Ok(vec![last])
}

/// The position a `RETURNING position` row holds.
fn returned_position(row: &AnyRow) -> std::result::Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(0)
}

/// `sql` (an insert of `chunk`'s rows, with `after` as its last parameter
/// when given) bound.
fn bind_events<'q>(
    sql: &'static str,
    chunk: &'q [EventEnvelope],
    stream: &'q str,
    after: Option<u64>,
) -> Result<sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>> {
    let version = |v: u64| {
        i64::try_from(v).map_err(|_| Error::config(format!("aggregate version {v} is too large")))
    };
    let mut query = sqlx::query(sql);
    for e in chunk {
        query = query
            .bind(stream)
            .bind(version(e.aggregate_version)?)
            .bind(e.event_id.to_string())
            .bind(&e.event_type)
            .bind(i64::from(e.schema_version))
            .bind(&e.aggregate_type)
            .bind(&e.aggregate_id)
            .bind(ts(e.occurred_at))
            .bind(e.correlation_id.clone())
            .bind(e.causation_id.clone())
            .bind(serde_json::to_string(&e.metadata).expect("a string map serializes"))
            .bind(e.payload.to_string());
    }
    if let Some(after) = after {
        query = query.bind(version(after)?);
    }
    Ok(query)
}

pub(crate) fn envelope_from_row(row: &AnyRow, backend: &'static str) -> Result<RecordedEvent> {
    let bad = |column: &str, e: &dyn std::fmt::Display| {
        crate::schema::column_err(backend, "reading an event row", column, e)
    };
    let get_s = |name: &str| row.try_get::<String, _>(name).map_err(|e| bad(name, &e));
    let get_i = |name: &str| row.try_get::<i64, _>(name).map_err(|e| bad(name, &e));
    let occurred_at = DateTime::parse_from_rfc3339(&get_s("occurred_at")?)
        .map_err(|e| bad("occurred_at", &e))?
        .with_timezone(&Utc);
    let envelope = EventEnvelope {
        event_id: get_s("event_id")?
            .parse()
            .map_err(|e| bad("event_id", &e))?,
        event_type: get_s("event_type")?,
        schema_version: u32::try_from(get_i("schema_version")?)
            .map_err(|e| bad("schema_version", &e))?,
        aggregate_type: get_s("aggregate_type")?,
        aggregate_id: get_s("aggregate_id")?,
        aggregate_version: u64::try_from(get_i("version")?).map_err(|e| bad("version", &e))?,
        occurred_at,
        correlation_id: row
            .try_get::<Option<String>, _>("correlation_id")
            .map_err(|e| bad("correlation_id", &e))?,
        causation_id: row
            .try_get::<Option<String>, _>("causation_id")
            .map_err(|e| bad("causation_id", &e))?,
        metadata: serde_json::from_str(&get_s("metadata")?).map_err(|e| bad("metadata", &e))?,
        payload: serde_json::from_str(&get_s("payload")?).map_err(|e| bad("payload", &e))?,
    };
    Ok(RecordedEvent {
        position: u64::try_from(get_i("position")?).map_err(|e| bad("position", &e))?,
        stream: get_s("stream")?,
        envelope,
    })
}

#[async_trait]
impl EventStore for SqlEventStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<AppendResult> {
        if let ([event], false) = (events, self.config.outbox) {
            if guarded(stream, expected, events) {
                return self.append_alone(stream, expected, event).await;
            }
        }
        let mut tx = self.begin_append().await?;
        let result = self
            .append_in(&mut tx, stream, expected, events, self.config.outbox)
            .await?;
        tx.commit().await.map_err(|e| {
            db_err(
                self.backend(),
                format!("committing the append to `{stream}`"),
                e,
            )
        })?;
        Ok(result)
    }

    async fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<EventEnvelope>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM es_events WHERE stream = $1 AND version >= $2 ORDER BY version"
        ))
        .bind(stream)
        .bind(i64::try_from(from_version).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(self.backend(), format!("reading `{stream}`"), e))?;
        rows.iter()
            .map(|r| envelope_from_row(r, self.backend()).map(|r| r.envelope))
            .collect()
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM es_events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(i64::try_from(after_position).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(self.backend(), "reading all streams", e))?;
        rows.iter()
            .map(|r| envelope_from_row(r, self.backend()))
            .collect()
    }
}
