//! What a process manager decides: [`Effect`]s, collected in [`Effects`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Aggregate, DomainEvent, EventEnvelope, HandlerError};

/// One thing a process manager decided on an input. Recorded in the step
/// with the input, so a step that was stored but not finished (a crash
/// before its commands ran) finishes with the same effects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// A command to aggregate `aggregate_id` of `aggregate_type`, run
    /// through that aggregate's repository once (its id is derived from
    /// the input: see [`command_id`](super::command_id)).
    Command {
        /// The target's aggregate type.
        aggregate_type: String,
        /// The target aggregate.
        aggregate_id: String,
        /// The command, as JSON.
        command: serde_json::Value,
    },
    /// An event to publish through the outbox, committed with the step.
    Publish {
        /// The event; its id, version, correlation and causation are set
        /// when the step is recorded.
        event: Box<EventEnvelope>,
    },
    /// A timeout named `name`, due `after_ms` milliseconds after the step.
    /// Scheduling a name again replaces the pending one.
    Schedule {
        /// The timeout's name, unique within the instance.
        name: String,
        /// Milliseconds from the step to when it is due.
        after_ms: u64,
    },
    /// Cancels the pending timeout `name`, if any.
    Cancel {
        /// The timeout's name.
        name: String,
    },
    /// The instance is done: its pending timeouts are cancelled and later
    /// inputs ignored.
    Complete,
}

impl Effect {
    /// A command to aggregate `id` of type `A` (what
    /// [`Effects::command`] records; for a fixture's expectations).
    pub fn command<A: Aggregate>(id: impl Into<String>, command: &A::Command) -> Self
    where
        A::Command: Serialize,
    {
        Effect::Command {
            aggregate_type: A::Event::AGGREGATE_TYPE.to_owned(),
            aggregate_id: id.into(),
            command: serde_json::to_value(command).unwrap_or_else(|e| {
                serde_json::Value::String(format!("<command does not serialize: {e}>"))
            }),
        }
    }

    /// A timeout `name` due `after` (what [`Effects::schedule`] records).
    pub fn schedule(name: impl Into<String>, after: Duration) -> Self {
        Effect::Schedule {
            name: name.into(),
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The effects of one input, filled in by
/// [`ProcessManager::handle`](super::ProcessManager::handle).
#[derive(Debug, Default)]
pub struct Effects {
    effects: Vec<Effect>,
    error: Option<String>,
}

impl Effects {
    /// No effects yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `command` to aggregate `id` of type `A`.
    pub fn command<A: Aggregate>(&mut self, id: impl Into<String>, command: A::Command)
    where
        A::Command: Serialize,
    {
        match serde_json::to_value(&command) {
            Ok(command) => self.effects.push(Effect::Command {
                aggregate_type: A::Event::AGGREGATE_TYPE.to_owned(),
                aggregate_id: id.into(),
                command,
            }),
            Err(e) => self.fail(format!(
                "a command to {} does not serialize: {e}",
                A::Event::AGGREGATE_TYPE
            )),
        }
    }

    /// Publishes `event` (through the outbox, when the step commits).
    pub fn publish<E: DomainEvent>(&mut self, event: &E) {
        match EventEnvelope::new("", 0, event) {
            Ok(envelope) => self.effects.push(Effect::Publish {
                event: Box::new(envelope),
            }),
            Err(e) => self.fail(format!("an event to publish does not encode: {e}")),
        }
    }

    /// Schedules timeout `name` to fire `after` from now (replacing a
    /// pending one of that name).
    pub fn schedule(&mut self, name: impl Into<String>, after: Duration) {
        self.effects.push(Effect::schedule(name, after));
    }

    /// Cancels the pending timeout `name`.
    pub fn cancel(&mut self, name: impl Into<String>) {
        self.effects.push(Effect::Cancel { name: name.into() });
    }

    /// Ends the instance.
    pub fn complete(&mut self) {
        self.effects.push(Effect::Complete);
    }

    /// What was decided, in order.
    pub fn as_slice(&self) -> &[Effect] {
        &self.effects
    }

    /// Whether [`complete`](Self::complete) was called.
    pub fn completes(&self) -> bool {
        self.effects.contains(&Effect::Complete)
    }

    fn fail(&mut self, reason: String) {
        self.error.get_or_insert(reason);
    }

    /// The effects, or the first encoding failure as a permanent error
    /// (the input is dead-lettered rather than half-handled).
    pub fn into_effects(self) -> Result<Vec<Effect>, HandlerError> {
        match self.error {
            Some(reason) => Err(HandlerError::permanent(reason)),
            None => Ok(self.effects),
        }
    }
}
