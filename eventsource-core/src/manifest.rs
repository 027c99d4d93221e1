//! The schema check (#31): does every stored event, dead letter and
//! parked letter have a path to the event types the application runs?
//!
//! The application describes what it knows in a [`SchemaManifest`] — each
//! event type with its current schema version, and the upcaster steps it
//! registers — and either checks in code ([`SchemaManifest::check`]) or
//! writes the manifest as JSON for `eventsource schema check`. What was
//! found is a list of [`Census`] entries (aggregate type, event type,
//! version, how many, where); the [`SchemaReport`] names each one without
//! a path to the current type.
//!
//! ```
//! use eventsource_core::manifest::{Census, Found, SchemaManifest};
//! use eventsource_core::upcast::Upcasters;
//!
//! let upcasters = Upcasters::new().with("Account", "Opened", 1, |v| Ok(v));
//! let manifest = SchemaManifest::new()
//!     .event_type("Account", "Opened", 2)
//!     .upcasters(&upcasters);
//! let report = manifest.check(&[
//!     Census::new("Account", "Opened", 1, 10, Found::Stored),
//!     Census::new("Account", "Opened", 2, 5, Found::Stored),
//!     Census::new("Account", "Closed", 1, 1, Found::DeadLetter),
//! ]);
//! assert!(!report.passed());
//! assert_eq!(report.problems.len(), 1);
//! assert!(report.problems[0].to_string().contains("Account.Closed"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::upcast::Upcasters;
use crate::{DomainEvent, Error, Result};

/// What the application knows: each event type's current version, and
/// the upcaster steps it registers. Serializes as the manifest file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaManifest {
    /// Current schema version per `(aggregate type, event type)`.
    pub events: Vec<ManifestEvent>,
    /// Upcaster steps: `(aggregate type, event type, from version)`.
    #[serde(default)]
    pub upcasters: Vec<ManifestStep>,
}

/// One event type the application decodes, at its current version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEvent {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The event type.
    pub event_type: String,
    /// Its current schema version.
    pub version: u32,
}

/// One upcaster step: from `from_version` to the next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestStep {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The event type.
    pub event_type: String,
    /// The version the step reads.
    pub from_version: u32,
}

impl SchemaManifest {
    /// An empty manifest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every event type of `E` (the derive lists an enum's variants)
    /// at `E::SCHEMA_VERSION`. Fails when `E` lists none (a hand-written
    /// impl without [`DomainEvent::event_types`]): use
    /// [`event_type`](Self::event_type) for those.
    pub fn event<E: DomainEvent>(mut self) -> Result<Self> {
        if E::event_types().is_empty() {
            return Err(Error::config(format!(
                "schema manifest: `{}` lists no event types (implement DomainEvent::event_types, \
                 or add them with SchemaManifest::event_type)",
                std::any::type_name::<E>()
            )));
        }
        for t in E::event_types() {
            self = self.event_type(E::AGGREGATE_TYPE, t, E::SCHEMA_VERSION);
        }
        Ok(self)
    }

    /// Adds one event type at its current `version`.
    #[must_use]
    pub fn event_type(mut self, aggregate_type: &str, event_type: &str, version: u32) -> Self {
        self.events.push(ManifestEvent {
            aggregate_type: aggregate_type.to_owned(),
            event_type: event_type.to_owned(),
            version,
        });
        self
    }

    /// Adds the steps of `upcasters`.
    #[must_use]
    pub fn upcasters(mut self, upcasters: &Upcasters) -> Self {
        for (aggregate_type, event_type, from_version) in upcasters.steps() {
            self.upcasters.push(ManifestStep {
                aggregate_type,
                event_type,
                from_version,
            });
        }
        self
    }

    /// Adds the process-wide steps
    /// ([`register_upcaster`](crate::upcast::register_upcaster)).
    #[must_use]
    pub fn registered_upcasters(self) -> Self {
        let registered = crate::upcast::registered();
        self.upcasters(&registered)
    }

    /// The manifest as JSON, for `eventsource schema check --manifest`.
    pub fn to_json(&self) -> String {
        let mut sorted = self.clone();
        sorted.events.sort();
        sorted.upcasters.sort();
        serde_json::to_string_pretty(&sorted).unwrap_or_default()
    }

    /// A manifest from [`to_json`](Self::to_json)'s text; a typed error
    /// naming what is wrong otherwise.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::config(format!("schema manifest: {e}")))
    }

    /// Checks what was found against the manifest: each entry whose
    /// version is the current one, or reaches it through the steps, passes;
    /// an unknown type, a missing step or a version newer than the current
    /// one is a problem, with its count and where it was found.
    pub fn check(&self, found: &[Census]) -> SchemaReport {
        let current: BTreeMap<(&str, &str), u32> = self
            .events
            .iter()
            .map(|e| {
                (
                    (e.aggregate_type.as_str(), e.event_type.as_str()),
                    e.version,
                )
            })
            .collect();
        let steps: BTreeSet<(&str, &str, u32)> = self
            .upcasters
            .iter()
            .map(|s| {
                (
                    s.aggregate_type.as_str(),
                    s.event_type.as_str(),
                    s.from_version,
                )
            })
            .collect();
        let mut report = SchemaReport::default();
        for entry in found {
            let key = (entry.aggregate_type.as_str(), entry.event_type.as_str());
            report.checked += entry.count;
            let why = match current.get(&key) {
                None => Some(Why::UnknownType),
                Some(&now) if entry.version > now => Some(Why::NewerThanCurrent(now)),
                Some(&now) => (entry.version..now)
                    .find(|v| !steps.contains(&(key.0, key.1, *v)))
                    .map(|v| Why::MissingStep {
                        from: v,
                        current: now,
                    }),
            };
            if let Some(why) = why {
                report.problems.push(Problem {
                    found: entry.clone(),
                    why,
                });
            }
        }
        report
    }
}

/// Where a census entry was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    /// Events in the store.
    Stored,
    /// Dead letters on the bus.
    DeadLetter,
    /// Parked letters on the bus.
    Parked,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::Stored => "stored events",
            Found::DeadLetter => "dead letters",
            Found::Parked => "parked letters",
        })
    }
}

/// How many events of one type and version were found, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    /// The aggregate type.
    pub aggregate_type: String,
    /// The event type.
    pub event_type: String,
    /// The schema version.
    pub version: u32,
    /// How many.
    pub count: u64,
    /// Where.
    pub found: Found,
}

impl Census {
    /// One entry.
    pub fn new(
        aggregate_type: &str,
        event_type: &str,
        version: u32,
        count: u64,
        found: Found,
    ) -> Self {
        Census {
            aggregate_type: aggregate_type.to_owned(),
            event_type: event_type.to_owned(),
            version,
            count,
            found,
        }
    }

    /// Counts dead letters by type and version (parked ones apart); raw
    /// letters (no envelope) are not counted here.
    pub fn of_letters(letters: &[crate::DeadLetter]) -> Vec<Census> {
        let mut counts: BTreeMap<(String, String, u32, bool), u64> = BTreeMap::new();
        for letter in letters {
            if let Some(e) = letter.envelope() {
                let parked = letter.failure.kind == crate::FailureKind::Parked;
                *counts
                    .entry((
                        e.aggregate_type.clone(),
                        e.event_type.clone(),
                        e.schema_version,
                        parked,
                    ))
                    .or_insert(0) += 1;
            }
        }
        counts
            .into_iter()
            .map(|((a, t, v, parked), n)| {
                let found = if parked {
                    Found::Parked
                } else {
                    Found::DeadLetter
                };
                Census::new(&a, &t, v, n, found)
            })
            .collect()
    }
}

/// Why an entry has no path to the current type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Why {
    /// The application does not know the event type at all.
    UnknownType,
    /// No upcaster step from `from` (on the way to `current`).
    MissingStep {
        /// The version with no step.
        from: u32,
        /// The current version.
        current: u32,
    },
    /// Written by a newer producer than the application.
    NewerThanCurrent(u32),
}

/// One entry without a path to the current type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What was found.
    pub found: Census,
    /// Why it has no path.
    pub why: Why,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.found;
        write!(
            f,
            "{}.{} v{}: {} {}: ",
            c.aggregate_type, c.event_type, c.version, c.count, c.found
        )?;
        match &self.why {
            Why::UnknownType => f.write_str("the application does not know this event type"),
            Why::MissingStep { from, current } => {
                write!(f, "no upcaster from version {from} (current is {current})")
            }
            Why::NewerThanCurrent(now) => write!(
                f,
                "newer than the application's version {now} (deploy the consumer first)"
            ),
        }
    }
}

/// The outcome of [`SchemaManifest::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReport {
    /// How many events and letters were checked.
    pub checked: u64,
    /// Each entry without a path.
    pub problems: Vec<Problem>,
}

impl SchemaReport {
    /// Whether everything has a path.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many events and letters have no path.
    pub fn failing(&self) -> u64 {
        self.problems.iter().map(|p| p.found.count).sum()
    }
}
