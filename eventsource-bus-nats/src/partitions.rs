//! Ownership on the server: the namespace's partition count, and the
//! leases that make one member at a time the owner of a partition (or,
//! with `single_active_consumer`, of a whole group). Which partitions a
//! member should own is `eventsource_core::driver::assigned_partitions`.
//!
//! The count is in the events stream's description, written when the
//! stream is made. A lease is the subject `{namespace}.leases.{G}.{p}`
//! (`.all` for a single active member) of the register stream, holding
//! its owner's name: taken by a publish that expects the subject to be
//! empty, renewed every `progress_interval` by one that expects the last
//! renewal (`Nats-Expected-Last-Subject-Sequence`: the server refuses it
//! when another member took the lease meanwhile), lapsing `ack_wait`
//! after its last renewal (the stream's `max_age`), purged on a clean
//! release.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, Stream};
use eventsource_core::{Error, Result};

use crate::client::{nats_err, Client};
use crate::config::escape;

/// What the events stream's description says of its partitions.
fn description(partitions: Option<u32>) -> String {
    match partitions {
        Some(n) => format!("eventsource events; partitions: {n}"),
        None => "eventsource events; unpartitioned".to_owned(),
    }
}

/// The partition count a description records; `None`: unpartitioned
/// (or a stream this bus did not describe).
fn recorded(description: Option<&str>) -> Option<u32> {
    description?
        .split_once("partitions: ")?
        .1
        .trim()
        .parse()
        .ok()
}

/// Makes the events stream with the configured partition count, or checks
/// the count of the one there: refuses another count, and a partitioned
/// bus on a namespace that holds unpartitioned events (one that holds
/// none yet takes the count).
pub(crate) async fn check_count(client: &Client) -> Result<()> {
    let config = &client.config;
    let name = config.events_stream();
    let wanted = config.partitions;
    let what = || format!("creating stream `{name}` on {}", config.redacted_url());
    let stream = client
        .js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            description: Some(description(wanted)),
            subjects: vec![
                config.events_subject(),
                format!("{}.*", config.events_subject()),
            ],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            max_messages: config.max_messages.map_or(-1, |m| m as i64),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err(what(), e))?;
    // As the server answered the lookup (or the creation): no second request.
    let info = stream.cached_info();
    let stored = recorded(info.config.description.as_deref());
    let ns = &config.namespace;
    match (stored, wanted) {
        (None, None) => Ok(()),
        (Some(s), Some(w)) if s == w => Ok(()),
        (None, Some(n)) if info.state.messages == 0 => {
            let mut updated = info.config.clone();
            updated.description = Some(description(Some(n)));
            client
                .js
                .update_stream(updated)
                .await
                .map_err(|e| nats_err(format!("recording {n} partitions on stream `{name}`"), e))?;
            Ok(())
        }
        (None, Some(n)) => Err(Error::config(format!(
            "nats: namespace `{ns}` holds unpartitioned events (stream `{name}`); a bus with \
             partitions = {n} would not see them and would break their order. Use a new \
             namespace for the partitioned layout, or leave `partitions` unset"
        ))),
        (Some(s), wanted) => Err(Error::config(format!(
            "nats: namespace `{ns}` is partitioned into {s} partitions (stream `{name}`), \
             this bus is configured with {}: changing the count would move aggregates between \
             partitions and break their order. Configure partitions = {s}, or use a new namespace",
            wanted.map_or_else(|| "none (unpartitioned)".to_owned(), |n| n.to_string()),
        ))),
    }
}

/// A lease's subject: partition `p` of `group`, or the whole group.
pub(crate) fn lease_subject(client: &Client, group: &str, p: Option<u32>) -> String {
    let which = p.map_or_else(|| "all".to_owned(), |p| p.to_string());
    format!(
        "{}.leases.{}.{which}",
        client.config.namespace,
        escape(group)
    )
}

/// A member's hold on leases, in the register stream.
pub(crate) struct Lease<'a> {
    pub(crate) client: &'a Client,
    pub(crate) register: &'a Stream,
    pub(crate) owner: &'a str,
}

impl Lease<'_> {
    /// Writes the owner's name on `subject` if its last message is
    /// `expected` (0: none): the sequence written, or `None` when the
    /// server refused (someone else wrote since).
    async fn write(&self, subject: &str, expected: u64) -> Result<Option<u64>> {
        let what = || format!("writing lease `{subject}`");
        let message = PublishMessage::build()
            .payload(self.owner.to_owned().into())
            .expected_last_subject_sequence(expected);
        let sent = self
            .client
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| nats_err(what(), e))?
            .await;
        match sent {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(nats_err(what(), e)),
        }
    }

    /// The lease's holder and its sequence, if anyone holds it.
    async fn holder(&self, subject: &str) -> Result<Option<(String, u64)>> {
        match self.register.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some((
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.sequence,
            ))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_err(format!("reading lease `{subject}`"), e)),
        }
    }

    /// Takes the lease if no one holds it (or renews it if we do):
    /// the sequence to renew from, or `None` when another member holds it.
    pub(crate) async fn take(&self, subject: &str) -> Result<Option<u64>> {
        match self.holder(subject).await? {
            None => self.write(subject, 0).await,
            Some((holder, seq)) if holder == self.owner => self.write(subject, seq).await,
            Some(_) => Ok(None),
        }
    }

    /// Renews our hold (last written at `seq`): the new sequence, or
    /// `None` when it was lost (it lapsed and another member took it).
    pub(crate) async fn renew(&self, subject: &str, seq: u64) -> Result<Option<u64>> {
        self.write(subject, seq).await
    }

    /// Gives the lease up if we still hold it. (Whatever its last renewal:
    /// the member's progress loop renews while its reader releases.)
    pub(crate) async fn release(&self, subject: &str) -> Result<()> {
        if let Some((holder, _)) = self.holder(subject).await? {
            if holder == self.owner {
                self.register
                    .purge()
                    .filter(subject)
                    .await
                    .map_err(|e| nats_err(format!("releasing lease `{subject}`"), e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_records_the_count() {
        assert_eq!(recorded(Some(&description(Some(16)))), Some(16));
        assert_eq!(recorded(Some(&description(None))), None);
        assert_eq!(recorded(None), None);
        assert_eq!(recorded(Some("someone else's stream")), None);
    }
}
