//! Connections to the broker (a session: a connection and a channel,
//! bounded by `connect_timeout`), the publishing session every part of a
//! RabbitMQ bus shares, and the confirmed publish they all use (the
//! bottom of the crate: it imports only the config).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::driver::{Counters, PublishTarget, SendError};
use eventsource_core::{Error, Result};
use lapin::options::BasicPublishOptions;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use parking_lot::Mutex;

use crate::{ExchangeType, RabbitBusConfig};

pub(crate) const BACKEND: &str = "rabbitmq";

/// Maps a lapin error into the core error, saying what was being done.
pub(crate) fn amqp_err(context: impl Into<String>, e: lapin::Error) -> Error {
    Error::backend(BACKEND, context, e)
}

/// A connection and a channel on it.
pub(crate) struct Session {
    pub(crate) connection: Connection,
    pub(crate) channel: Channel,
    /// A consumer member's place in its group's register (see
    /// [`join_group`](crate::membership::join_group)); it lasts as long as the connection.
    pub(crate) presence: Option<lapin::Consumer>,
}

impl Session {
    /// Connects and opens a channel, with publisher confirms if `confirm`.
    /// Bounded by `connect_timeout` as a whole.
    pub(crate) async fn open(config: &RabbitBusConfig, confirm: bool) -> Result<Session> {
        within_connect_timeout(config, || Self::open_unbounded(config, confirm)).await
    }

    async fn open_unbounded(config: &RabbitBusConfig, confirm: bool) -> Result<Session> {
        let connection = connect(config).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_err("opening a channel", e))?;
        if confirm {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| amqp_err("enabling publisher confirms", e))?;
        }
        declare_exchange(&channel, config).await?;
        Ok(Session {
            connection,
            channel,
            presence: None,
        })
    }

    /// Whether the channel can still be used.
    pub(crate) fn is_usable(&self) -> bool {
        self.channel.status().connected()
    }

    /// Tries to make this connection the holder of the exclusive,
    /// auto-delete queue `name` (a lock the broker frees when the
    /// connection closes), on a channel of its own, since a refused
    /// declare closes its channel: the channel when it now holds it, the
    /// broker's refusal otherwise (`RESOURCE_LOCKED` while another
    /// connection holds it).
    pub(crate) async fn claim_exclusive(
        &self,
        name: &str,
    ) -> Result<std::result::Result<Channel, lapin::Error>> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(|e| amqp_err("opening a channel", e))?;
        let declared = channel
            .queue_declare(
                short("queue", name)?,
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        Ok(declared.map(|_| channel))
    }

    /// Closes the connection (unacked messages go back to their queues).
    pub(crate) async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

/// What connecting to the broker in `config` says when it fails.
pub(crate) fn connecting(config: &RabbitBusConfig) -> String {
    format!(
        "rabbitmq: connecting to {} (is RabbitMQ running? start it with `rabbitmq-server -detached`)",
        config.redacted_url()
    )
}

/// Opens a connection (unbounded: callers wrap it in
/// [`within_connect_timeout`]) to the first node of the URL's list that
/// answers. With several nodes, each is given at most one
/// [`attempt`](attempt_bound)'s time, so that a node that accepts and
/// then stalls does not keep a connection from the others.
pub(crate) async fn connect(config: &RabbitBusConfig) -> Result<Connection> {
    let nodes = config.node_urls();
    if let [node] = nodes.as_slice() {
        return Connection::connect(node, ConnectionProperties::default())
            .await
            .map_err(|e| amqp_err(connecting(config), e));
    }
    let mut failed = None;
    for (i, node) in nodes.iter().enumerate() {
        let what = || format!("{} (node {} of {})", connecting(config), i + 1, nodes.len());
        let connecting_to = Connection::connect(node, ConnectionProperties::default());
        let outcome = match tokio::time::timeout(attempt_bound(config), connecting_to).await {
            Ok(connected) => connected.map_err(|e| amqp_err(what(), e)),
            Err(_) => Err(Error::Timeout {
                operation: what(),
                after: attempt_bound(config),
            }),
        };
        match outcome {
            Ok(connection) => return Ok(connection),
            Err(e) => {
                tracing::debug!(node = i + 1, error = %e, "a rabbitmq node did not answer; trying the next");
                failed = Some(e);
            }
        }
    }
    Err(failed.unwrap_or_else(|| Error::config("rabbitmq: the url names no node")))
}

/// How long one connection attempt may stall before it is abandoned: a
/// third of `connect_timeout`, at least a second (see
/// [`within_connect_timeout`]).
fn attempt_bound(config: &RabbitBusConfig) -> Duration {
    (config.connect_timeout / 3)
        .max(Duration::from_secs(1))
        .min(config.connect_timeout)
}

/// Bounds `work` (which connects) by `connect_timeout`: a broker that
/// accepts and then stays silent fails with `Error::Timeout`.
///
/// An attempt that stalls is abandoned after a third of
/// `connect_timeout` (at least a second) and made again with a new
/// connection while time is left: under load a connection was seen
/// authenticated by the broker in 3 ms and then answered nothing more
/// for 30 s (the broker's log shows nothing for it until the client
/// closed it), while the next connection worked at once.
pub(crate) async fn within_connect_timeout<T, F, Fut>(
    config: &RabbitBusConfig,
    mut work: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    // Connecting to a list of nodes may spend an attempt on each.
    let attempt = attempt_bound(config) * config.node_urls().len().max(1) as u32;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                operation: connecting(config),
                after: config.connect_timeout,
            });
        }
        match tokio::time::timeout(attempt.min(left), work()).await {
            Ok(done) => return done,
            Err(_) => {
                tracing::debug!(url = %config.redacted_url(), ?attempt, "a connection attempt stalled; trying again with a new one");
            }
        }
    }
}

/// A short string, or a typed error naming `what` when longer than 255 bytes.
pub(crate) fn short(what: &str, s: &str) -> Result<ShortString> {
    ShortString::try_new(s)
        .map_err(|_| Error::config(format!("rabbitmq: {what} `{s}` is longer than 255 bytes")))
}

/// Declares the namespace's events exchange (every session does).
pub(crate) async fn declare_exchange(channel: &Channel, config: &RabbitBusConfig) -> Result<()> {
    let kind = match config.exchange_type {
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Fanout => ExchangeKind::Fanout,
    };
    let exchange = config.exchange();
    channel
        .exchange_declare(
            short("exchange", &exchange)?,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                // With expiring queues the exchange goes when its last binding does.
                auto_delete: config.queue_expires.is_some(),
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| amqp_err(format!("declaring exchange `{exchange}`"), e))
}

/// The publishing session and counters behind a [`RabbitBus`](crate::RabbitBus).
pub(crate) struct Client {
    pub(crate) config: RabbitBusConfig,
    pub(crate) publisher: tokio::sync::Mutex<Option<Session>>,
    pub(crate) stats: Arc<Counters>,
    /// Groups this bus has subscribed, for listing dead letters of all groups.
    pub(crate) groups: Mutex<BTreeSet<String>>,
}

/// One message to publish: where to, and what.
pub(crate) struct Outgoing<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: String,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Vec<u8>,
}

/// Refuses `m` when its properties cannot fit the connection's frame
/// limit (RabbitMQ's `frame_max`, 128 KiB by default): a permanent error
/// naming the limit, with nothing of the batch sent. The body may be any
/// size (it is split into frames); the headers may not.
fn too_large(m: &Outgoing<'_>, frame_max: usize) -> Result<()> {
    let size = crate::wire::content_header_size(&m.properties);
    if frame_max == 0 || size <= frame_max {
        return Ok(());
    }
    let text = crate::wire::headers_as_text(&m.properties);
    let attribute = |name: &str| {
        text.get(&format!("cloudEvents:{name}"))
            .cloned()
            .unwrap_or_default()
    };
    Err(Error::InvalidEvent {
        routing_key: m.routing_key.clone(),
        aggregate_id: attribute("subject"),
        event_id: attribute("id").parse().unwrap_or_default(),
        reason: format!(
            "its headers and metadata take about {size} bytes, and RabbitMQ carries them in one \
             frame of at most {frame_max} bytes (the connection's frame_max); put large values \
             in the payload"
        ),
    })
}

impl Client {
    /// Where a publish to `destination` goes, for its span and its errors.
    pub(crate) fn target<'a>(
        &'a self,
        destination: &'a str,
        redacted: &'a str,
    ) -> PublishTarget<'a> {
        PublishTarget::new(BACKEND, destination, redacted, self.config.publish_timeout)
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Publishes `messages` and waits for every confirm, reconnecting with
    /// backoff while the broker is unreachable, until `publish_timeout`
    /// (every wait, connect, publish and confirm, is bounded by it: a
    /// broker that hangs, on a memory alarm or a partition, must not hold
    /// the caller past it).
    pub(crate) async fn publish_confirmed(
        &self,
        target: &PublishTarget<'_>,
        messages: &[Outgoing<'_>],
    ) -> Result<()> {
        let what = format!("{} message(s)", messages.len());
        let sent = target.send(&what, || self.send_confirmed(messages)).await;
        self.drop_if_wedged(&sent);
        sent
    }

    /// After a publish that timed out, the session may be wedged: drops it
    /// so that the next publish opens another.
    pub(crate) fn drop_if_wedged(&self, sent: &Result<()>) {
        if let Err(Error::Timeout { .. }) = sent {
            if let Ok(mut publisher) = self.publisher.try_lock() {
                *publisher = None;
            }
        }
    }

    /// One try of [`publish_confirmed`](Self::publish_confirmed): a broken
    /// session is dropped so that the next try opens another.
    pub(crate) async fn send_confirmed(
        &self,
        messages: &[Outgoing<'_>],
    ) -> std::result::Result<(), SendError> {
        match self.try_publish(messages).await {
            Ok(()) => Ok(()),
            Err(e @ (Error::Config(_) | Error::InvalidEvent { .. })) => Err(SendError::Fatal(e)),
            Err(e) => {
                *self.publisher.lock().await = None;
                Err(SendError::Transient(e))
            }
        }
    }

    async fn try_publish(&self, messages: &[Outgoing<'_>]) -> Result<()> {
        let mut guard = self.publisher.lock().await;
        if !guard.as_ref().is_some_and(Session::is_usable) {
            *guard = Some(Session::open(&self.config, true).await?);
        }
        let session = guard.as_ref().expect("session just opened");
        // Checked before anything is sent: one message too large would be
        // a connection error, closing the session other publishes (and
        // dead-letter writes) share.
        let frame_max = session.connection.configuration().frame_max() as usize;
        for m in messages {
            too_large(m, frame_max)?;
        }
        let channel = &session.channel;
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let confirm = channel
                .basic_publish(
                    short("exchange", m.exchange)?,
                    short("routing key", &m.routing_key)?,
                    BasicPublishOptions::default(),
                    &m.body,
                    m.properties.clone(),
                )
                .await
                .map_err(|e| {
                    amqp_err(
                        format!(
                            "publishing to `{}` with key `{}`",
                            m.exchange, m.routing_key
                        ),
                        e,
                    )
                })?;
            confirms.push(confirm);
        }
        drop(guard);
        for (confirm, m) in confirms.into_iter().zip(messages) {
            match confirm.await {
                Ok(Confirmation::Nack(_)) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!(
                            "publishing to `{}` with key `{}`",
                            m.exchange, m.routing_key
                        ),
                        "the broker refused the message (nack)",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(amqp_err(
                        format!("waiting for the confirm of `{}`", m.routing_key),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Client {
    /// Connects, declares the exchange and checks publisher confirms work.
    pub(crate) async fn connect(config: RabbitBusConfig) -> Result<Client> {
        config.validate()?;
        let session = Session::open(&config, true).await?;
        Ok(Client {
            config,
            publisher: tokio::sync::Mutex::new(Some(session)),
            stats: Arc::new(Counters::new(BACKEND)),
            groups: Mutex::new(BTreeSet::new()),
        })
    }
}
