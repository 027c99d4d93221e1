//! The group's filter, checked across processes: a member's `client.id`
//! carries its filter, the broker lists the group's members with theirs
//! (DescribeGroups), and a joining member with another filter is refused.

use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{Error, Result};
use rdkafka::producer::Producer as _;

use crate::client::{Client, BACKEND};

/// The `client.id` prefix that carries a member's filter: the broker
/// lists each group member's client id (DescribeGroups), which is how a
/// joining member in another process learns the group's filter.
const FILTER_CLIENT_ID: &str = "eventsource-filter-";

/// The client id of a member with `filter` (its canonical form, in hex).
pub(crate) fn filter_client_id(filter: &str) -> String {
    let hex: String = filter.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{FILTER_CLIENT_ID}{hex}")
}

/// The filter a member's client id carries, if it is one of ours.
fn filter_of_client_id(client_id: &str) -> Option<String> {
    let hex = client_id.strip_prefix(FILTER_CLIENT_ID)?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Refuses to join `group_id` with `filter` when a live member of the
/// group uses another filter ([`Error::GroupFilterConflict`]).
pub(crate) async fn check_group_filter(
    client: &Arc<Client>,
    group_id: &str,
    group: &str,
    filter: &str,
) -> Result<()> {
    let producer = client.producer.clone();
    let (id, mine) = (group_id.to_owned(), filter.to_owned());
    // The filters of the group's live members, other than `filter`.
    let existing = tokio::task::spawn_blocking(move || {
        let listed = producer
            .client()
            .fetch_group_list(Some(&id), Duration::from_secs(10))?;
        Ok::<_, rdkafka::error::KafkaError>(
            listed
                .groups()
                .iter()
                .filter(|g| g.name() == id)
                .flat_map(|g| g.members())
                .filter_map(|m| filter_of_client_id(m.client_id()))
                .find(|other| *other != mine),
        )
    })
    .await
    .map_err(|e| Error::backend(BACKEND, format!("describing group `{group}`"), e))?;
    filter_check(group, filter, existing)
}

/// What the group's listing says of joining `group` with `filter`: a
/// conflict with another live member's filter is refused; a broker that
/// does not answer DescribeGroups (some Kafka-compatible brokers) only
/// loses the check across processes — the guide says it applies "where
/// the broker answers it" — so it is a warning, and the member joins.
fn filter_check(
    group: &str,
    filter: &str,
    listed: std::result::Result<Option<String>, rdkafka::error::KafkaError>,
) -> Result<()> {
    match listed {
        Ok(Some(existing)) => Err(Error::group_filter_conflict(group, &existing, filter)),
        Ok(None) => Ok(()),
        Err(e) => {
            tracing::warn!(group, error = %e,
                "the broker did not describe the consumer group, so the filters of members in \
                 other processes are not checked; joining without that check");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {

    /// A broker that cannot describe the group (tansu with sqlite
    /// storage answers DescribeGroups with an error) does not keep a
    /// member out; a conflicting filter still does.
    #[test]
    fn an_unanswered_describe_groups_is_a_warning_not_a_refusal() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let down = Err(KafkaError::GroupListFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(filter_check("g", "all", down).is_ok());
        assert!(filter_check("g", "all", Ok(None)).is_ok());
        let conflict = filter_check("g", "all", Ok(Some("Order.*".into())));
        assert!(
            matches!(conflict, Err(Error::GroupFilterConflict { .. })),
            "{conflict:?}"
        );
    }

    use super::*;

    #[test]
    fn a_client_id_carries_the_filter() {
        let filter = "patterns [#.Created, Order.*]";
        let id = filter_client_id(filter);
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id}"
        );
        assert_eq!(filter_of_client_id(&id).as_deref(), Some(filter));
        assert_eq!(filter_of_client_id("rdkafka"), None);
        assert_eq!(filter_of_client_id("eventsource-filter-zz"), None);
    }
}
