//! The durability contract on Kafka, checked at connect. The producer is
//! idempotent with `acks=all`: a publish returns once every in-sync
//! replica of the partition has the records. That keeps them through a
//! broker's loss only when the topic is replicated and the in-sync set
//! cannot shrink to the leader alone (`min.insync.replicas` at least 2)
//! and no out-of-sync replica can become leader (unclean leader election
//! off). A topic on one broker (replication 1) has none of this to check:
//! its records survive a crash of the broker process, and Kafka does not
//! fsync each write, so a crash of the host may lose the last ones (the
//! guide's durability table says so).

use std::time::Duration;

use eventsource_core::driver::enforce_durability;
use eventsource_core::{Durability, DurabilityRisk, Result};
use rdkafka::admin::{AdminOptions, ResourceSpecifier};

use crate::client::{Client, BACKEND};

/// Reads the events topic's settings and applies the config's mode.
pub(crate) async fn check(client: &Client) -> Result<()> {
    let (config, replicas) = (&client.config, client.event_replicas);
    if config.durability == Durability::Off || replicas < 2 {
        return Ok(());
    }
    let topic = config.events_topic();
    let found = settings(client, &topic)
        .await
        .map(|(min_isr, unclean)| judge(&topic, replicas, min_isr.as_deref(), unclean.as_deref()));
    enforce_durability(BACKEND, config.durability, found)
}

/// `min.insync.replicas` and `unclean.leader.election.enable` of `topic`.
async fn settings(
    client: &Client,
    topic: &str,
) -> std::result::Result<(Option<String>, Option<String>), String> {
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = client
        .admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .map_err(|e| format!("DescribeConfigs of `{topic}`: {e}"))?;
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| format!("DescribeConfigs of `{topic}`: no answer"))?
        .map_err(|e| format!("DescribeConfigs of `{topic}`: {e}"))?;
    let value = |name: &str| {
        resource
            .entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    Ok((
        value("min.insync.replicas"),
        value("unclean.leader.election.enable"),
    ))
}

/// What a replicated topic's settings cost.
fn judge(
    topic: &str,
    replicas: usize,
    min_isr: Option<&str>,
    unclean: Option<&str>,
) -> Vec<DurabilityRisk> {
    let mut risks = Vec::new();
    let min_isr_value = min_isr.unwrap_or("1 (unset)");
    if min_isr.and_then(|v| v.parse::<usize>().ok()).unwrap_or(1) < 2 {
        risks.push(DurabilityRisk::new(
            format!("topic {topic} min.insync.replicas"),
            min_isr_value,
            format!(
                "with {replicas} replicas, acks=all is met by the leader alone once the others fall behind: losing that broker loses what only it had; set min.insync.replicas to 2 or more"
            ),
        ));
    }
    if unclean == Some("true") {
        risks.push(DurabilityRisk::new(
            format!("topic {topic} unclean.leader.election.enable"),
            "true",
            "a replica that missed acknowledged records can become leader, and they are gone",
        ));
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn a_replicated_topic_needs_two_in_sync_and_clean_elections() {
        assert!(judge("t", 3, Some("2"), Some("false")).is_empty());
        let one = judge("t", 3, Some("1"), Some("false"));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].setting, "topic t min.insync.replicas");
        assert_eq!(judge("t", 3, None, None)[0].value, "1 (unset)");
        let unclean = judge("t", 3, Some("2"), Some("true"));
        assert_eq!(unclean[0].setting, "topic t unclean.leader.election.enable");
    }
}
