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

    /// An event was written at a schema version newer than the Rust type
    /// decoding it knows: its producer was upgraded before this consumer
    /// (a rolling deploy). Not a broken event: a consumer group parks it
    /// (dead-letter kind [`NewerVersion`](crate::FailureKind::NewerVersion))
    /// until a member that knows the version takes it.
    #[error(
        "event `{aggregate_type}.{event_type}` ({event_id}) is at schema version {version}, \
         newer than the {known} that {target} knows: upgrade this consumer"
    )]
    NewerVersion {
        /// The event's id, as text.
        event_id: String,
        /// The envelope's aggregate type.
        aggregate_type: String,
        /// The envelope's event type.
        event_type: String,
        /// The schema version the event was written at.
        version: u32,
        /// The newest schema version the decoding type knows.
        known: u32,
        /// The Rust type decoding was attempted into.
        target: &'static str,
    },

    /// An event did not pass its schema ([`Schemas`](crate::schema::Schemas)):
    /// nothing of the batch was published.
    #[error("event `{routing_key}` of {aggregate_id} ({event_id}) is invalid: {reason}; nothing was published")]
    InvalidEvent {
        /// `{aggregate_type}.{event_type}`.
        routing_key: String,
        /// The aggregate.
        aggregate_id: String,
        /// The event.
        event_id: uuid::Uuid,
        /// What the schema objects to.
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

    /// The broker (or database) connected to does not keep what it
    /// acknowledges, and the config says `durability = require`.
    #[error(
        "{backend}: the broker's settings break the durability contract (durability = require): {}",
        risks.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Durability {
        /// The backend.
        backend: &'static str,
        /// Each setting found, with what it costs.
        risks: Vec<crate::DurabilityRisk>,
    },

    /// An event's personal data could not be sealed or opened: its
    /// header is not readable, a field was changed or moved, or an event
    /// that declares personal data met a repository without a
    /// [`Shredder`](crate::personal::Shredder). Retrying cannot help.
    #[error("personal data of event {event_id}: {reason}")]
    PersonalData {
        /// The event's id.
        event_id: String,
        /// What is wrong.
        reason: String,
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

/// What [`Error::Config`]'s message starts with.
const CONFIG_PREFIX: &str = "invalid configuration: ";

impl Error {
    /// Shorthand for [`Error::Config`]. The message is passed through
    /// [`redact_text`], so a value a deserializer quotes (a URL with a
    /// password in the wrong field) is never echoed with its secret, and
    /// a message that already says `invalid configuration: ` (one error
    /// wrapped in another) does not say it twice.
    pub fn config(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut message = redact_text(&message);
        while let Some(rest) = message.strip_prefix(CONFIG_PREFIX) {
            message = rest.to_owned();
        }
        let message = message.replace(&format!(": {CONFIG_PREFIX}"), ": ");
        Error::Config(message)
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(
        backend: &'static str,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        let context = context.into();
        // The message starts with the backend's name already.
        let context = match context
            .strip_prefix(backend)
            .and_then(|c| c.strip_prefix(": "))
        {
            Some(rest) => rest.to_owned(),
            None => context,
        };
        Error::Backend {
            backend,
            context,
            source: source.into(),
        }
    }

    /// [`Error::GroupFilterConflict`] from the group and the two filters'
    /// canonical forms ([`EventFilter::canonical`](crate::EventFilter::canonical)).
    pub fn group_filter_conflict(group: &str, existing: &str, requested: &str) -> Self {
        Error::GroupFilterConflict {
            group: group.to_owned(),
            existing: format!("`{existing}`"),
            requested: format!("`{requested}`"),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }
}

/// What running a command can fail with: the aggregate's own rejection,
/// typed so that `match` reaches the domain error, or anything else.
///
/// `?` turns it into [`Error`] ([`Error::Command`] for a rejection), so
/// code that does not care which keeps using the crate's error.
///
/// ```
/// # use eventsource_core::{CommandError, Error};
/// #[derive(Debug, thiserror::Error)]
/// enum AccountError {
///     #[error("insufficient funds: balance {balance}")]
///     InsufficientFunds { balance: u64 },
/// }
/// fn explain(e: CommandError<AccountError>) -> String {
///     match e {
///         CommandError::Rejected { error: AccountError::InsufficientFunds { balance }, .. } => {
///             format!("only {balance} left")
///         }
///         CommandError::Failed(other) => other.to_string(),
///     }
/// }
/// let rejected = CommandError::Rejected {
///     aggregate_type: "Account",
///     aggregate_id: "acc-1".into(),
///     error: AccountError::InsufficientFunds { balance: 3 },
/// };
/// assert_eq!(explain(rejected), "only 3 left");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The aggregate rejected the command; nothing was recorded or saved.
    #[error("command rejected by {aggregate_type} `{aggregate_id}`: {error}")]
    Rejected {
        /// The aggregate's type.
        aggregate_type: &'static str,
        /// The aggregate's id.
        aggregate_id: String,
        /// The aggregate's own error.
        #[source]
        error: E,
    },
    /// Loading, saving or publishing failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl<E> CommandError<E> {
    /// The aggregate's own error, if the command was rejected.
    pub fn rejection(&self) -> Option<&E> {
        match self {
            CommandError::Rejected { error, .. } => Some(error),
            CommandError::Failed(_) => None,
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<CommandError<E>> for Error {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected {
                aggregate_type,
                aggregate_id,
                error,
            } => Error::Command {
                aggregate_type,
                aggregate_id,
                source: Box::new(error),
            },
            CommandError::Failed(e) => e,
        }
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`) with
/// `***`, for logs, errors and `Debug`; a user name given alone (a token)
/// is masked whole, and so is the value of every query parameter whose
/// name means a secret (`password`, `pass`, `pwd`, `secret`, `token`,
/// `key`, `sslpassword`, and any name ending in `password`, `secret` or
/// `token`: sqlx and the broker clients read them).
///
/// A URL the `url` crate reads is redacted through it. One it cannot read
/// (a password with an unescaped `/`, or no `//`) is still redacted:
/// everything between the scheme and the last `@` counts as credentials.
///
/// ```
/// use eventsource_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:guest@localhost:5672/%2f"), "amqp://guest:***@localhost:5672/%2f");
/// assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
/// assert_eq!(redact_url("redis://u:s3c/ret@127.0.0.1:1"), "redis://u:***@127.0.0.1:1");
/// assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
/// assert_eq!(
///     redact_url("postgres://u@h/db?sslmode=require&password=hunter2"),
///     "postgres://***@h/db?sslmode=require&password=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    redact_query(&redact_userinfo(url))
}

/// Whether a URL query parameter of this name carries a secret (as
/// [`redact_url`] decides): `password`, `pass`, `pwd`, `secret`, `token`,
/// `key`, `sslpassword`, and any name ending in `password`, `passwd`,
/// `secret` or `token`, in any case.
pub fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "password" | "pass" | "pwd" | "secret" | "token" | "key" | "sslpassword"
    ) || ["password", "secret", "token", "passwd"]
        .iter()
        .any(|end| name.ends_with(end))
}

/// Masks the value of every secret query parameter (after the first `?`).
fn redact_query(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(&percent_decoded(name)) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{head}?{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `%XX` escapes decoded (a parameter's name, to recognize it however it
/// is written); invalid escapes are kept as they are.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Masks the credentials of every URL in `text`, for messages that may
/// quote a value (a deserializer's `invalid type: string "…"`): each
/// double-quoted, single-quoted or back-quoted span, and each
/// whitespace-separated word, that holds a URL with a password, a user
/// name or a secret query parameter is shown as [`redact_url`] shows it.
///
/// ```
/// use eventsource_core::redact_text;
/// let shown = redact_text(r#"invalid type: string "redis://:pw@h:1", expected usize"#);
/// assert_eq!(shown, r#"invalid type: string "redis://:***@h:1", expected usize"#);
/// ```
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['"', '\'', '`']) {
        let quote = rest[start..].chars().next().expect("found");
        let body_start = start + 1;
        // The closing quote: the next one not escaped with a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest[body_start..].char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => {
                    end = Some(body_start + i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else { break };
        out.push_str(&redact_words(&rest[..start]));
        out.push(quote);
        out.push_str(&redact_span(&rest[body_start..end]));
        out.push(quote);
        rest = &rest[end + 1..];
    }
    out.push_str(&redact_words(rest));
    out
}

/// A quoted span: redacted whole when it may be a URL with credentials
/// or secret parameters.
fn redact_span(span: &str) -> String {
    if may_carry_secrets(span) {
        redact_url(span)
    } else {
        span.to_owned()
    }
}

/// Unquoted text: each word that may be a URL with secrets is redacted.
fn redact_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if may_carry_secrets(word) {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
    }
    out
}

/// A scheme (`x:`) and user information or a query: what a URL with a
/// secret has (a lone `@` in prose does not).
fn may_carry_secrets(text: &str) -> bool {
    text.contains(':') && (text.contains('@') || text.contains('?'))
}

/// The user information of a URL masked (see [`redact_url`]).
fn redact_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let masked = if parsed.password().is_some() {
                parsed.set_password(Some("***"))
            } else if !parsed.username().is_empty() {
                parsed.set_username("***")
            } else {
                // No credentials the parser saw: the fallback still masks
                // up to an `@` found elsewhere (a password it misread).
                Err(())
            };
            match masked {
                Ok(()) => parsed.to_string().replace("%2A%2A%2A", "***"),
                Err(()) => redact_unparsed(url),
            }
        }
        _ => redact_unparsed(url),
    }
}

/// Masks everything between the scheme (and its `//`, if any) and the
/// last `@`: the credentials of a URL the parser could not read.
fn redact_unparsed(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = match url.find("://") {
        Some(i) => i + 3,
        None => url.find(':').map_or(0, |i| i + 1),
    };
    if start > at {
        return url.to_owned();
    }
    let userinfo = &url[start..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{masked}{}", &url[..start], &url[at..])
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod redact_tests {
    use super::{redact_text, redact_url};

    #[test]
    fn no_password_survives_redaction() {
        let cases = [
            ("redis://u:s3c/ret@127.0.0.1:1", "s3c/ret"),
            ("redis://:s3cret@127.0.0.1:6379/0", "s3cret"),
            ("amqp://guest:pa/ss@127.0.0.1:5672/%2f", "pa/ss"),
            ("postgres://app:hunter2@db:5432/test", "hunter2"),
            (
                "postgres://app:hun/ter2@db:5432/test?sslmode=disable",
                "hun/ter2",
            ),
            ("redis:u:s3cret@127.0.0.1", "s3cret"),
            ("kafka://u:s3cret@host:9092", "s3cret"),
            ("redis://t0ken@host", "t0ken"),
            ("sqlite://u:s3cret@/tmp/x.db", "s3cret"),
        ];
        for (url, secret) in cases {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(shown.contains("***"), "{url} shown as {shown}");
        }
        for plain in [
            "redis://127.0.0.1:6379",
            "memory://",
            "sqlite::memory:",
            "amqp://host/%2f",
            "postgres://h/db?sslmode=require&application_name=x",
            "sqlite://events.db?mode=rwc",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    /// Query passwords (sqlx reads `?password=`), in every spelling, and
    /// passwords with the characters URLs treat specially.
    #[test]
    fn query_secrets_and_awkward_passwords_are_masked() {
        let secret = "s3cret";
        let shapes = [
            format!("postgres://u@h/db?password={secret}"),
            format!("postgres://h/db?sslmode=disable&password={secret}&x=1"),
            format!("postgres://h/db?PassWord={secret}"),
            format!("postgres://h/db?pass%77ord={secret}"),
            format!("postgres://h/db?sslpassword={secret}"),
            format!("redis://h/0?token={secret}"),
            format!("amqp://h/%2f?auth_token={secret}#frag"),
            format!("kafka://h:9092?sasl.password={secret}"),
            format!("redis://h?pwd={secret}&key={secret}&secret={secret}&pass={secret}"),
        ];
        for url in &shapes {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(shown.contains("=***"), "{url} shown as {shown}");
        }
        for password in ["a/b", "a@b", "a%b", "a:b", "a#b", "a?b", "pässwörd", "a b"] {
            let url = format!("redis://user:{password}{secret}@127.0.0.1:1/0");
            let shown = redact_url(&url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            let text = format!("invalid type: string {url:?}, expected usize");
            let shown = redact_text(&text);
            assert!(!shown.contains(secret), "{text} shown as {shown}");
            assert!(shown.contains("expected usize"), "{shown}");
        }
    }

    /// `rabbitmq: rabbitmq: connecting …` and `invalid configuration: …
    /// invalid configuration: …` said their prefix twice.
    #[test]
    fn a_prefix_is_said_once() {
        let e = crate::Error::backend("rabbitmq", "rabbitmq: connecting to h", "refused");
        assert_eq!(e.to_string(), "rabbitmq: connecting to h: refused");
        let inner = crate::Error::config("redis: block must be between 1ms and 1m");
        let outer = crate::Error::config(format!("`f.toml`: {inner}"));
        assert_eq!(
            outer.to_string(),
            "invalid configuration: `f.toml`: redis: block must be between 1ms and 1m"
        );
    }

    #[test]
    fn text_keeps_what_is_not_a_url_with_credentials() {
        for plain in [
            "invalid type: string \"abc\", expected usize",
            "unknown field `concurency`, expected one of `retry`",
            "it's a \"quoted\" word and an unclosed \" quote",
            "connecting to redis://127.0.0.1:6379/0 failed",
            "percent-encode `/`, `@` or `:` in a password",
        ] {
            assert_eq!(redact_text(plain), plain);
        }
        assert_eq!(
            redact_text("connecting to redis://u:pw@h:1 failed: 'amqp://g:pw@h' `x`"),
            "connecting to redis://u:***@h:1 failed: 'amqp://g:***@h' `x`"
        );
    }
}
