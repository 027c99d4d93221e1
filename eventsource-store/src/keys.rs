//! [`SqlKeyStore`]: data subjects' keys in SQLite or PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventsource_core::personal::{KeyStore, SubjectKey, SubjectStatus};
use eventsource_core::{Error, Result};
use sqlx::Row;

use crate::schema::{db_err, parse_ts, ts};
use crate::{Dialect, SqlEventStore};

/// The [`KeyStore`] on the store's database: the table `es_subject_keys`
/// (subject, key, when made, when forgotten), created by the migrations.
///
/// Give it the event store's database, or a database of its own (connect
/// a [`SqlEventStore`] to it: the migrations make the table) when keys
/// must live apart from events — in another place, another backup.
///
/// Forgetting sets the key to NULL and records when. What the databases
/// keep of the old value is scrubbed as far as they allow: SQLite
/// overwrites the freed bytes (`secure_delete` for that statement) and
/// empties its write-ahead log (`wal_checkpoint(TRUNCATE)`, logged when a
/// reader holds it);
/// PostgreSQL's old row version is vacuumed at once, but its write-ahead
/// log and any backup taken before keep the key until they are recycled:
/// keep key backups short-lived.
///
/// ```no_run
/// use std::sync::Arc;
/// use eventsource_core::personal::Shredder;
/// use eventsource_store::{SqlEventStore, SqlKeyStore, StoreConfig};
///
/// # async fn run() -> eventsource_core::Result<()> {
/// let store = SqlEventStore::connect(StoreConfig::new("sqlite://events.db").validated()?).await?;
/// let shredder = Arc::new(Shredder::new(Arc::new(SqlKeyStore::new(&store))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqlKeyStore {
    store: SqlEventStore,
}

impl SqlKeyStore {
    /// Keys in `store`'s database.
    pub fn new(store: &SqlEventStore) -> Self {
        SqlKeyStore {
            store: store.clone(),
        }
    }

    /// Every subject the table knows, with its status, in subject order:
    /// for `eventsource subjects`.
    pub async fn subjects(&self) -> Result<Vec<(String, SubjectStatus)>> {
        let rows = sqlx::query(
            "SELECT subject, key_material IS NULL AS gone, created_at, forgotten_at \
             FROM es_subject_keys ORDER BY subject",
        )
        .fetch_all(&self.store.pool)
        .await
        .map_err(|e| self.err("listing subjects", e))?;
        rows.iter()
            .map(|row| {
                let subject: String = row.try_get("subject").map_err(|e| self.err("reading", e))?;
                Ok((subject, self.status_of(row)?))
            })
            .collect()
    }

    fn err(&self, context: &str, e: sqlx::Error) -> Error {
        db_err(self.store.backend(), format!("subject keys: {context}"), e)
    }

    fn status_of(&self, row: &sqlx::any::AnyRow) -> Result<SubjectStatus> {
        let at = |column: &str| -> Result<Option<DateTime<Utc>>> {
            let text: Option<String> = row.try_get(column).map_err(|e| self.err("reading", e))?;
            text.map(|t| {
                parse_ts(&t)
                    .map_err(|e| Error::backend(self.store.backend(), "subject keys: a time", e))
            })
            .transpose()
        };
        Ok(match (at("forgotten_at")?, at("created_at")?) {
            (Some(at), _) => SubjectStatus::Forgotten { at },
            (None, Some(since)) => SubjectStatus::Remembered { since },
            (None, None) => SubjectStatus::Unknown,
        })
    }

    async fn row(&self, subject: &str) -> Result<Option<(Option<String>, SubjectStatus)>> {
        let row = sqlx::query(
            "SELECT key_material, created_at, forgotten_at FROM es_subject_keys WHERE subject = $1",
        )
        .bind(subject)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(|e| self.err("reading a key", e))?;
        let Some(row) = row else { return Ok(None) };
        let key: Option<String> = row
            .try_get("key_material")
            .map_err(|e| self.err("reading a key", e))?;
        Ok(Some((key, self.status_of(&row)?)))
    }
}

#[async_trait]
impl KeyStore for SqlKeyStore {
    async fn get_or_create(&self, subject: &str) -> Result<Option<SubjectKey>> {
        if let Some((key, _)) = self.row(subject).await? {
            return key.as_deref().map(SubjectKey::from_base64).transpose();
        }
        // Two writers racing: the first insert wins, both read its key.
        sqlx::query(
            "INSERT INTO es_subject_keys (subject, key_material, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(subject)
        .bind(SubjectKey::generate().to_base64())
        .bind(ts(Utc::now()))
        .execute(&self.store.pool)
        .await
        .map_err(|e| self.err("making a key", e))?;
        match self.row(subject).await? {
            Some((key, _)) => key.as_deref().map(SubjectKey::from_base64).transpose(),
            None => Err(Error::backend(
                self.store.backend(),
                "subject keys",
                "a key just made is not there",
            )),
        }
    }

    async fn get(&self, subject: &str) -> Result<Option<SubjectKey>> {
        match self.row(subject).await? {
            Some((Some(key), _)) => SubjectKey::from_base64(&key).map(Some),
            _ => Ok(None),
        }
    }

    async fn forget(&self, subject: &str) -> Result<DateTime<Utc>> {
        let now = ts(Utc::now());
        let statement =
            "INSERT INTO es_subject_keys (subject, key_material, created_at, forgotten_at) \
             VALUES ($1, NULL, $2, $2) ON CONFLICT (subject) DO UPDATE SET key_material = NULL, \
             forgotten_at = COALESCE(es_subject_keys.forgotten_at, excluded.forgotten_at)";
        let mut conn = self
            .store
            .pool
            .acquire()
            .await
            .map_err(|e| self.err("forgetting", e))?;
        if self.store.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA secure_delete = ON")
                .execute(&mut *conn)
                .await
                .map_err(|e| self.err("forgetting", e))?;
        }
        let done = sqlx::query(statement)
            .bind(subject)
            .bind(&now)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.err("forgetting", e));
        if self.store.dialect == Dialect::Sqlite {
            // The connection goes back to the pool as it came.
            let _ = sqlx::query("PRAGMA secure_delete = OFF")
                .execute(&mut *conn)
                .await;
        }
        done?;
        if self.store.dialect == Dialect::Sqlite {
            // The write-ahead log still holds the page with the key:
            // copy the scrubbed page into the file and empty the log.
            let busy: Option<i64> = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| self.err("checkpointing after forgetting", e))?;
            if busy.unwrap_or(0) != 0 {
                tracing::warn!(subject, "subject keys: a reader kept the write-ahead log from being emptied; the old key stays in it until the next checkpoint");
            }
        }
        drop(conn);
        if self.store.dialect == Dialect::Postgres {
            if let Err(e) = sqlx::query("VACUUM es_subject_keys")
                .execute(&self.store.pool)
                .await
            {
                tracing::warn!(error = %e, "subject keys: VACUUM after forgetting failed; the old key stays on disk until autovacuum");
            }
        }
        match self.row(subject).await? {
            Some((_, SubjectStatus::Forgotten { at })) => Ok(at),
            _ => Err(Error::backend(
                self.store.backend(),
                "subject keys",
                "a subject just forgotten is not recorded as forgotten",
            )),
        }
    }

    async fn status(&self, subject: &str) -> Result<SubjectStatus> {
        Ok(self
            .row(subject)
            .await?
            .map_or(SubjectStatus::Unknown, |(_, status)| status))
    }
}
