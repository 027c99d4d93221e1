//! The durability contract on NATS, checked at connect. An acknowledged
//! publish is one the events stream stored (its PubAck). The bus makes
//! that stream with file storage, but a stream of the same name made
//! before (by hand, by another tool) is used as it is: one in memory
//! loses every event when the server restarts, and one with limits that
//! discard old messages deletes events no group has read. What the check
//! cannot read is the server's `sync_interval` (not in any API a client
//! account sees): by default a power loss can lose the last two minutes
//! even of a file stream (the guide's NATS durability section).

use async_nats::jetstream::stream::{DiscardPolicy, StorageType};
use eventsource_core::driver::enforce_durability;
use eventsource_core::{Durability, DurabilityRisk, Result};

use crate::client::{Client, BACKEND};

/// Reads the events stream's settings and applies the config's mode.
pub(crate) async fn check(client: &Client) -> Result<()> {
    let config = &client.config;
    if config.durability == Durability::Off {
        return Ok(());
    }
    let found = match client.stream(&config.events_stream()).await {
        Ok(Some(stream)) => Ok(judge(&stream.cached_info().config, config.max_messages)),
        // Made with file storage at the first publish.
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    };
    enforce_durability(BACKEND, config.durability, found)
}

/// What the stream's settings cost; `max_messages` is the limit the
/// bus's own config asks for (not a surprise, so not a risk).
fn judge(
    stream: &async_nats::jetstream::stream::Config,
    max_messages: Option<u64>,
) -> Vec<DurabilityRisk> {
    let mut risks = Vec::new();
    if stream.storage == StorageType::Memory {
        risks.push(DurabilityRisk::new(
            format!("stream {} storage", stream.name),
            "memory",
            "the events live in the server's memory: a restart of the server loses every one",
        ));
    }
    let limited = stream.max_age.as_secs() > 0
        || stream.max_bytes > 0
        || (stream.max_messages > 0 && Some(stream.max_messages as u64) != max_messages);
    if limited && stream.discard == DiscardPolicy::Old {
        risks.push(DurabilityRisk::new(
            format!("stream {} limits", stream.name),
            format!(
                "max_age {:?}, max_bytes {}, max_msgs {}, discard old",
                stream.max_age, stream.max_bytes, stream.max_messages
            ),
            "the server deletes the oldest events past a limit, read by every group or not",
        ));
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::judge;
    use async_nats::jetstream::stream::{Config, StorageType};
    use std::time::Duration;

    #[test]
    fn memory_storage_and_limits_that_discard_are_risks() {
        let file = Config {
            name: "ns-events".into(),
            storage: StorageType::File,
            ..Default::default()
        };
        assert!(judge(&file, None).is_empty());
        let memory = Config {
            storage: StorageType::Memory,
            ..file.clone()
        };
        assert_eq!(judge(&memory, None)[0].setting, "stream ns-events storage");
        let aged = Config {
            max_age: Duration::from_secs(60),
            ..file.clone()
        };
        assert_eq!(judge(&aged, None)[0].setting, "stream ns-events limits");
        let capped = Config {
            max_messages: 1000,
            ..file.clone()
        };
        assert_eq!(judge(&capped, None).len(), 1);
        assert!(
            judge(&capped, Some(1000)).is_empty(),
            "the bus's own max_messages"
        );
    }
}
