//! A test fixture for process managers: inputs in, effects out, timeouts
//! on a virtual clock. No store, no bus: runs in microseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{DomainEvent, EventEnvelope, HandlerError};

use super::{timeout_envelope, Effect, Effects, ProcessManager};

/// Given some inputs, when one more arrives (or the clock moves), then
/// these effects. One instance; assertions panic with what was decided.
///
/// ```
/// # use std::time::Duration;
/// # use eventsource_core::process::{timeout_name, Effect, Effects, ProcessFixture, ProcessManager};
/// # use eventsource_core::{EventEnvelope, HandlerError};
/// # #[derive(Default)] struct S;
/// # struct Saga;
/// # impl ProcessManager for Saga {
/// #     type State = S;
/// #     const NAME: &'static str = "saga";
/// #     fn starts(&self, e: &EventEnvelope) -> bool { e.event_type == "Started" }
/// #     fn handle(&self, _: &mut S, e: &EventEnvelope, fx: &mut Effects) -> Result<(), HandlerError> {
/// #         if e.event_type == "Started" { fx.schedule("late", Duration::from_secs(30)) }
/// #         if timeout_name(e) == Some("late") { fx.complete() }
/// #         Ok(())
/// #     }
/// # }
/// let started = EventEnvelope::from_json("Flow", "f-1", 1, "Started", serde_json::json!({}))
///     .with_correlation_id("i-1");
/// ProcessFixture::new(Saga)
///     .when(started)
///     .then_schedules("late", Duration::from_secs(30))
///     .advance(Duration::from_secs(29))
///     .then_nothing()
///     .advance(Duration::from_secs(1))
///     .then_completes();
/// ```
pub struct ProcessFixture<P: ProcessManager> {
    manager: P,
    state: P::State,
    instance: Option<String>,
    completed: bool,
    start: DateTime<Utc>,
    now: Duration,
    /// Pending timeouts by name: when due, and the order they were set.
    pending: BTreeMap<String, (Duration, u64)>,
    scheduled: u64,
    effects: Vec<Effect>,
    error: Option<HandlerError>,
}

impl<P: ProcessManager> ProcessFixture<P> {
    /// A fixture for `manager`, with no instance yet and the clock at 0.
    pub fn new(manager: P) -> Self {
        ProcessFixture {
            manager,
            state: P::State::default(),
            instance: None,
            completed: false,
            start: Utc::now(),
            now: Duration::ZERO,
            pending: BTreeMap::new(),
            scheduled: 0,
            effects: Vec::new(),
            error: None,
        }
    }

    /// Handles `inputs` as history: their timeouts are scheduled, their
    /// other effects forgotten.
    pub fn given(mut self, inputs: impl IntoIterator<Item = EventEnvelope>) -> Self {
        for input in inputs {
            self.input(&input);
            if let Some(e) = self.error.take() {
                panic!("a given input failed: {e}");
            }
        }
        self.effects.clear();
        self
    }

    /// Handles `input`; the `then_*` assertions look at its effects.
    pub fn when(mut self, input: EventEnvelope) -> Self {
        self.effects.clear();
        self.error = None;
        self.input(&input);
        self
    }

    /// Moves the virtual clock by `by`, firing the timeouts that fall due
    /// on the way, in due order; the `then_*` assertions look at their
    /// effects.
    pub fn advance(mut self, by: Duration) -> Self {
        self.effects.clear();
        self.error = None;
        let until = self.now + by;
        while let Some((name, due)) = self
            .pending
            .iter()
            .filter(|(_, (due, _))| *due <= until)
            .min_by_key(|(_, (due, order))| (*due, *order))
            .map(|(name, (due, _))| (name.clone(), *due))
        {
            self.pending.remove(&name);
            self.now = due;
            let instance = self.instance.clone().unwrap_or_default();
            let at = self.start + chrono::Duration::from_std(due).unwrap_or_default();
            self.input(&timeout_envelope(
                P::NAME,
                &instance,
                &name,
                Uuid::now_v7(),
                at,
            ));
        }
        self.now = until;
        self
    }

    fn input(&mut self, input: &EventEnvelope) {
        if self.completed {
            return;
        }
        if self.instance.is_none() {
            if !self.manager.starts(input) {
                return;
            }
            self.instance = Some(self.manager.correlate(input).unwrap_or_default());
        }
        let mut effects = Effects::new();
        let handled = self
            .manager
            .handle(&mut self.state, input, &mut effects)
            .and_then(|()| effects.into_effects());
        match handled {
            Ok(effects) => {
                for effect in &effects {
                    match effect {
                        Effect::Schedule { name, after_ms } => {
                            self.scheduled += 1;
                            let due = self.now + Duration::from_millis(*after_ms);
                            self.pending.insert(name.clone(), (due, self.scheduled));
                        }
                        Effect::Cancel { name } => {
                            self.pending.remove(name);
                        }
                        Effect::Complete => {
                            self.completed = true;
                            self.pending.clear();
                        }
                        Effect::Command { .. } | Effect::Publish { .. } => {}
                    }
                }
                self.effects.extend(effects);
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// The instance's state.
    pub fn state(&self) -> &P::State {
        &self.state
    }

    /// The effects of the last `when` or `advance`.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }

    fn ok(&self) {
        if let Some(e) = &self.error {
            panic!("the input failed: {e}");
        }
    }

    /// Asserts the commands sent, in order (built with [`Effect::command`]).
    pub fn then_commands(self, expected: impl IntoIterator<Item = Effect>) -> Self {
        self.ok();
        let sent: Vec<&Effect> = self
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Command { .. }))
            .collect();
        let expected: Vec<Effect> = expected.into_iter().collect();
        assert_eq!(
            sent,
            expected.iter().collect::<Vec<_>>(),
            "commands sent (left) are not the ones expected (right)"
        );
        self
    }

    /// Asserts the events published, in order: their types and payloads.
    pub fn then_publishes<E: DomainEvent>(self, expected: &[E]) -> Self {
        self.ok();
        let published: Vec<(String, serde_json::Value)> = self
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish { event } => {
                    Some((event.event_type.clone(), event.payload.clone()))
                }
                _ => None,
            })
            .collect();
        let expected: Vec<(String, serde_json::Value)> = expected
            .iter()
            .map(|e| {
                let value = serde_json::to_value(e).expect("the expected event serializes");
                (e.event_type().to_owned(), value)
            })
            .collect();
        assert_eq!(
            published, expected,
            "events published (left) are not the ones expected (right)"
        );
        self
    }

    /// Asserts that timeout `name` was scheduled `after` from the input.
    pub fn then_schedules(self, name: &str, after: Duration) -> Self {
        self.ok();
        let wanted = Effect::schedule(name, after);
        assert!(
            self.effects.contains(&wanted),
            "expected {wanted:?} among {:?}",
            self.effects
        );
        self
    }

    /// Asserts that the instance completed.
    pub fn then_completes(self) -> Self {
        self.ok();
        assert!(
            self.effects.contains(&Effect::Complete),
            "expected the instance to complete; effects: {:?}",
            self.effects
        );
        self
    }

    /// Asserts that nothing was decided (and nothing failed).
    pub fn then_nothing(self) -> Self {
        self.ok();
        assert!(
            self.effects.is_empty(),
            "expected no effects: {:?}",
            self.effects
        );
        self
    }

    /// Asserts that the input failed, returning the error.
    pub fn then_fails(self) -> HandlerError {
        match self.error {
            Some(e) => e,
            None => panic!("expected the input to fail; effects: {:?}", self.effects),
        }
    }
}
