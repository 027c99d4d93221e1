//! Commands from process managers to aggregates: a registry of the
//! repositories that run them, each command applied once.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{Aggregate, CommandError, DomainEvent, HandlerError, Repository, SaveContext};

/// The id of the `index`-th command a process decided on the input with
/// id `input` in instance `instance` of process `process`: a UUID v5 of
/// those, so the same decision sends the same id however often it is
/// repeated.
pub fn command_id(process: &str, instance: &str, input: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("eventsource/command/{process}/{instance}/{input}/{index}").as_bytes(),
    )
}

/// Where a process manager's commands of one aggregate type are run.
/// Implemented by [`Repository`] for aggregates whose commands
/// deserialize; object-safe, held by [`Commands`].
#[async_trait]
pub trait CommandTarget: Send + Sync {
    /// The aggregate type it runs commands for.
    fn aggregate_type(&self) -> &'static str;

    /// Runs `command` on aggregate `id` once per command id
    /// (`ctx.causation_id`). A command the aggregate rejects is `Ok(false)`
    /// (deciding again rejects again: the process should record the
    /// rejection as an event if it must react); `Ok(true)` when applied now
    /// or before.
    async fn run(
        &self,
        id: &str,
        command: serde_json::Value,
        ctx: &SaveContext,
    ) -> Result<bool, HandlerError>;
}

#[async_trait]
impl<A: Aggregate> CommandTarget for Repository<A>
where
    A::Command: DeserializeOwned + Sync,
{
    fn aggregate_type(&self) -> &'static str {
        A::Event::AGGREGATE_TYPE
    }

    async fn run(
        &self,
        id: &str,
        command: serde_json::Value,
        ctx: &SaveContext,
    ) -> Result<bool, HandlerError> {
        let command: A::Command = serde_json::from_value(command).map_err(|e| {
            HandlerError::permanent(format!(
                "a command to {} `{id}` does not decode: {e}",
                A::Event::AGGREGATE_TYPE
            ))
        })?;
        match self.execute_once(id, command, ctx).await {
            Ok(_) => Ok(true),
            Err(CommandError::Rejected { error, .. }) => {
                tracing::warn!(
                    aggregate_type = A::Event::AGGREGATE_TYPE,
                    id,
                    error = %error,
                    "a process manager's command was rejected"
                );
                Ok(false)
            }
            Err(CommandError::Failed(e)) => Err(HandlerError::transient(e)),
        }
    }
}

/// The command targets a process runner sends to, by aggregate type.
#[derive(Clone, Default)]
pub struct Commands {
    targets: BTreeMap<&'static str, Arc<dyn CommandTarget>>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.targets.keys()).finish()
    }
}

impl Commands {
    /// No targets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `target` (a [`Repository`]) for its aggregate type.
    pub fn with(mut self, target: impl CommandTarget + 'static) -> Self {
        self.targets
            .insert(target.aggregate_type(), Arc::new(target));
        self
    }

    /// The target for `aggregate_type`.
    pub fn target(&self, aggregate_type: &str) -> Option<&Arc<dyn CommandTarget>> {
        self.targets.get(aggregate_type)
    }
}
