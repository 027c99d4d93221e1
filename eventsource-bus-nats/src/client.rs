//! The connection every part of a NATS bus shares, the streams it makes,
//! and the helpers they all use.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use eventsource_core::driver::Counters;
use eventsource_core::{redact_text, Error, Result};

use crate::NatsBusConfig;

pub(crate) const BACKEND: &str = "nats";

/// The server connection and counters behind a [`NatsBus`](crate::NatsBus).
pub(crate) struct Client {
    pub(crate) config: NatsBusConfig,
    pub(crate) nats: async_nats::Client,
    /// For JetStream's API (streams, consumers, reading letters).
    pub(crate) js: jetstream::Context,
    /// For publishing events: waits for a PubAck longer than
    /// `publish_timeout`, so that the publish pipeline's own deadline,
    /// which says what timed out, is what ends a publish to a hung server.
    pub(crate) publisher: jetstream::Context,
    pub(crate) stats: Arc<Counters>,
}

/// Maps a NATS error into the core error, saying what was being done (the
/// error's text is redacted: a connect error may quote the server URL).
pub(crate) fn nats_err(
    context: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::backend(BACKEND, context, redact_text(&e.to_string()))
}

impl Client {
    /// Connects (the bus then makes or checks the events stream).
    pub(crate) async fn connect(config: NatsBusConfig) -> Result<Self> {
        config.validate()?;
        let url = config.redacted_url();
        let (address, credentials) = split_credentials(&config.url);
        let options = match credentials {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::Token(token) => async_nats::ConnectOptions::with_token(token),
            Credentials::User(user, password) => {
                async_nats::ConnectOptions::with_user_and_password(user, password)
            }
        };
        let connect = options
            .connection_timeout(config.connect_timeout)
            .name("eventsource")
            .connect(address.as_str());
        let nats = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(nats)) => nats,
            Ok(Err(e)) => {
                use async_nats::ConnectErrorKind::{Authentication, AuthorizationViolation};
                let hint = match e.kind() {
                    Authentication | AuthorizationViolation => {
                        " (the server refused the URL's credentials)"
                    }
                    _ => {
                        " (is NATS running with JetStream? start it with `nats-server -js`, \
                         or ./scripts/test.sh)"
                    }
                };
                return Err(nats_err(format!("connecting to {url}{hint}"), e));
            }
            Err(_) => {
                return Err(Error::backend(
                    BACKEND,
                    format!("connecting to {url}"),
                    format!(
                        "no answer within connect_timeout ({:?})",
                        config.connect_timeout
                    ),
                ))
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(config.connect_timeout.max(Duration::from_secs(5)))
            .build(nats.clone());
        let publisher = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout + Duration::from_secs(1))
            .build(nats.clone());
        let client = Client {
            config,
            nats,
            js,
            publisher,
            stats: Arc::new(Counters::new(BACKEND)),
        };
        Ok(client)
    }

    /// Makes stream `name` on `subject` (file storage) unless it exists.
    pub(crate) async fn ensure_stream(
        &self,
        name: String,
        subject: String,
    ) -> Result<stream::Stream> {
        let config = &self.config;
        let what = format!("creating stream `{name}` on {}", config.redacted_url());
        self.js
            .get_or_create_stream(stream::Config {
                name,
                subjects: vec![subject],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: config.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err(what, e))
    }

    /// Stream `name` if it exists.
    pub(crate) async fn stream(&self, name: &str) -> Result<Option<stream::Stream>> {
        match self.js.get_stream(name).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if not_found(&e.kind()) => Ok(None),
            Err(e) => Err(nats_err(format!("looking up stream `{name}`"), e)),
        }
    }
}

/// Whether a stream lookup failed because the stream does not exist.
fn not_found(kind: &jetstream::context::GetStreamErrorKind) -> bool {
    matches!(kind, jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// What a URL's user information says.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    /// `nats://token@host`.
    Token(String),
    /// `nats://user:password@host`.
    User(String, String),
}

/// The server address without user information or query (async-nats
/// logs the address it connects to), and the credentials apart,
/// percent-decoded.
fn split_credentials(url: &str) -> (String, Credentials) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (url.to_owned(), Credentials::None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(parsed.username());
    let credentials = match parsed.password().map(decode) {
        Some(password) => Credentials::User(user, password),
        None if !user.is_empty() => Credentials::Token(user),
        None => Credentials::None,
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    (parsed.to_string(), credentials)
}

#[cfg(test)]
mod tests {
    use super::{split_credentials, Credentials};

    #[test]
    fn credentials_leave_the_address_async_nats_logs() {
        let (address, credentials) = split_credentials("nats://us%40r:p%2Fw@h:4222?x=y");
        assert_eq!(address, "nats://h:4222");
        assert_eq!(credentials, Credentials::User("us@r".into(), "p/w".into()));
        let (address, credentials) = split_credentials("nats://t0ken@h:4222");
        assert_eq!(address, "nats://h:4222");
        assert_eq!(credentials, Credentials::Token("t0ken".into()));
        assert_eq!(split_credentials("nats://h:4222").1, Credentials::None);
    }
}
