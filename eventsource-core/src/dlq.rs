//! Dead letters: messages a consumer group gave up on, and what to do with them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{EventEnvelope, Failure, Result};

/// A message that a consumer group could not handle, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The backend's id of this dead letter (stream entry id, message id, offset...).
    pub id: String,
    /// The event, when it could be decoded.
    pub envelope: Option<EventEnvelope>,
    /// The raw message, when it could not be decoded into an envelope.
    pub raw: Option<String>,
    /// Why it was given up on, by which group, and where it came from.
    pub failure: Failure,
}

impl DeadLetter {
    /// The consumer group that gave up on it.
    pub fn group(&self) -> &str {
        &self.failure.group
    }
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterQuery {
    /// Only this consumer group's.
    pub group: Option<String>,
    /// At most this many (default: all).
    pub limit: Option<usize>,
}

impl DeadLetterQuery {
    /// All dead letters.
    pub fn all() -> Self {
        Self::default()
    }

    /// One group's dead letters.
    pub fn group(group: impl Into<String>) -> Self {
        DeadLetterQuery {
            group: Some(group.into()),
            limit: None,
        }
    }

    /// Caps the number returned.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// The operator's view of a bus's dead-letter queue.
///
/// `replay` puts a message back where it came from *for its group only*:
/// other groups, which handled it the first time, do not see it again.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Dead letters, oldest first.
    async fn list(&self, query: &DeadLetterQuery) -> Result<Vec<DeadLetter>>;

    /// One dead letter by id, or `None`.
    async fn get(&self, id: &str) -> Result<Option<DeadLetter>>;

    /// Redelivers one dead letter to its group and removes it from the queue.
    /// Fails with [`Error::NotFound`](crate::Error::NotFound) for an unknown id.
    async fn replay(&self, id: &str) -> Result<()>;

    /// Replays every dead letter the query selects; returns how many.
    async fn replay_all(&self, query: &DeadLetterQuery) -> Result<usize> {
        self.replay_all_with_progress(query, &|_, _| {}).await
    }

    /// [`replay_all`](Self::replay_all), calling `progress(done, total)`
    /// as letters go back (after each one, or after each batch where a
    /// backend replays in batches). Stops at the first failure; what was
    /// replayed before it stays replayed.
    async fn replay_all_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let letters = self.list(query).await?;
        for (i, letter) in letters.iter().enumerate() {
            self.replay(&letter.id).await?;
            progress(i + 1, letters.len());
        }
        Ok(letters.len())
    }

    /// Deletes one dead letter; returns whether it existed.
    async fn delete(&self, id: &str) -> Result<bool>;

    /// Deletes every dead letter the query selects; returns how many.
    async fn purge(&self, query: &DeadLetterQuery) -> Result<usize> {
        self.purge_with_progress(query, &|_, _| {}).await
    }

    /// [`purge`](Self::purge), calling `progress(done, total)` as letters
    /// go (after each one, or once where a backend purges a whole queue at
    /// once). Stops at the first failure; what was deleted stays deleted.
    async fn purge_with_progress(
        &self,
        query: &DeadLetterQuery,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize> {
        let letters = self.list(query).await?;
        let mut n = 0;
        for (i, letter) in letters.iter().enumerate() {
            if self.delete(&letter.id).await? {
                n += 1;
            }
            progress(i + 1, letters.len());
        }
        Ok(n)
    }
}
