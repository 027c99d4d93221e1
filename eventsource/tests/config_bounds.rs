//! Every duration and count of every configuration has bounds that the
//! broker and the arithmetic accept: a value outside them is refused when
//! the configuration is read, with an error naming the field — never a
//! panic later (`Instant + Duration` overflow at connect, `claim_min_idle
//! * 2` at shutdown) nor a read that fails forever.

use std::panic::AssertUnwindSafe;

use eventsource::{BusConfig, Config};
use serde_json::{json, Value};

/// Values that have broken a field before: zero, negative, huge,
/// fractional, and the wrong type.
fn extremes(default: &Value) -> Vec<Value> {
    let mut values = vec![
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(0.5),
        json!(""),
        json!(null),
        json!(true),
    ];
    if default.is_string() || default.is_null() {
        // Durations are strings (`500ms`); names and URLs too.
        for d in [
            "0s",
            "1ns",
            "-1s",
            "584542046090y",
            "18446744073709551615s",
            "100000000h",
            "25h",
            "1h 1ms",
            "x",
        ] {
            values.push(json!(d));
        }
        values.push(json!("a".repeat(10_000)));
    }
    values
}

/// The bus configuration of each backend with every field's default.
fn backends() -> Vec<Value> {
    [
        "memory://",
        "redis://127.0.0.1:6379",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "kafka://127.0.0.1:9092",
        "nats://127.0.0.1:4222",
    ]
    .iter()
    .map(|url| {
        serde_json::to_value(BusConfig::from_url(url).expect("a valid url")).expect("serializes")
    })
    .collect()
}

/// Reads `config` as an application would, catching a panic.
fn read(config: &Value) -> Result<eventsource::Result<Config>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| Config::from_json(&config.to_string()))).map_err(
        |p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        },
    )
}

#[test]
fn no_value_of_any_field_panics_and_a_refusal_names_the_field() {
    let mut tried = 0;
    let mut refused = 0;
    let mut unnamed = Vec::new();
    for bus in backends() {
        let fields: Vec<(String, Value)> = bus
            .as_object()
            .expect("a table")
            .iter()
            .filter(|(name, _)| *name != "backend")
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (field, default) in &fields {
            for value in extremes(default) {
                let mut config = bus.clone();
                config[field.as_str()] = value.clone();
                let whole = json!({ "bus": config });
                tried += 1;
                match read(&whole) {
                    Err(panic) => panic!("bus `{field}` = {value}: panicked: {panic}"),
                    Ok(Ok(_)) => {
                        // No duration field takes centuries (or even years).
                        let duration_field = default.is_null()
                            || default
                                .as_str()
                                .is_some_and(|d| d.starts_with(|c: char| c.is_ascii_digit()));
                        let huge = ["584542046090y", "18446744073709551615s", "100000000h"];
                        if duration_field && value.as_str().is_some_and(|v| huge.contains(&v)) {
                            unnamed.push(format!(
                                "{}: `{field}` = {value} was accepted",
                                bus["backend"]
                            ));
                        }
                    }
                    Ok(Err(e)) => {
                        refused += 1;
                        let text = e.to_string();
                        if !text.contains(field.as_str()) {
                            unnamed
                                .push(format!("{}: `{field}` = {value}: {text}", bus["backend"]));
                        }
                    }
                }
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "huge durations accepted, or errors that do not name their field:\n{}",
        unnamed.join("\n")
    );
    // Groups: concurrency, prefetch, and every retry field.
    let group_fields: [(&str, Value); 2] = [("concurrency", json!(1)), ("prefetch", json!(1))];
    for (field, default) in group_fields {
        for value in extremes(&default) {
            let whole =
                json!({ "bus": { "url": "memory://" }, "groups": { "g": { field: value } } });
            tried += 1;
            match read(&whole) {
                Err(panic) => panic!("group `{field}` = {value}: panicked: {panic}"),
                Ok(Ok(config)) => {
                    // What the config accepts, a subscription must accept
                    // or refuse — never panic.
                    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        config
                            .subscription("g")
                            .handler(eventsource::handler_fn(|_e| async { Ok(()) }))
                            .build()
                            .map(|_| ())
                    }));
                    assert!(
                        built.is_ok(),
                        "group `{field}` = {value}: building panicked"
                    );
                }
                Ok(Err(e)) => {
                    refused += 1;
                    assert!(e.to_string().contains(field), "`{field}` = {value}: {e}");
                }
            }
        }
    }
    let retry = json!({ "max_attempts": 3, "backoff": { "kind": "exponential", "initial": "100ms", "multiplier": 2.0, "max": "10s", "jitter": true } });
    for (path, default) in [
        ("max_attempts", json!(3)),
        ("initial", json!("100ms")),
        ("multiplier", json!(2.0)),
        ("max", json!("10s")),
    ] {
        for value in extremes(&default) {
            let mut policy = retry.clone();
            if path == "max_attempts" {
                policy[path] = value.clone();
            } else {
                policy["backoff"][path] = value.clone();
            }
            let whole =
                json!({ "bus": { "url": "memory://" }, "groups": { "g": { "retry": policy } } });
            tried += 1;
            match read(&whole) {
                Err(panic) => panic!("retry `{path}` = {value}: panicked: {panic}"),
                Ok(Ok(config)) => {
                    let p = config.groups["g"].retry.expect("a policy");
                    assert!(p.max_attempts() <= eventsource::RetryPolicy::MAX_ATTEMPTS);
                    for attempt in [1, 2, 3, 50, u32::MAX] {
                        assert!(p.delay_before(attempt) <= eventsource::RetryPolicy::MAX_DELAY);
                    }
                }
                Ok(Err(_)) => refused += 1,
            }
        }
    }
    assert!(tried > 300, "{tried} cases");
    assert!(refused > tried / 3, "{refused} of {tried} refused");
}

/// The shapes the issue found, each refused by name.
#[test]
fn values_that_panicked_or_stalled_are_refused_by_name() {
    for (toml, field) in [
        ("connect_timeout = \"584542046090y\"", "connect_timeout"),
        ("claim_min_idle = \"100000000h\"", "claim_min_idle"),
        ("block = \"100000000h\"", "block"),
        ("publish_timeout = \"584542046090y\"", "publish_timeout"),
        ("max_len = 18446744073709551615", "max_len"),
    ] {
        let text = format!("[bus]\nurl = \"redis://127.0.0.1:6379\"\n{toml}\n");
        let err = Config::from_toml(&text).expect_err(toml);
        assert!(err.to_string().contains(field), "{toml}: {err}");
        assert!(err.to_string().contains("must be between"), "{toml}: {err}");
    }
    let err = eventsource::RetryPolicy::fixed(u32::MAX, std::time::Duration::ZERO)
        .expect_err("a hot retry loop");
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

/// `EVENTSOURCE_BUS_URL` is not silently dropped, and a backend named
/// without its address is not quietly a broker on this machine.
#[test]
fn a_bus_url_in_the_wrong_place_or_missing_is_an_error() {
    let err = Config::from_vars([
        ("EVENTSOURCE_BUS".to_owned(), "memory://".to_owned()),
        (
            "EVENTSOURCE_BUS_URL".to_owned(),
            "redis://10.0.0.1:6379".to_owned(),
        ),
    ])
    .expect_err("EVENTSOURCE_BUS_URL is not read");
    assert!(err.to_string().contains("EVENTSOURCE_BUS_URL"), "{err}");
    for (backend, field) in [
        ("redis", "url"),
        ("rabbitmq", "url"),
        ("kafka", "bootstrap_servers"),
        ("nats", "url"),
    ] {
        let err = Config::from_json(&json!({ "bus": { "backend": backend } }).to_string())
            .expect_err("no address");
        assert!(err.to_string().contains(field), "{backend}: {err}");
    }
    assert!(Config::from_json(r#"{"bus":{"backend":"memory"}}"#).is_ok());
    // The console's token is the CLI's, not an unknown setting.
    assert!(Config::from_vars([
        ("EVENTSOURCE_BUS".to_owned(), "memory://".to_owned()),
        ("EVENTSOURCE_CONSOLE_TOKEN".to_owned(), "x".repeat(20)),
    ])
    .is_ok());
}

/// The upper bounds themselves work on a real broker: a Redis member with
/// the longest claim_min_idle, claim_interval, timeouts and max_len
/// allowed handles what is published and shuts down without a panic
/// (`claim_min_idle * 2` at shutdown overflowed before) — nor waits out
/// its one-minute block: the leave unblocks the reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_accepted_redis_values_work_on_redis() {
    use std::time::Duration;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let namespace = format!("es-bounds-{}", uuid::Uuid::now_v7().simple());
    let config = Config::from_toml(&format!(
        "[bus]\nurl = \"{url}\"\nnamespace = \"{namespace}\"\nblock = \"1m\"\nclaim_interval = \"1h\"\n\
         claim_min_idle = \"1day\"\nconnect_timeout = \"1h\"\npublish_timeout = \"1h\"\nmax_len = 9223372036854775807\n"
    ))
    .expect("the largest values are accepted");
    let bus = eventsource::connect_bus(&config.bus)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}); start it with ./scripts/test.sh")
        });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _member = bus
        .subscribe(
            eventsource::Subscription::builder("g")
                .handler(eventsource::handler_fn(move |e| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(e.aggregate_id.clone());
                        Ok(())
                    }
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let events: Vec<_> = (1..=3)
        .map(|i| eventsource_testkit::probe(&format!("a-{i}"), 1, i))
        .collect();
    bus.publish(&events).await.expect("publish");
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("all 3 handled within 10 s")
            .expect("open");
    }
    bus.shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown with claim_min_idle of a day");
}
