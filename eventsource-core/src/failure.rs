//! Why a message was given up on: one type for the worker's verdict, the
//! dead letter on the broker, and what an operator lists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of failure sent a message to the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The handler failed (returned an error or panicked) on every attempt
    /// the retry policy allowed.
    Exhausted,
    /// The handler returned a permanent error: not retried.
    Permanent,
    /// The message could not be decoded into an event: no handler ran.
    Undecodable,
    /// Not handled: an earlier event of the same aggregate is dead-lettered
    /// in this group, and the subscription parks an aggregate behind its
    /// dead letter ([`SubscriptionBuilder::park_aggregate_on_failure`](crate::SubscriptionBuilder::park_aggregate_on_failure)).
    /// Released, in order, when that letter is replayed or discarded.
    Parked,
    /// The letter itself could not be read: its failure headers (or its
    /// event) are missing or malformed — written by another tool, an
    /// older version, or by hand. Listed with its raw fields and the
    /// reason, purgeable and discardable; it parks no aggregate.
    Unreadable,
    /// Not handled: the event was written at a schema version newer than
    /// the consumer knows ([`Error::NewerVersion`](crate::Error::NewerVersion)),
    /// a producer upgraded before its consumers. Nothing is wrong with it:
    /// it waits (and, where the group parks aggregates, its aggregate's
    /// later events wait behind it) until a member that knows the version
    /// starts and replays it, or an operator replays it.
    NewerVersion,
}

impl FailureKind {
    /// The kind as written on the wire (`exhausted`, `permanent`,
    /// `undecodable`, `parked`, `unreadable`, `newer_version`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Exhausted => "exhausted",
            FailureKind::Permanent => "permanent",
            FailureKind::Undecodable => "undecodable",
            FailureKind::Parked => "parked",
            FailureKind::Unreadable => "unreadable",
            FailureKind::NewerVersion => "newer_version",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Exhausted,
            Self::Permanent,
            Self::Undecodable,
            Self::Parked,
            Self::Unreadable,
            Self::NewerVersion,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a consumer group gave up on a message, and where it came from.
///
/// Carried by the worker's [`Outcome::DeadLetter`](crate::driver::Outcome::DeadLetter),
/// written to the broker by [`wire::dead_letter`](crate::wire::dead_letter)
/// (one spelling for every backend) and read back into
/// [`DeadLetter::failure`](crate::DeadLetter::failure).
///
/// Built by the worker or with [`Failure::undecodable`],
/// [`Failure::parked`] and [`Failure::unreadable`] (fields may be added:
/// it is `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Failure {
    /// The last error, as text.
    pub error: String,
    /// What kind of failure it was.
    pub kind: FailureKind,
    /// How many times a handler ran on it (0 when it did not decode).
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failed_at: DateTime<Utc>,
    /// When the last attempt failed.
    pub last_failed_at: DateTime<Utc>,
    /// The consumer group that gave up.
    pub group: String,
    /// Where the message came from: stream and entry, queue and routing
    /// key, or topic, partition and offset (the backend's notation).
    pub source: String,
    /// The handler that failed (its type name), when one ran.
    pub handler: Option<String>,
}

impl Failure {
    /// A message of `group` from `source` that could not be decoded.
    pub fn undecodable(
        group: impl Into<String>,
        source: impl Into<String>,
        reason: impl std::fmt::Display,
    ) -> Self {
        let now = Utc::now();
        Failure {
            error: format!("cannot decode message: {reason}"),
            kind: FailureKind::Undecodable,
            attempts: 0,
            first_failed_at: now,
            last_failed_at: now,
            group: group.into(),
            source: source.into(),
            handler: None,
        }
    }

    /// An event of `group` not handled because an earlier event of its
    /// aggregate is dead-lettered there (see [`FailureKind::Parked`]).
    pub fn parked(group: impl Into<String>, envelope: &crate::EventEnvelope) -> Self {
        let group = group.into();
        let now = Utc::now();
        Failure {
            error: format!(
                "parked: an earlier event of aggregate `{}` is dead-lettered in group `{group}`; \
                 replay or discard that letter to release this one",
                envelope.aggregate_id
            ),
            kind: FailureKind::Parked,
            attempts: 0,
            first_failed_at: now,
            last_failed_at: now,
            group,
            source: String::new(),
            handler: None,
        }
    }

    /// The failure shown for a letter of `group` that could not be read
    /// (see [`FailureKind::Unreadable`]): `reason` says why, `source` where
    /// it is (the DLQ and the entry), `at` when it was written, as far as
    /// the broker tells.
    pub fn unreadable(
        group: impl Into<String>,
        source: impl Into<String>,
        reason: impl std::fmt::Display,
        at: DateTime<Utc>,
    ) -> Self {
        Failure {
            error: format!("unreadable dead letter: {reason}"),
            kind: FailureKind::Unreadable,
            attempts: 0,
            first_failed_at: at,
            last_failed_at: at,
            group: group.into(),
            source: source.into(),
            handler: None,
        }
    }

    /// The same failure, with `source` filled in (the worker's verdict
    /// does not know the backend's notation; its settle does).
    #[must_use]
    pub fn from_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }
}
