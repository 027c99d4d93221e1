//! Snapshots: load an aggregate from its latest snapshot plus the events
//! after it, and take a new snapshot every N events.

use chrono::Utc;
use eventsource_core::personal::SealedValue;
use eventsource_core::{
    Aggregate, AggregateRoot, DomainEvent, Error, EventEnvelope, EventStore, Repository, Result,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::schema::{db_err, ts};

/// The key of a snapshot sealed for data subjects: `{"es_sealed": …}`.
const SEALED: &str = "es_sealed";
use crate::SqlEventStore;

/// When to snapshot, and which snapshots are still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPolicy {
    every: u64,
    schema_version: u32,
}

impl SnapshotPolicy {
    /// A snapshot each time the version crosses a multiple of `every`.
    /// `schema_version` tags the state's shape: bump it when the aggregate's
    /// state changes, and older snapshots are ignored (the aggregate is
    /// rebuilt from its events and snapshotted anew).
    pub fn every(every: u64, schema_version: u32) -> Result<Self> {
        if every == 0 {
            return Err(Error::config("snapshot policy: `every` must be at least 1"));
        }
        Ok(SnapshotPolicy {
            every,
            schema_version,
        })
    }
}

/// A [`Repository`] that keeps snapshots in the SQL store.
///
/// `load` reads the latest snapshot (if its schema version is current)
/// and replays only the events after it; `save` saves through the inner
/// repository (so auto-publish and the outbox work as usual), then takes a
/// snapshot when the policy says so. A snapshot that fails to write is
/// logged, never fails the save: the events are the truth.
pub struct SnapshotRepository<A: Aggregate> {
    repo: Repository<A>,
    store: SqlEventStore,
    policy: SnapshotPolicy,
}

impl<A> SnapshotRepository<A>
where
    A: Aggregate + Serialize + DeserializeOwned,
{
    /// Wraps `repo`, keeping snapshots in `store` per `policy`.
    pub fn new(repo: Repository<A>, store: SqlEventStore, policy: SnapshotPolicy) -> Self {
        SnapshotRepository {
            repo,
            store,
            policy,
        }
    }

    /// The latest valid snapshot's version of `id`, if any.
    pub async fn snapshot_version(&self, id: &str) -> Result<Option<u64>> {
        Ok(self.read_snapshot(id).await?.map(|(v, _, _)| v))
    }

    async fn read_snapshot(&self, id: &str) -> Result<Option<(u64, A, Vec<String>)>> {
        let stream = Repository::<A>::stream_of(id);
        let backend = self.store.backend();
        let row = sqlx::query(
            "SELECT version, schema_version, state FROM es_snapshots WHERE stream = $1",
        )
        .bind(&stream)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(|e| db_err(backend, format!("reading the snapshot of `{stream}`"), e))?;
        let Some(row) = row else { return Ok(None) };
        let schema: i64 = row
            .try_get("schema_version")
            .map_err(|e| db_err(backend, "reading a snapshot", e))?;
        if schema != i64::from(self.policy.schema_version) {
            tracing::debug!(%stream, schema, "ignoring a snapshot of another schema version");
            return Ok(None);
        }
        let version: i64 = row
            .try_get("version")
            .map_err(|e| db_err(backend, "reading a snapshot", e))?;
        let state: String = row
            .try_get("state")
            .map_err(|e| db_err(backend, "reading a snapshot", e))?;
        let (state, subjects) = match self.open_state(&stream, &state).await? {
            Some(opened) => opened,
            None => return Ok(None),
        };
        match serde_json::from_value::<A>(state) {
            Ok(state) => Ok(Some((u64::try_from(version).unwrap_or(0), state, subjects))),
            Err(e) => {
                tracing::warn!(%stream, error = %e, "snapshot does not decode; rebuilding from events");
                Ok(None)
            }
        }
    }

    /// A stored state as JSON, opened when it was sealed for data
    /// subjects; `None` (rebuild from events) when one of them is
    /// forgotten or the repository has no shredder to open it.
    async fn open_state(
        &self,
        stream: &str,
        text: &str,
    ) -> Result<Option<(serde_json::Value, Vec<String>)>> {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%stream, error = %e, "snapshot is not JSON; rebuilding from events");
                return Ok(None);
            }
        };
        let Some(sealed) = value.get(SEALED) else {
            return Ok(Some((value, Vec::new())));
        };
        let sealed: SealedValue = serde_json::from_value(sealed.clone()).map_err(|e| {
            Error::backend(
                self.store.backend(),
                format!("the sealed snapshot of `{stream}`"),
                e,
            )
        })?;
        let Some(shredder) = self.repo.shredder() else {
            tracing::warn!(%stream, "snapshot holds personal data and the repository has no shredder; rebuilding from events");
            return Ok(None);
        };
        Ok(shredder
            .open_value(&sealed, stream)
            .await?
            .map(|state| (state, sealed.subjects)))
    }

    /// Loads from the latest snapshot plus the events after it.
    pub async fn load(&self, id: &str) -> Result<AggregateRoot<A>> {
        let mut root = match self.read_snapshot(id).await? {
            Some((version, state, subjects)) => {
                let mut root = AggregateRoot::restore(id, version, state);
                for subject in subjects {
                    root.add_subject(subject);
                }
                root
            }
            None => AggregateRoot::new(id),
        };
        let mut tail: Vec<EventEnvelope> = self
            .store
            .read_stream(&Repository::<A>::stream_of(id), root.version() + 1)
            .await?;
        for envelope in &mut tail {
            self.repo.open_stored(&mut root, envelope).await?;
            root.apply_stored(envelope)?;
        }
        Ok(root)
    }

    /// Saves the new events, then snapshots if a multiple of `every` was crossed.
    pub async fn save(&self, root: &mut AggregateRoot<A>) -> Result<Vec<EventEnvelope>> {
        let before = root.version();
        let saved = self.repo.save(root).await?;
        if root.version() / self.policy.every > before / self.policy.every {
            if let Err(e) = self.snapshot(root).await {
                tracing::warn!(id = root.id(), error = %e, "snapshot failed; the events are saved");
            }
        }
        Ok(saved)
    }

    /// Writes a snapshot of `root` as it is now (its saved version).
    pub async fn snapshot(&self, root: &AggregateRoot<A>) -> Result<()> {
        if !root.uncommitted().is_empty() {
            return Err(Error::config(
                "snapshot: save the aggregate's new events first",
            ));
        }
        let stream = Repository::<A>::stream_of(root.id());
        let encode = |e: serde_json::Error| Error::Encode {
            event_type: format!("{} snapshot", A::Event::AGGREGATE_TYPE),
            reason: e.to_string(),
        };
        let mut state = serde_json::to_value(root.state()).map_err(encode)?;
        if !root.subjects().is_empty() {
            // The state holds personal data: seal it for each subject,
            // so forgetting any of them makes this copy unreadable.
            let Some(shredder) = self.repo.shredder() else {
                return Err(Error::config(
                    "snapshot: the state holds personal data and the repository has no shredder",
                ));
            };
            let Some(sealed) = shredder
                .seal_value(root.subjects(), &stream, &state)
                .await?
            else {
                tracing::debug!(%stream, "no snapshot: a data subject of the stream is forgotten");
                return Ok(());
            };
            state = serde_json::json!({ SEALED: sealed });
        }
        let state = serde_json::to_string(&state).map_err(encode)?;
        sqlx::query(
            "INSERT INTO es_snapshots (stream, version, schema_version, state, taken_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version, schema_version = excluded.schema_version, \
             state = excluded.state, taken_at = excluded.taken_at",
        )
        .bind(&stream)
        .bind(i64::try_from(root.version()).unwrap_or(i64::MAX))
        .bind(i64::from(self.policy.schema_version))
        .bind(state)
        .bind(ts(Utc::now()))
        .execute(&self.store.pool)
        .await
        .map_err(|e| db_err(self.store.backend(), format!("writing the snapshot of `{stream}`"), e))?;
        Ok(())
    }
}
