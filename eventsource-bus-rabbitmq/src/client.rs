//! The publishing session every part of a RabbitMQ bus shares, and the
//! confirmed publish they all use (below the consumer and the DLQ; above
//! only the topology and the config).

use std::collections::BTreeSet;
use std::time::Duration;

use eventsource_core::driver::{Counters, PublishTarget, SendError};
use eventsource_core::{Error, Result};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use parking_lot::Mutex;

use crate::topology::{amqp_err, short, Session, BACKEND};
use crate::RabbitBusConfig;

/// The publishing session and counters behind a [`RabbitBus`](crate::RabbitBus).
pub(crate) struct Client {
    pub(crate) config: RabbitBusConfig,
    pub(crate) publisher: tokio::sync::Mutex<Option<Session>>,
    pub(crate) stats: Counters,
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
            stats: Counters::new(BACKEND),
            groups: Mutex::new(BTreeSet::new()),
        })
    }
}
