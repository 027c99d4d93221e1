//! User registration on RabbitMQ: a schema checked at publish, the service
//! name as the CloudEvents `source`, event categories as metadata, and the
//! topic patterns RabbitMQ routes by.
//!
//! The user service publishes `user.registered` (checked against its
//! schema: an invalid one is refused before it reaches the broker) and a
//! few neighbours of other kinds and categories. Five consumer groups
//! subscribe with one pattern each; RabbitMQ's bindings do the routing
//! (`*` is one word, `#` is any number of words), and the program prints
//! what each pattern received. A raw AMQP consumer shows the CloudEvents
//! headers any CloudEvents SDK would read.
//!
//! Run it with RabbitMQ up: `cargo run -p user-registration` (or pass an
//! `amqp://` URL).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eventsource::rabbitmq::{RabbitBus, RabbitBusConfig};
use eventsource::schema::Schemas;
use eventsource::{handler_fn, EventEnvelope, EventFilter, Subscription};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

/// The schema of `user.registered`.
#[derive(Deserialize)]
struct UserRegistered {
    email: String,
    name: String,
}

fn check_registered(r: &UserRegistered) -> Result<(), String> {
    if !r.email.contains('@') {
        return Err(format!("email `{}` has no @", r.email));
    }
    if r.name.trim().is_empty() {
        return Err("name is empty".to_owned());
    }
    Ok(())
}

/// The patterns, one consumer group each.
const PATTERNS: [(&str, &str); 5] = [
    ("exact", "user.registered"),
    ("user-one-word", "user.*"),
    ("user-any", "user.#"),
    ("any-registered", "*.registered"),
    ("any-completed", "#.completed"),
];

/// What the service publishes: aggregate type, id, event type, category.
const EVENTS: [(&str, &str, &str, &str); 5] = [
    ("user", "u-1", "registered", "domain"),
    ("user", "u-1", "onboarding.completed", "user"),
    ("payment", "p-1", "completed", "integration"),
    ("admin", "a-1", "registered", "system"),
    ("email", "m-1", "welcome.sent", "notification"),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let config = RabbitBusConfig::new(&url)
        .namespace(format!("user-registration-{}", std::process::id()))
        .source("user-service");
    let rabbit = RabbitBus::connect(config.clone()).await?;
    let bus = Schemas::new()
        .typed("user.registered", check_registered)
        .check_on(Arc::new(rabbit));

    // A raw AMQP queue on the same exchange, to look at the wire format.
    let raw = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await?;
    let channel = raw.create_channel().await?;
    let peek = format!("{}.peek", config.namespace);
    channel
        .queue_declare(
            peek.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            peek.as_str().into(),
            config.exchange().as_str().into(),
            "user.registered".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let (tx, mut received) = mpsc::unbounded_channel::<(&'static str, String, String)>();
    let mut handles = Vec::new();
    for (group, pattern) in PATTERNS {
        let tx = tx.clone();
        let subscription = Subscription::builder(group)
            .filter(EventFilter::pattern(pattern)?)
            .handler(handler_fn(move |e: EventEnvelope| {
                let tx = tx.clone();
                async move {
                    let category = e.metadata.get("category").cloned().unwrap_or_default();
                    let _ = tx.send((pattern, e.routing_key(), category));
                    Ok(())
                }
            }))
            .build()?;
        handles.push(bus.subscribe(subscription).await?);
    }
    drop(tx);

    println!("Publishing a user.registered with an invalid email...");
    let invalid = EventEnvelope::from_json(
        "user",
        "u-2",
        1,
        "registered",
        json!({ "email": "not-an-email", "name": "Eve" }),
    );
    match bus.publish(&[invalid]).await {
        Err(e) => println!("  refused: {e}"),
        Ok(()) => return Err("an invalid event was published".into()),
    }

    println!("Publishing {} events...", EVENTS.len());
    for (aggregate, id, event_type, category) in EVENTS {
        let payload = match event_type {
            "registered" => json!({ "email": format!("{id}@example.com"), "name": id }),
            _ => json!({}),
        };
        let event = EventEnvelope::from_json(aggregate, id, 1, event_type, payload)
            .with_metadata("category", category);
        bus.publish(&[event]).await?;
    }

    // user.registered: 4 patterns; user.onboarding.completed: 2;
    // payment.completed: 1; admin.registered: 1; email.welcome.sent: 0.
    let expected = 8;
    let mut routed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..expected {
        let (pattern, key, category) =
            tokio::time::timeout(Duration::from_secs(10), received.recv())
                .await?
                .ok_or("a subscription stopped")?;
        routed
            .entry(pattern)
            .or_default()
            .insert(format!("{key} [{category}]"));
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), received.recv()).await
    {
        return Err(format!("routed where no pattern matches: {extra:?}").into());
    }
    println!("\nRouting (pattern -> routing keys received [category]):");
    for (_, pattern) in PATTERNS {
        let keys: Vec<&str> = routed
            .get(pattern)
            .map(|k| k.iter().map(String::as_str).collect())
            .unwrap_or_default();
        println!("  {pattern:<16} {}", keys.join(", "));
    }

    let message = channel
        .basic_get(peek.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .ok_or("the raw queue got nothing")?;
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    println!("\nOn the wire (CloudEvents binary mode, as any CloudEvents SDK reads it):");
    for name in [
        "cloudEvents:specversion",
        "cloudEvents:type",
        "cloudEvents:source",
        "cloudEvents:subject",
    ] {
        let value = match headers.inner().get(name) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            Some(other) => format!("{other:?}"),
            None => "-".to_owned(),
        };
        println!("  {name} = {value}");
    }

    for handle in handles {
        handle.unsubscribe().await;
    }
    bus.shutdown(Duration::from_secs(5)).await?;
    raw.close(0, "done".into()).await?;
    Ok(())
}
