//! Loading and saving aggregates, with auto-publish of saved events.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;

use tracing::Instrument;

use crate::personal::{OpenRun, Shredder, PERSONAL_HEADER};
use crate::{
    stream_name, Aggregate, CommandError, DomainEvent, Error, EventBus, EventEnvelope, EventStore,
    ExpectedVersion, Result,
};

/// An aggregate's state plus what the repository tracks about it: its id,
/// the version it was loaded at and the events recorded since.
#[derive(Debug)]
pub struct AggregateRoot<A: Aggregate> {
    id: String,
    version: u64,
    state: A,
    uncommitted: Vec<A::Event>,
    subjects: BTreeSet<String>,
}

impl<A: Aggregate> AggregateRoot<A> {
    /// A new, empty aggregate (version 0).
    pub fn new(id: impl Into<String>) -> Self {
        AggregateRoot {
            id: id.into(),
            version: 0,
            state: A::default(),
            uncommitted: Vec::new(),
            subjects: BTreeSet::new(),
        }
    }

    /// Rebuilds an aggregate from a snapshot of its state at `version`,
    /// for loaders that keep snapshots; apply the events after it with
    /// [`apply_stored`](Self::apply_stored).
    pub fn restore(id: impl Into<String>, version: u64, state: A) -> Self {
        AggregateRoot {
            id: id.into(),
            version,
            state,
            uncommitted: Vec::new(),
            subjects: BTreeSet::new(),
        }
    }

    /// Notes that the aggregate's state holds personal data of `subject`
    /// (a snapshot loader restoring the subjects it kept).
    pub fn add_subject(&mut self, subject: impl Into<String>) {
        self.subjects.insert(subject.into());
    }

    /// [`add_subject`](Self::add_subject) without a copy when it is known
    /// (an aggregate's events mostly have one subject).
    fn note_subject(&mut self, subject: &str) {
        if !self.subjects.contains(subject) {
            self.subjects.insert(subject.to_owned());
        }
    }

    /// The data subjects whose personal data the aggregate's stored events
    /// hold (read from their headers at load and save): a snapshot of the
    /// state is sealed with each of their keys.
    pub fn subjects(&self) -> &BTreeSet<String> {
        &self.subjects
    }

    /// Applies one stored event: decodes it, evolves the state and moves
    /// the version to the event's. Fails with [`Error::Decode`] when the
    /// payload does not decode, and with [`Error::Concurrency`] when the
    /// event is not the next version.
    pub fn apply_stored(&mut self, envelope: &EventEnvelope) -> Result<()> {
        if envelope.aggregate_version != self.version + 1 {
            return Err(Error::Concurrency {
                stream: envelope.stream_name(),
                expected: format!("event version {} next", self.version + 1),
                actual: envelope.aggregate_version,
            });
        }
        let event = envelope.decode::<A::Event>()?;
        self.state.apply(&event);
        self.version = envelope.aggregate_version;
        Ok(())
    }

    /// The aggregate's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The version stored (events recorded but not saved are not counted).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The current state, uncommitted events applied.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Events recorded since the last load or save.
    pub fn uncommitted(&self) -> &[A::Event] {
        &self.uncommitted
    }

    /// Whether the aggregate has never been saved and records nothing.
    pub fn is_new(&self) -> bool {
        self.version == 0 && self.uncommitted.is_empty()
    }

    /// Runs `command`: the aggregate decides the events, they are applied to
    /// the state and kept for the next save. A rejected command changes
    /// nothing and returns [`CommandError::Rejected`] with the aggregate's
    /// own error, to `match` on (`?` makes it an [`Error::Command`]).
    pub fn execute(
        &mut self,
        command: A::Command,
    ) -> std::result::Result<&[A::Event], CommandError<A::Error>> {
        let events = self
            .state
            .handle(command)
            .map_err(|error| CommandError::Rejected {
                aggregate_type: A::Event::AGGREGATE_TYPE,
                aggregate_id: self.id.clone(),
                error,
            })?;
        for e in &events {
            self.state.apply(e);
        }
        let start = self.uncommitted.len();
        self.uncommitted.extend(events);
        Ok(&self.uncommitted[start..])
    }
}

/// Headers stamped on every event of one save.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveContext {
    /// Correlation id for all events of the save.
    pub correlation_id: Option<String>,
    /// The id of the command or message that caused them.
    pub causation_id: Option<String>,
    /// Extra metadata headers.
    pub metadata: BTreeMap<String, String>,
}

/// Loads aggregates from an [`EventStore`] and saves their new events with
/// optimistic concurrency, then publishes them to the bus if one is set.
///
/// ```
/// # use eventsource_core::*;
/// # use serde::{Deserialize, Serialize};
/// # use std::sync::Arc;
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # struct Incremented { by: u32 }
/// # impl DomainEvent for Incremented {
/// #     fn event_type(&self) -> &str { "Incremented" }
/// #     const AGGREGATE_TYPE: &'static str = "Counter";
/// # }
/// # #[derive(Default)] struct Counter { value: u32 }
/// # impl Aggregate for Counter {
/// #     type Event = Incremented; type Command = u32; type Error = std::io::Error;
/// #     fn apply(&mut self, e: &Incremented) { self.value += e.by; }
/// #     fn handle(&self, by: u32) -> Result<Vec<Incremented>, std::io::Error> { Ok(vec![Incremented { by }]) }
/// # }
/// # tokio_test(async {
/// let repo = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new()));
/// let mut counter = repo.load("c-1").await?;
/// counter.execute(2)?;
/// repo.save(&mut counter).await?;
/// assert_eq!(repo.load("c-1").await?.state().value, 2);
/// # Ok::<(), Error>(())
/// # });
/// # fn tokio_test<F: std::future::Future<Output = Result<()>>>(f: F) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f).unwrap();
/// # }
/// ```
pub struct Repository<A: Aggregate> {
    store: Arc<dyn EventStore>,
    bus: Option<Arc<dyn EventBus>>,
    shredder: Option<Arc<Shredder>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: Arc::clone(&self.store),
            bus: self.bus.clone(),
            shredder: self.shredder.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository that stores but does not publish.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Repository {
            store,
            bus: None,
            shredder: None,
            _aggregate: PhantomData,
        }
    }

    /// Publishes every saved batch to `bus` right after the append.
    #[must_use]
    pub fn with_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Seals the personal data events declare before they are stored or
    /// published, and opens it again at load (see
    /// [`personal`](crate::personal)). Without it, saving an event that
    /// declares personal data fails with [`Error::PersonalData`]: nothing
    /// personal is stored in the clear by mistake.
    #[must_use]
    pub fn with_shredder(mut self, shredder: Arc<Shredder>) -> Self {
        self.shredder = Some(shredder);
        self
    }

    /// The shredder, if one is set.
    pub fn shredder(&self) -> Option<&Arc<Shredder>> {
        self.shredder.as_ref()
    }

    /// Opens a stored event's personal data in place (a no-op for events
    /// without any), noting its subject on `root`, before it is applied.
    /// Loaders that read events themselves (snapshots) call it.
    pub async fn open_stored(
        &self,
        root: &mut AggregateRoot<A>,
        envelope: &mut EventEnvelope,
    ) -> Result<()> {
        let Some(shredder) = self.shredder_to_open(envelope)? else {
            return Ok(());
        };
        if let Some(declared) = shredder.open_fields(envelope).await? {
            root.note_subject(&declared.subject);
        }
        Ok(())
    }

    /// [`open_stored`](Self::open_stored) for one of a run of events
    /// (see [`Shredder::open_in_run`]).
    async fn open_in_run(
        &self,
        root: &mut AggregateRoot<A>,
        envelope: &mut EventEnvelope,
        run: &mut OpenRun,
    ) -> Result<()> {
        let Some(shredder) = self.shredder_to_open(envelope)? else {
            return Ok(());
        };
        if let Some(subject) = shredder.open_in_run(envelope, run).await? {
            root.note_subject(subject);
        }
        Ok(())
    }

    /// The shredder to open `envelope` with: `None` when it holds no
    /// personal data, an error when it does and there is no shredder.
    fn shredder_to_open(&self, envelope: &EventEnvelope) -> Result<Option<&Arc<Shredder>>> {
        if !envelope.metadata.contains_key(PERSONAL_HEADER) {
            return Ok(None);
        }
        match &self.shredder {
            Some(shredder) => Ok(Some(shredder)),
            None => Err(Error::PersonalData {
                event_id: envelope.event_id.to_string(),
                reason: "it holds encrypted personal data and the repository has no Shredder \
                         (Repository::with_shredder)"
                    .into(),
            }),
        }
    }

    /// The stream an aggregate id is stored in.
    pub fn stream_of(id: &str) -> String {
        stream_name(A::Event::AGGREGATE_TYPE, id)
    }

    /// The event store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads an aggregate by replaying its stream; an unknown id gives a new,
    /// empty aggregate at version 0.
    pub async fn load(&self, id: &str) -> Result<AggregateRoot<A>> {
        let stream = Self::stream_of(id);
        let mut events = self
            .store
            .read_stream(&stream, 1)
            .instrument(tracing::debug_span!("eventsource.load", %stream))
            .await?;
        let mut root = AggregateRoot::<A>::new(id);
        let mut run = OpenRun::default();
        for envelope in &mut events {
            self.open_in_run(&mut root, envelope, &mut run).await?;
            root.apply_stored(envelope)?;
        }
        Ok(root)
    }

    /// How often [`execute`](Self::execute) decides a command before it
    /// gives up on a stream other writers keep changing.
    pub const EXECUTE_ATTEMPTS: u32 = 3;

    /// Loads `id`, runs `command` and saves (and publishes) the events it
    /// decides: a command in one call. When another writer saved first
    /// ([`Error::Concurrency`]), it loads again and decides again, at most
    /// [`EXECUTE_ATTEMPTS`](Self::EXECUTE_ATTEMPTS) times in all; then the
    /// conflict is returned. A rejected command
    /// ([`CommandError::Rejected`], the aggregate's own error) is returned
    /// at once and saves nothing.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> std::result::Result<Vec<EventEnvelope>, CommandError<A::Error>> {
        let mut attempt = 1;
        loop {
            let mut root = self.load(id).await?;
            root.execute(command.clone())?;
            match self.save(&mut root).await {
                Err(Error::Concurrency { .. }) if attempt < Self::EXECUTE_ATTEMPTS => {
                    tracing::debug!(id, attempt, "concurrent save; deciding the command again");
                    attempt += 1;
                }
                saved => return Ok(saved?),
            }
        }
    }

    /// Runs `command` once per `ctx.causation_id` (a command id, required):
    /// when the stream already holds an event caused by it, the command was
    /// applied before and nothing is done (`Ok` with no events); otherwise
    /// as [`execute`](Self::execute), the events stamped with `ctx`. A
    /// command sent again after a crash (a process manager's, whose id is
    /// derived from its input) is applied once. A command that decides no
    /// events leaves no mark, and is decided again when sent again.
    pub async fn execute_once(
        &self,
        id: &str,
        command: A::Command,
        ctx: &SaveContext,
    ) -> std::result::Result<Vec<EventEnvelope>, CommandError<A::Error>> {
        let Some(command_id) = ctx.causation_id.as_deref() else {
            return Err(Error::config(
                "SaveContext.causation_id: execute_once needs the command's id as the causation id",
            )
            .into());
        };
        let stream = Self::stream_of(id);
        let mut attempt = 1;
        loop {
            let mut events = self.store.read_stream(&stream, 1).await?;
            if events
                .iter()
                .any(|e| e.causation_id.as_deref() == Some(command_id))
            {
                tracing::debug!(id, command_id, "command already applied; not applied again");
                return Ok(Vec::new());
            }
            let mut root = AggregateRoot::<A>::new(id);
            for envelope in &mut events {
                self.open_stored(&mut root, envelope).await?;
                root.apply_stored(envelope)?;
            }
            root.execute(command.clone())?;
            match self.save_with(&mut root, ctx).await {
                Err(Error::Concurrency { .. }) if attempt < Self::EXECUTE_ATTEMPTS => {
                    attempt += 1;
                }
                saved => return Ok(saved?),
            }
        }
    }

    /// Saves the aggregate's new events; see [`save_with`](Self::save_with).
    pub async fn save(&self, root: &mut AggregateRoot<A>) -> Result<Vec<EventEnvelope>> {
        self.save_with(root, &SaveContext::default()).await
    }

    /// Appends the aggregate's uncommitted events, expecting the stream to
    /// be at the version it was loaded at, then publishes them.
    ///
    /// On [`Error::Concurrency`] nothing was stored: load again and retry the
    /// command ([`execute`](Self::execute) does). On [`Error::PublishAfterAppend`] the events *are* stored
    /// (the root is updated) but the bus did not take them.
    pub async fn save_with(
        &self,
        root: &mut AggregateRoot<A>,
        ctx: &SaveContext,
    ) -> Result<Vec<EventEnvelope>> {
        if root.uncommitted.is_empty() {
            return Ok(Vec::new());
        }
        let stream = Self::stream_of(&root.id);
        let span =
            tracing::info_span!("eventsource.save", %stream, events = root.uncommitted.len());
        let mut envelopes = Vec::with_capacity(root.uncommitted.len());
        let mut subjects = Vec::new();
        for (event, version) in root.uncommitted.iter().zip(root.version + 1..) {
            let mut env = EventEnvelope::new(root.id.clone(), version, event)?;
            env.correlation_id.clone_from(&ctx.correlation_id);
            env.causation_id.clone_from(&ctx.causation_id);
            env.metadata.extend(ctx.metadata.clone());
            crate::trace::stamp(&mut env);
            if let Some(declared) = event.personal_data() {
                let Some(shredder) = &self.shredder else {
                    return Err(Error::PersonalData {
                        event_id: env.event_id.to_string(),
                        reason: format!(
                            "event `{}` declares personal data and the repository has no \
                             Shredder (Repository::with_shredder); nothing was stored",
                            env.routing_key()
                        ),
                    });
                };
                shredder.seal(&mut env, &declared).await?;
                if env.metadata.contains_key(PERSONAL_HEADER) {
                    subjects.push(declared.subject);
                }
            }
            envelopes.push(env);
        }
        let expected = if root.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(root.version)
        };
        let appended = self
            .store
            .append(&stream, expected, &envelopes)
            .instrument(span.clone())
            .await?;
        root.version = appended.version;
        root.uncommitted.clear();
        root.subjects.extend(subjects);
        if let Some(bus) = &self.bus {
            bus.publish(&envelopes)
                .instrument(span)
                .await
                .map_err(|e| Error::PublishAfterAppend {
                    stream,
                    stored: envelopes.len(),
                    source: Box::new(e),
                })?;
        }
        Ok(envelopes)
    }
}
