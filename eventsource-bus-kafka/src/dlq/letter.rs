//! The record a dead letter is written as: the original with the failure
//! headers, or — when that is too large for the broker — a reduced one
//! that says what was cut and where the original is.

use std::collections::BTreeMap;

use eventsource_core::wire::dead_letter;
use eventsource_core::Failure;

use crate::client::Outgoing;
use crate::{wire, KafkaBusConfig};

/// Marks a reduced dead letter ([`reduced_letter`]): the names of the
/// fields cut from it, comma-separated (`value` for the record's value).
pub(crate) const CUT_HEADER: &str = "x-eventsource-cut";

/// The most a dead letter's record may hold (key, value and headers):
/// librdkafka's default `message.max.bytes` (1,000,000), less room for the
/// record's own overhead. A larger letter is written reduced.
pub(crate) const LETTER_LIMIT: usize = 1_000_000 - 16 * 1024;

/// In a reduced letter, a field longer than this is cut.
pub(super) const FIELD_KEPT: usize = 1024;

/// The bytes a record of these parts holds, near enough to compare with
/// [`LETTER_LIMIT`].
pub(super) fn record_size<'a>(
    key: &str,
    headers: impl IntoIterator<Item = (&'a String, &'a String)>,
    payload: &[u8],
) -> usize {
    let headers: usize = headers
        .into_iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    key.len() + payload.len() + headers
}

/// The record that goes to a group's DLQ topic: the original key, value and
/// `ce_` headers, plus the failure in the core codec's headers — or, when
/// that would pass [`LETTER_LIMIT`], the [`reduced_letter`].
pub(crate) fn dead_letter_record(
    config: &KafkaBusConfig,
    key: &str,
    headers: &BTreeMap<String, String>,
    payload: &[u8],
    failure: &Failure,
    decoded: bool,
) -> Outgoing {
    let failure_headers: BTreeMap<String, String> =
        dead_letter::encode(failure, decoded).into_iter().collect();
    if record_size(key, headers.iter().chain(&failure_headers), payload) > LETTER_LIMIT {
        return reduced_letter(config, key, headers, payload, failure);
    }
    Outgoing {
        topic: config.dlq_topic(&failure.group),
        key: key.to_owned(),
        partition: None,
        headers: wire::headers(
            headers
                .iter()
                .chain(&failure_headers)
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        payload: payload.to_vec(),
    }
}

/// A dead letter that fits where the whole one does not (a record with a
/// megabyte header, refused by the broker as too large, would otherwise
/// stay uncommitted and block its partition): the value and every header
/// longer than 1 KiB are cut — all headers, if they are still too many —
/// and named in [`CUT_HEADER`] and in the failure's message. The letter
/// keeps the failure, whose `source` (`topic[partition]@offset`) says
/// where the original is: replaying the letter reads the original from
/// there.
pub(crate) fn reduced_letter(
    config: &KafkaBusConfig,
    key: &str,
    headers: &BTreeMap<String, String>,
    payload: &[u8],
    failure: &Failure,
) -> Outgoing {
    let mut cut: Vec<String> = Vec::new();
    if payload.len() > FIELD_KEPT {
        cut.push("value".to_owned());
    }
    let mut kept: BTreeMap<String, String> = headers
        .iter()
        .filter(|(k, v)| {
            let keep = v.len() <= FIELD_KEPT && !dead_letter::is_failure_header(k);
            if !keep && !dead_letter::is_failure_header(k) {
                cut.push((*k).clone());
            }
            keep
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if record_size(key, &kept, &[]) > LETTER_LIMIT / 2 {
        cut.extend(std::mem::take(&mut kept).into_keys());
    }
    let cut = match cut.len() {
        0..=10 => cut.join(", "),
        n => format!("{} and {} more", cut[..10].join(", "), n - 10),
    };
    let mut failure = failure.clone();
    let mut error: String = failure.error.chars().take(FIELD_KEPT).collect();
    if error.len() < failure.error.len() {
        error.push('…');
    }
    failure.error = format!(
        "{error} (this dead letter was too large for the broker: {cut} cut; replaying it \
         reads the original at {})",
        failure.source
    );
    kept.extend(dead_letter::encode(&failure, false));
    kept.insert(CUT_HEADER.to_owned(), cut);
    let payload = if payload.len() > FIELD_KEPT {
        Vec::new()
    } else {
        payload.to_vec()
    };
    Outgoing {
        topic: config.dlq_topic(&failure.group),
        key: key.chars().take(FIELD_KEPT).collect(),
        partition: None,
        headers: wire::headers(kept.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        payload,
    }
}
