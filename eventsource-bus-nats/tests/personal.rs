//! Forgetting a person on NATS JetStream (#29): every stream of the bus's
//! namespace (events, replays, dead letters) read raw with async-nats —
//! payloads and headers — holds personal data only sealed, before and
//! after the subject is forgotten.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::RawMessageErrorKind;
use eventsource_core::EventBus;
use futures::StreamExt;

/// Every message of every stream whose name starts with `prefix`.
async fn dump(url: String, prefix: String) -> Vec<u8> {
    let client = async_nats::connect(&url)
        .await
        .expect("NATS is reachable (start it with ./scripts/test.sh)");
    let js = async_nats::jetstream::new(client);
    let mut names = Vec::new();
    let mut streams = js.streams();
    while let Some(info) = streams.next().await {
        let info = info.expect("list streams");
        if info.config.name.starts_with(&prefix) {
            names.push(info.config.name.clone());
        }
    }
    assert!(!names.is_empty(), "no stream of `{prefix}` on the server");
    let mut raw = Vec::new();
    for name in names {
        let mut stream = js.get_stream(&name).await.expect("stream");
        let state = stream.info().await.expect("info").state.clone();
        if state.messages == 0 {
            continue;
        }
        for seq in state.first_sequence.max(1)..=state.last_sequence {
            match stream.get_raw_message(seq).await {
                Ok(m) => {
                    raw.extend_from_slice(&m.payload);
                    for (key, values) in m.headers.iter() {
                        raw.extend_from_slice(key.as_ref());
                        for v in values {
                            raw.extend_from_slice(v.as_str().as_bytes());
                        }
                    }
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
                Err(e) => panic!("reading {name} #{seq}: {e}"),
            }
        }
    }
    raw
}

/// The part every stream name of `config`'s namespace starts with.
fn stream_prefix(config: &eventsource_bus_nats::NatsBusConfig) -> String {
    let (a, b) = (config.events_stream(), config.dlq_stream("g"));
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_on_the_bus() {
    let url = common::nats_url();
    let mut config = common::config(&url);
    config.single_active_consumer = true;
    let prefix = stream_prefix(&config);
    let bus: Arc<dyn EventBus> = Arc::new(common::connect(config).await);
    let raw = move || Box::pin(dump(url.clone(), prefix.clone())) as _;
    eventsource_testkit::personal_data_is_sealed_on_the_bus(bus, &raw, Duration::from_secs(30))
        .await;
}
