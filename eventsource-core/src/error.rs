//! The one error type of `eventsource-core`.

use std::time::Duration;

/// A boxed error that can cross task boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the core and in the backends built on it.
///
/// Backends map their client library's errors into [`Error::Backend`], naming
/// the backend and the stream, queue or topic involved, so that a message
/// says *where* it failed. Credentials never appear in these messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was rejected at construction time.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An event could not be turned into (or read back from) its wire form.
    #[error("cannot decode event `{event_type}` ({event_id}) as {target}: {reason}")]
    Decode {
        /// The event's id, as text (or `unknown` when even that was unreadable).
        event_id: String,
        /// The event type the envelope announced.
        event_type: String,
        /// The Rust type decoding was attempted into.
        target: &'static str,
        /// What the decoder said.
        reason: String,
    },

    /// An event could not be serialized into an envelope.
    #[error("cannot encode event `{event_type}`: {reason}")]
    Encode {
        /// The event's type.
        event_type: String,
        /// What the encoder said.
        reason: String,
    },

    /// Optimistic concurrency check failed on append.
    #[error(
        "concurrency conflict on stream `{stream}`: expected {expected}, found version {actual}"
    )]
    Concurrency {
        /// The stream appended to.
        stream: String,
        /// What the caller expected, as text (`no stream`, `version 3`, ...).
        expected: String,
        /// The stream's current version (0 when it does not exist).
        actual: u64,
    },

    /// An event with the same id is already stored; the batch was rejected.
    #[error("duplicate event id {event_id} in stream `{stream}`; the batch was not appended")]
    DuplicateEvent {
        /// The stream appended to.
        stream: String,
        /// The id that already exists.
        event_id: String,
    },

    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `dead letter 42`.
        what: String,
    },

    /// The bus (or store) was shut down; nothing more is accepted.
    #[error("the {0} has been shut down")]
    ShutDown(&'static str),

    /// A subscription joined a consumer group whose members use another
    /// filter. Every member of a group must use the same filter: a member
    /// acks what its own filter skips, so a narrower member would drop
    /// events the others' filter selects.
    #[error(
        "consumer group `{group}` already has members with filter {existing}; \
         a member with filter {requested} is refused (every member of a group must use \
         the same filter: use another group name, or stop the group's members first)"
    )]
    GroupFilterConflict {
        /// The consumer group.
        group: String,
        /// The filter of the group's running members.
        existing: String,
        /// The filter of the refused subscription.
        requested: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: String,
        /// How long it was given.
        after: Duration,
    },

    /// The events were stored, but publishing them to the bus failed.
    ///
    /// They are safe in the store; publish them again (or use the outbox,
    /// which does it for you).
    #[error("{stored} event(s) were stored in `{stream}` but publishing failed: {source}")]
    PublishAfterAppend {
        /// The stream the events were appended to.
        stream: String,
        /// How many events were appended.
        stored: usize,
        /// Why the publish failed.
        #[source]
        source: Box<Error>,
    },

    /// An aggregate rejected a command.
    #[error("command rejected by {aggregate_type} `{aggregate_id}`: {source}")]
    Command {
        /// The aggregate's type.
        aggregate_type: &'static str,
        /// The aggregate's id.
        aggregate_id: String,
        /// The aggregate's own error.
        #[source]
        source: BoxError,
    },

    /// A broker or database reported an error.
    #[error("{backend}: {context}: {source}")]
    Backend {
        /// Which backend (`redis`, `rabbitmq`, `kafka`, `postgres`, ...).
        backend: &'static str,
        /// What was being done and on which stream, queue or topic.
        context: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Shorthand for [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(
        backend: &'static str,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            context: context.into(),
            source: source.into(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`,
/// for logs and error messages.
///
/// ```
/// use eventsource_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:guest@localhost:5672/%2f"), "amqp://guest:***@localhost:5672/%2f");
/// assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
/// assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
