//! A group's register of live members and their filter, kept on the
//! server so that members in other processes see it too: a member joins
//! only if every live member uses its filter (a member acks what its own
//! filter skips, so two filters in one group would lose events).
//!
//! The register is the stream `{NS}-members` (which holds the leases of
//! `partitions.rs` too), one subject per member,
//! `{namespace}.members.{G}.{member}`, holding its filter's canonical form;
//! the stream keeps one message per subject for `ack_wait` (`max_age`).
//! Renewed every `progress_interval`, a member's entry lapses when it
//! dies, as the messages it held do; a clean leave purges it at once. A
//! joiner writes its entry first, then reads the group's others: of two
//! members joining at once with different filters, at least the later one
//! sees the other and is refused (both may be, which loses nothing).
//!
//! (A key-value bucket is this, with a client API on top; async-nats 0.52
//! cannot create one on a 2.9 server — it fails to read the account info
//! 2.9 answers — so the bus uses the stream underneath directly.)

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, Stream};
use eventsource_core::{Error, Result};
use futures::TryStreamExt;

use crate::client::{nats_err, Client};
use crate::config::escape;

/// The register's stream, made on first use.
pub(crate) async fn register(client: &Client) -> Result<Stream> {
    let config = &client.config;
    let name = config.members_stream();
    client
        .js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![
                format!("{}.members.>", config.namespace),
                format!("{}.leases.>", config.namespace),
            ],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_messages_per_subject: 1,
            max_age: config.ack_wait,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err(format!("creating stream `{name}`"), e))
}

/// Registers `member` of `group` with `filter` (its canonical form), or
/// renews it (`renew`: no check, the member was admitted); refuses it with
/// [`Error::GroupFilterConflict`] when a live member of the group uses
/// another filter.
pub(crate) async fn join(
    client: &Client,
    register: &Stream,
    group: &str,
    member: &str,
    filter: &str,
    renew: bool,
) -> Result<()> {
    let subject = subject(client, group, member);
    let what = || format!("registering a member of group `{group}`");
    client
        .js
        .send_publish(
            subject.clone(),
            PublishMessage::build().payload(filter.to_owned().into()),
        )
        .await
        .map_err(|e| nats_err(what(), e))?
        .await
        .map_err(|e| nats_err(what(), e))?;
    if renew {
        return Ok(());
    }
    for (other, theirs) in members(client, register, group).await? {
        if other != member && theirs != filter {
            let _ = register.purge().filter(&subject).await;
            return Err(Error::group_filter_conflict(group, &theirs, filter));
        }
    }
    Ok(())
}

/// Removes `member` from `group`'s register (a clean leave).
pub(crate) async fn leave(client: &Client, register: &Stream, group: &str, member: &str) {
    if let Err(e) = register
        .purge()
        .filter(subject(client, group, member))
        .await
    {
        tracing::warn!(group, error = %e, "could not leave the group's member register; the entry lapses after ack_wait");
    }
}

/// The live members of `group` and their filters, sorted by name.
pub(crate) async fn members(
    client: &Client,
    register: &Stream,
    group: &str,
) -> Result<Vec<(String, String)>> {
    let prefix = subject(client, group, "");
    let what = || format!("reading group `{group}`'s members");
    let subjects: Vec<(String, usize)> = register
        .info_with_subjects(format!("{prefix}*"))
        .await
        .map_err(|e| nats_err(what(), e))?
        .try_collect()
        .await
        .map_err(|e| nats_err(what(), e))?;
    let mut found = Vec::new();
    for (subject, _) in subjects {
        let Some(member) = subject.strip_prefix(&prefix) else {
            continue;
        };
        // Lapsed or purged since it was listed: not a member.
        if let Ok(m) = register.get_last_raw_message_by_subject(&subject).await {
            found.push((
                member.to_owned(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
        }
    }
    found.sort();
    Ok(found)
}

/// The subject of `member` of `group` (no dot in either part: the group
/// escaped, the member name is the bus's own).
fn subject(client: &Client, group: &str, member: &str) -> String {
    format!(
        "{}.members.{}.{member}",
        client.config.namespace,
        escape(group)
    )
}
