//! [`Config`] from `EVENTSOURCE_*` environment variables.

use eventsource_core::{Error, Result, RetryPolicy};
use serde_json::{Map, Value};

use super::{BusConfig, Config};

const PREFIX: &str = "EVENTSOURCE_";

/// A variable's value as configuration: a number or boolean when it reads
/// as one, a string otherwise (durations are strings: `500ms`).
fn scalar(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(raw.to_owned()),
    }
}

pub(super) fn config_from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
    let mut url = None;
    let mut namespace = None;
    let mut bus = Map::new();
    let mut bus_vars = Vec::new();
    let mut store = None;
    let mut groups: Map<String, Value> = Map::new();
    for (name, raw) in vars {
        let Some(key) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let unknown = || {
            Error::config(format!(
                "environment variable `{name}` is not an eventsource setting \
                 (EVENTSOURCE_BUS, EVENTSOURCE_NAMESPACE, EVENTSOURCE_BUS_<FIELD>, \
                 EVENTSOURCE_STORE, EVENTSOURCE_GROUP_<GROUP>_CONCURRENCY, _MAX_ATTEMPTS or _PREFETCH)"
            ))
        };
        match key {
            "BUS" => url = Some(raw),
            "NAMESPACE" => namespace = Some(raw),
            "STORE" => store = Some(raw),
            // The `eventsource console` login token: not the application's.
            "CONSOLE_TOKEN" => {}
            // The URL has a variable of its own; this one would be
            // overwritten by it (or missed without it).
            "BUS_URL" | "BUS_BACKEND" => {
                return Err(Error::config(format!(
                    "environment variable `{name}` is not read: the bus URL (which names the \
                     backend) is EVENTSOURCE_BUS"
                )))
            }
            _ => {
                if let Some(field) = key.strip_prefix("BUS_") {
                    bus.insert(field.to_ascii_lowercase(), scalar(&raw));
                    bus_vars.push(name.clone());
                } else if let Some(rest) = key.strip_prefix("GROUP_") {
                    let (group, setting) = if let Some(g) = rest.strip_suffix("_CONCURRENCY") {
                        (g, "concurrency")
                    } else if let Some(g) = rest.strip_suffix("_MAX_ATTEMPTS") {
                        (g, "max_attempts")
                    } else if let Some(g) = rest.strip_suffix("_PREFETCH") {
                        (g, "prefetch")
                    } else {
                        return Err(unknown());
                    };
                    let group = group.to_ascii_lowercase().replace('_', "-");
                    let entry = groups
                        .entry(group)
                        .or_insert_with(|| Value::Object(Map::new()));
                    let value = raw.parse::<u64>().map_err(|_| {
                        Error::config(format!("`{name}` must be a whole number, not `{raw}`"))
                    })?;
                    if setting == "max_attempts" {
                        // The default policy with this many attempts.
                        let mut retry = serde_json::to_value(RetryPolicy::default())
                            .expect("a retry policy serializes");
                        retry["max_attempts"] = value.into();
                        entry["retry"] = retry;
                    } else {
                        entry[setting] = value.into();
                    }
                } else {
                    return Err(unknown());
                }
            }
        }
    }
    let Some(url) = url else {
        return Err(Error::config(
            "environment: EVENTSOURCE_BUS (the bus URL) is not set",
        ));
    };
    bus.insert("url".into(), Value::String(url));
    let mut bus = BusConfig::from_value(Value::Object(bus)).map_err(|e| {
        Error::config(format!(
            "environment ({}): {e}",
            if bus_vars.is_empty() {
                "EVENTSOURCE_BUS".to_owned()
            } else {
                format!("EVENTSOURCE_BUS, {}", bus_vars.join(", "))
            }
        ))
    })?;
    if let Some(ns) = namespace {
        bus = bus.with_namespace(&ns);
    }
    let mut rest = serde_json::json!({ "groups": groups });
    if let Some(store) = store {
        rest["store"] = Value::String(store);
    }
    Config::with_bus(bus, rest)
}
