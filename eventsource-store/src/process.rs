//! Running a process manager on the SQL store: each input handled once
//! per instance, its step, outgoing events and timeouts committed in one
//! transaction, its commands applied once.
//!
//! How an input is handled ([`ProcessRunner`] is the group's handler):
//!
//! 1. Its instance: a fired timeout names it; any other input is asked
//!    [`ProcessManager::correlate`]. No instance: acked, ignored.
//! 2. The instance's stream (`NAME-<instance>`) is read: one step per
//!    handled input. A step for this input already there means it was
//!    handled before (a redelivery): its recorded commands are sent again
//!    (each applies once) and nothing else is done.
//! 3. The state is rebuilt from the steps; a completed instance, or one not
//!    started that this input does not start, ignores it; so does a timeout
//!    that a later step cancelled or replaced (it may have fired already).
//! 4. `handle` decides. In one transaction: the step (with the input and
//!    the effects) is appended at the next version (optimistic
//!    concurrency: a member that handled another input of the instance
//!    first makes this a conflict, retried), events to publish go to the
//!    outbox, timeouts are scheduled or cancelled.
//! 5. After the commit the commands run, each with an id derived from the
//!    input ([`command_id`]) that the target repository applies once
//!    ([`Repository::execute_once`](eventsource_core::Repository::execute_once)).
//!    Only then is the input acked: a crash before leaves it to be
//!    delivered again, which finds the step (2).
//!
//! Within a process, the runner handles one input of an instance at a
//! time; across members, the version check serializes them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use eventsource_core::process::{
    command_id, timeout_name, Commands, Effect, Effects, ProcessManager,
};
use eventsource_core::{
    stream_name, Error, EventEnvelope, EventHandler, EventStore, ExpectedVersion, HandlerError,
    HandlerResult, SaveContext,
};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Transaction};
use uuid::Uuid;

use crate::schema::{db_err, ts};
use crate::SqlEventStore;

pub use crate::schema::STEP_EVENT_TYPE;

/// One handled input: what came in and what was decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    input: EventEnvelope,
    effects: Vec<Effect>,
}

/// The consumer-group handler that runs process manager `P` on a SQL
/// store. Subscribe it as the group named in [`new`](Self::new), with
/// no filter or one that admits the process's own timeouts (aggregate
/// type `P::NAME`); run an [`OutboxRelay`](crate::OutboxRelay) for what
/// it publishes and a [`TimeoutScheduler`](crate::TimeoutScheduler) for
/// its timeouts.
pub struct ProcessRunner<P: ProcessManager> {
    store: SqlEventStore,
    manager: Arc<P>,
    commands: Commands,
    group: String,
    name: String,
    busy: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl<P: ProcessManager> std::fmt::Debug for ProcessRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRunner")
            .field("process", &P::NAME)
            .field("group", &self.group)
            .field("commands", &self.commands)
            .finish()
    }
}

impl<P: ProcessManager> ProcessRunner<P> {
    /// Runs `manager` on `store` as consumer group `group` (the
    /// subscription's group: timeouts are delivered to it), sending
    /// commands to `commands`.
    pub fn new(
        store: SqlEventStore,
        manager: P,
        commands: Commands,
        group: impl Into<String>,
    ) -> Self {
        ProcessRunner {
            store,
            manager: Arc::new(manager),
            commands,
            group: group.into(),
            name: format!("process {}", P::NAME),
            busy: Arc::default(),
        }
    }

    /// The instance's state as its steps leave it, and whether it has
    /// completed; `None` when it has no steps.
    pub async fn instance(
        &self,
        instance: &str,
    ) -> eventsource_core::Result<Option<(P::State, bool)>> {
        let steps = self.steps(instance).await?;
        if steps.is_empty() {
            return Ok(None);
        }
        let (state, completed) = self.rebuild(&steps).map_err(|e| {
            Error::config(format!(
                "process {} instance `{instance}` does not rebuild: {e}",
                P::NAME
            ))
        })?;
        Ok(Some((state, completed)))
    }

    async fn steps(&self, instance: &str) -> eventsource_core::Result<Vec<Step>> {
        let stream = stream_name(P::NAME, instance);
        self.store
            .read_stream(&stream, 1)
            .await?
            .into_iter()
            .map(|e| {
                serde_json::from_value::<Step>(e.payload).map_err(|err| Error::Decode {
                    event_id: e.event_id.to_string(),
                    event_type: STEP_EVENT_TYPE.to_owned(),
                    target: "a process step",
                    reason: format!("a step of `{stream}`: {err}"),
                })
            })
            .collect()
    }

    /// The state after `steps`, and whether one completed the instance.
    fn rebuild(&self, steps: &[Step]) -> Result<(P::State, bool), HandlerError> {
        let mut state = P::State::default();
        let mut completed = false;
        for step in steps {
            self.manager
                .handle(&mut state, &step.input, &mut Effects::new())?;
            completed |= step.effects.contains(&Effect::Complete);
        }
        Ok((state, completed))
    }

    /// The instance `input` belongs to.
    fn instance_of(&self, input: &EventEnvelope) -> Option<String> {
        if timeout_name(input).is_some() && input.aggregate_type == P::NAME {
            return Some(input.aggregate_id.clone());
        }
        self.manager.correlate(input)
    }

    async fn handle_in(&self, instance: &str, input: &EventEnvelope) -> HandlerResult {
        let steps = self
            .steps(instance)
            .await
            .map_err(HandlerError::transient)?;
        if let Some(step) = steps.iter().find(|s| s.input.event_id == input.event_id) {
            tracing::debug!(process = P::NAME, instance, input = %input.event_id, "input handled before; finishing its commands");
            return self.send(instance, input.event_id, &step.effects).await;
        }
        let (mut state, completed) = self.rebuild(&steps)?;
        if completed {
            tracing::debug!(
                process = P::NAME,
                instance,
                "instance completed; input ignored"
            );
            return Ok(());
        }
        if steps.is_empty() && !self.manager.starts(input) {
            tracing::debug!(process = P::NAME, instance, event_type = %input.event_type, "no instance and the input does not start one; ignored");
            return Ok(());
        }
        if let Some(name) = timeout_name(input) {
            if live_timeout::<P>(instance, &steps, name) != Some(input.event_id) {
                tracing::debug!(
                    process = P::NAME,
                    instance,
                    name,
                    "timeout cancelled or replaced since it fired; ignored"
                );
                return Ok(());
            }
        }
        let mut effects = Effects::new();
        self.manager.handle(&mut state, input, &mut effects)?;
        let effects = effects.into_effects()?;
        let version = steps.len() as u64;
        let mut pending = pending_timeouts::<P>(instance, &steps);
        if let Some(name) = timeout_name(input) {
            pending.remove(name); // this one is being handled
        }
        match self
            .record(instance, version, input, &effects, pending)
            .await
        {
            Ok(()) => {}
            Err(Error::DuplicateEvent { .. }) => {
                // Another member recorded this input meanwhile: its step
                // stands; send its commands (each applies once).
                return Box::pin(self.handle_in(instance, input)).await;
            }
            Err(e) => return Err(HandlerError::transient(e)),
        }
        self.send(instance, input.event_id, &effects).await
    }

    /// Commits the step, its outgoing events and its timeouts together.
    async fn record(
        &self,
        instance: &str,
        version: u64,
        input: &EventEnvelope,
        effects: &[Effect],
        mut pending: BTreeSet<String>,
    ) -> eventsource_core::Result<()> {
        let step_id = step_id::<P>(instance, input.event_id);
        let step = Step {
            input: input.clone(),
            effects: effects.to_vec(),
        };
        let mut envelope = EventEnvelope::from_json(
            P::NAME,
            instance,
            version + 1,
            STEP_EVENT_TYPE,
            serde_json::to_value(&step).map_err(|e| Error::Encode {
                event_type: STEP_EVENT_TYPE.to_owned(),
                reason: e.to_string(),
            })?,
        )
        .with_correlation_id(instance)
        .with_causation_id(input.event_id.to_string());
        envelope.event_id = step_id;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let stream = stream_name(P::NAME, instance);
        let mut tx = self.store.begin_append().await?;
        self.store
            .append_in(&mut tx, &stream, expected, &[envelope], false)
            .await?;
        let published: Vec<EventEnvelope> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish { event } => Some(event),
                _ => None,
            })
            .enumerate()
            .map(|(i, event)| {
                let mut event = (**event).clone();
                event.event_id = derived(&format!("publish/{step_id}/{i}"));
                event.aggregate_id = instance.to_owned();
                event.aggregate_version = version + 1;
                event.correlation_id = Some(instance.to_owned());
                event.causation_id = Some(input.event_id.to_string());
                event
            })
            .collect();
        if !published.is_empty() {
            self.store.write_outbox(&mut tx, &published).await?;
        }
        for effect in effects {
            match effect {
                Effect::Schedule { name, after_ms } => {
                    // A statement only when one of that name is pending.
                    if !pending.insert(name.clone()) {
                        self.cancel(&mut tx, instance, Some(name)).await?;
                    }
                    let id = timeout_id(step_id, name);
                    let now = Utc::now();
                    let due = now
                        + chrono::Duration::milliseconds(
                            i64::try_from(*after_ms).unwrap_or(i64::MAX / 2),
                        );
                    sqlx::query(
                        "INSERT INTO es_timeouts (id, process, instance, name, group_name, due_at, scheduled_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(id.to_string())
                    .bind(P::NAME)
                    .bind(instance)
                    .bind(name.as_str())
                    .bind(self.group.as_str())
                    .bind(ts(due))
                    .bind(ts(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_err(self.store.backend(), "scheduling a timeout", e))?;
                }
                Effect::Cancel { name } => {
                    if pending.remove(name) {
                        self.cancel(&mut tx, instance, Some(name)).await?;
                    }
                }
                Effect::Complete => {
                    if !pending.is_empty() {
                        self.cancel(&mut tx, instance, None).await?;
                        pending.clear();
                    }
                }
                Effect::Command { .. } | Effect::Publish { .. } => {}
            }
        }
        tx.commit().await.map_err(|e| {
            db_err(
                self.store.backend(),
                format!("committing a step of `{stream}`"),
                e,
            )
        })
    }

    /// Cancels the instance's pending timeout `name` (every one with
    /// `None`). One that fired already is ignored when it arrives
    /// ([`live_timeout`]).
    async fn cancel(
        &self,
        tx: &mut Transaction<'static, Any>,
        instance: &str,
        name: Option<&str>,
    ) -> eventsource_core::Result<()> {
        let sql = if name.is_some() {
            "UPDATE es_timeouts SET cancelled_at = $1 \
             WHERE process = $2 AND instance = $3 AND fired_at IS NULL AND cancelled_at IS NULL \
             AND name = $4"
        } else {
            "UPDATE es_timeouts SET cancelled_at = $1 \
             WHERE process = $2 AND instance = $3 AND fired_at IS NULL AND cancelled_at IS NULL"
        };
        let mut query = sqlx::query(sql)
            .bind(ts(Utc::now()))
            .bind(P::NAME)
            .bind(instance);
        if let Some(name) = name {
            query = query.bind(name);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(|e| db_err(self.store.backend(), "cancelling a timeout", e))?;
        Ok(())
    }

    /// Sends the step's commands, each once.
    async fn send(&self, instance: &str, input: Uuid, effects: &[Effect]) -> HandlerResult {
        let commands = effects.iter().filter_map(|e| match e {
            Effect::Command {
                aggregate_type,
                aggregate_id,
                command,
            } => Some((aggregate_type, aggregate_id, command)),
            _ => None,
        });
        for (index, (aggregate_type, aggregate_id, command)) in commands.enumerate() {
            let Some(target) = self.commands.target(aggregate_type) else {
                return Err(HandlerError::permanent(format!(
                    "process {} sends a command to {aggregate_type}, and no repository for it \
                     was given (Commands::with); the step is recorded, replay this letter \
                     once one is",
                    P::NAME
                )));
            };
            let ctx = SaveContext {
                correlation_id: Some(instance.to_owned()),
                causation_id: Some(command_id(P::NAME, instance, input, index).to_string()),
                metadata: Default::default(),
            };
            target.run(aggregate_id, command.clone(), &ctx).await?;
        }
        Ok(())
    }

    /// The lock of one instance in this process.
    fn lock_of(&self, instance: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(busy.entry(instance.to_owned()).or_default())
    }

    /// Forgets the lock of `instance` when no one else holds it.
    fn release(&self, instance: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        // Ours and the map's: no other input of the instance waits.
        if Arc::strong_count(&lock) == 2 {
            busy.remove(instance);
        }
    }
}

/// The id of the step that records `input` in `instance`.
fn step_id<P: ProcessManager>(instance: &str, input: Uuid) -> Uuid {
    derived(&format!("step/{}/{instance}/{input}", P::NAME))
}

/// The id of timeout `name` scheduled by step `step`.
fn timeout_id(step: Uuid, name: &str) -> Uuid {
    derived(&format!("timeout/{step}/{name}"))
}

/// The id of the instance's timeout `name` that is still to be handled,
/// as its steps tell: the last one scheduled, unless a later step
/// cancelled it or completed the instance. A fired timeout that is not
/// this one was cancelled or replaced after it fired.
fn live_timeout<P: ProcessManager>(instance: &str, steps: &[Step], name: &str) -> Option<Uuid> {
    let mut live = None;
    for step in steps {
        let id = step_id::<P>(instance, step.input.event_id);
        if timeout_name(&step.input) == Some(name) && live == Some(step.input.event_id) {
            live = None; // handled
        }
        for effect in &step.effects {
            match effect {
                Effect::Schedule { name: n, .. } if n == name => live = Some(timeout_id(id, name)),
                Effect::Cancel { name: n } if n == name => live = None,
                Effect::Complete => live = None,
                _ => {}
            }
        }
    }
    live
}

/// The names of the instance's timeouts still to be handled (scheduled,
/// not cancelled, not handled), as its steps tell.
fn pending_timeouts<P: ProcessManager>(instance: &str, steps: &[Step]) -> BTreeSet<String> {
    let names: BTreeSet<&String> = steps
        .iter()
        .flat_map(|s| &s.effects)
        .filter_map(|e| match e {
            Effect::Schedule { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    names
        .into_iter()
        .filter(|name| live_timeout::<P>(instance, steps, name).is_some())
        .cloned()
        .collect()
}

/// A UUID v5 of `what`: the same effect of the same input gets the same id
/// however often the input is handled.
fn derived(what: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("eventsource/{what}").as_bytes(),
    )
}

#[async_trait]
impl<P: ProcessManager> EventHandler for ProcessRunner<P> {
    async fn handle(&self, input: &EventEnvelope) -> HandlerResult {
        let Some(instance) = self.instance_of(input) else {
            return Ok(());
        };
        let lock = self.lock_of(&instance);
        let handled = {
            let _held = lock.lock().await;
            self.handle_in(&instance, input).await
        };
        self.release(&instance, lock);
        handled
    }

    fn name(&self) -> &str {
        &self.name
    }
}
