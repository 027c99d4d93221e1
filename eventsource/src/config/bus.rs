//! [`BusConfig`]: which bus, and how to reach it.

use std::sync::Arc;

use eventsource_core::{redact_url, Error, EventBus, Result};
use serde::{Deserialize, Deserializer, Serialize};

/// Which bus to connect to, and how: one variant per backend compiled in.
///
/// Deserializes from configuration (`{"backend": "redis", "url": ...}`,
/// or just `{"url": ...}`: the backend is inferred from the URL's scheme)
/// or is built from a URL with [`BusConfig::from_url`]: `memory://`,
/// `redis://…`, `amqp://…`, `kafka://…`, `nats://…`. Application code then holds an
/// `Arc<dyn EventBus>` from [`connect_bus`] and never names a backend.
///
/// A field the backend does not have is an error naming it (a typo such
/// as `namepsace` is not silently ignored).
///
/// ```
/// use eventsource::BusConfig;
///
/// let config = BusConfig::from_url("memory://")?;
/// assert_eq!(config.backend(), "memory");
/// let err = BusConfig::from_url("mqtt://broker").unwrap_err();
/// assert!(err.to_string().contains("mqtt://broker"));
/// # Ok::<(), eventsource::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BusConfig {
    /// The in-process bus.
    #[cfg(feature = "memory")]
    Memory(eventsource_bus_memory::MemoryBusConfig),
    /// Redis Streams.
    #[cfg(feature = "redis")]
    Redis(eventsource_bus_redis::RedisBusConfig),
    /// RabbitMQ.
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(eventsource_bus_rabbitmq::RabbitBusConfig),
    /// Kafka.
    #[cfg(feature = "kafka")]
    Kafka(eventsource_bus_kafka::KafkaBusConfig),
    /// NATS JetStream.
    #[cfg(feature = "nats")]
    Nats(eventsource_bus_nats::NatsBusConfig),
    /// Built without any backend feature: no value of this exists (every
    /// URL is refused, naming the feature it needs), but the crate builds.
    #[cfg(not(any(
        feature = "memory",
        feature = "redis",
        feature = "rabbitmq",
        feature = "kafka",
        feature = "nats"
    )))]
    #[doc(hidden)]
    #[serde(skip)]
    NoBackend(std::convert::Infallible),
}

impl BusConfig {
    /// The configuration for a bus URL, with that backend's defaults.
    /// A scheme whose backend is not compiled in is a configuration error
    /// naming the cargo feature to enable.
    pub fn from_url(url: &str) -> Result<BusConfig> {
        let scheme = url.split("://").next().unwrap_or_default();
        // Unused when every backend is compiled in.
        let _missing = |feature: &str| {
            Error::config(format!(
                "bus url `{}` needs the `{feature}` feature of the eventsource crate",
                redact_url(url)
            ))
        };
        match scheme {
            "memory" => {
                #[cfg(feature = "memory")]
                return Ok(BusConfig::Memory(Default::default()));
                #[cfg(not(feature = "memory"))]
                return Err(_missing("memory"));
            }
            "redis" | "rediss" | "redis+cluster" => {
                #[cfg(feature = "redis")]
                return Ok(BusConfig::Redis(
                    eventsource_bus_redis::RedisBusConfig::new(url).validated()?,
                ));
                #[cfg(not(feature = "redis"))]
                return Err(_missing("redis"));
            }
            "amqp" | "amqps" => {
                #[cfg(feature = "rabbitmq")]
                return Ok(BusConfig::Rabbitmq(
                    eventsource_bus_rabbitmq::RabbitBusConfig::new(url).validated()?,
                ));
                #[cfg(not(feature = "rabbitmq"))]
                return Err(_missing("rabbitmq"));
            }
            "kafka" => {
                #[cfg(feature = "kafka")]
                return Ok(BusConfig::Kafka(
                    eventsource_bus_kafka::KafkaBusConfig::from_url(url)?.validated()?,
                ));
                #[cfg(not(feature = "kafka"))]
                return Err(_missing("kafka"));
            }
            "nats" | "tls" => {
                #[cfg(feature = "nats")]
                return Ok(BusConfig::Nats(
                    eventsource_bus_nats::NatsBusConfig::new(url).validated()?,
                ));
                #[cfg(not(feature = "nats"))]
                return Err(_missing("nats"));
            }
            _ => Err(Error::config(format!(
                "unknown bus url `{}`: use memory://, redis://, redis+cluster://, amqp://, kafka:// or nats://",
                redact_url(url)
            ))),
        }
    }

    /// Checks every value of the backend's config (as `connect` does), so
    /// a bad file or environment fails where it is read.
    pub fn validate(&self) -> Result<()> {
        match self {
            #[cfg(feature = "memory")]
            BusConfig::Memory(c) => c.validate(),
            #[cfg(feature = "redis")]
            BusConfig::Redis(c) => c.validate(),
            #[cfg(feature = "rabbitmq")]
            BusConfig::Rabbitmq(c) => c.validate(),
            #[cfg(feature = "kafka")]
            BusConfig::Kafka(c) => c.validate(),
            #[cfg(feature = "nats")]
            BusConfig::Nats(c) => c.validate(),
            #[cfg(not(any(
                feature = "memory",
                feature = "redis",
                feature = "rabbitmq",
                feature = "kafka",
                feature = "nats"
            )))]
            BusConfig::NoBackend(never) => match *never {},
        }
    }

    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        match self {
            #[cfg(feature = "memory")]
            BusConfig::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            BusConfig::Redis(_) => "redis",
            #[cfg(feature = "rabbitmq")]
            BusConfig::Rabbitmq(_) => "rabbitmq",
            #[cfg(feature = "kafka")]
            BusConfig::Kafka(_) => "kafka",
            #[cfg(feature = "nats")]
            BusConfig::Nats(_) => "nats",
            #[cfg(not(any(
                feature = "memory",
                feature = "redis",
                feature = "rabbitmq",
                feature = "kafka",
                feature = "nats"
            )))]
            BusConfig::NoBackend(never) => match *never {},
        }
    }

    /// Sets what connecting does when the broker does not keep what it
    /// acknowledges, on the backends that check (Redis, Kafka and NATS; see
    /// [`Durability`](crate::Durability)); the others ignore it.
    #[must_use]
    #[cfg_attr(
        not(any(feature = "redis", feature = "kafka", feature = "nats")),
        allow(unused_variables, unused_mut)
    )]
    pub fn with_durability(mut self, mode: crate::Durability) -> Self {
        match &mut self {
            #[cfg(feature = "redis")]
            BusConfig::Redis(c) => c.durability = mode,
            #[cfg(feature = "kafka")]
            BusConfig::Kafka(c) => c.durability = mode,
            #[cfg(feature = "nats")]
            BusConfig::Nats(c) => c.durability = mode,
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self
    }

    /// Sets the key, queue or topic prefix of the backends that have one
    /// (Redis, RabbitMQ and NATS namespace, Kafka topic prefix).
    #[must_use]
    #[cfg_attr(
        not(any(
            feature = "redis",
            feature = "rabbitmq",
            feature = "kafka",
            feature = "nats"
        )),
        allow(unused_variables)
    )]
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        match &mut self {
            #[cfg(feature = "memory")]
            BusConfig::Memory(_) => {}
            #[cfg(feature = "redis")]
            BusConfig::Redis(c) => c.namespace = namespace.to_owned(),
            #[cfg(feature = "rabbitmq")]
            BusConfig::Rabbitmq(c) => c.namespace = namespace.to_owned(),
            #[cfg(feature = "kafka")]
            BusConfig::Kafka(c) => c.topic_prefix = namespace.to_owned(),
            #[cfg(feature = "nats")]
            BusConfig::Nats(c) => c.namespace = namespace.to_owned(),
            #[cfg(not(any(
                feature = "memory",
                feature = "redis",
                feature = "rabbitmq",
                feature = "kafka",
                feature = "nats"
            )))]
            BusConfig::NoBackend(never) => match *never {},
        }
        self
    }
}

/// [`BusConfig`] as written with its `backend` tag.
#[derive(Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
enum Tagged {
    #[cfg(feature = "memory")]
    Memory(eventsource_bus_memory::MemoryBusConfig),
    #[cfg(feature = "redis")]
    Redis(eventsource_bus_redis::RedisBusConfig),
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(eventsource_bus_rabbitmq::RabbitBusConfig),
    #[cfg(feature = "kafka")]
    Kafka(eventsource_bus_kafka::KafkaBusConfig),
    #[cfg(feature = "nats")]
    Nats(eventsource_bus_nats::NatsBusConfig),
}

impl From<Tagged> for BusConfig {
    fn from(t: Tagged) -> Self {
        match t {
            #[cfg(feature = "memory")]
            Tagged::Memory(c) => BusConfig::Memory(c),
            #[cfg(feature = "redis")]
            Tagged::Redis(c) => BusConfig::Redis(c),
            #[cfg(feature = "rabbitmq")]
            Tagged::Rabbitmq(c) => BusConfig::Rabbitmq(c),
            #[cfg(feature = "kafka")]
            Tagged::Kafka(c) => BusConfig::Kafka(c),
            #[cfg(feature = "nats")]
            Tagged::Nats(c) => BusConfig::Nats(c),
        }
    }
}

impl<'de> Deserialize<'de> for BusConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        BusConfig::from_value(value).map_err(|e| D::Error::custom(e.to_string()))
    }
}

impl BusConfig {
    /// Reads a configuration object: with a `backend` tag as written, or
    /// without one from its `url` (that URL's defaults, overlaid with the
    /// other fields given).
    pub(crate) fn from_value(mut value: serde_json::Value) -> Result<BusConfig> {
        let bad = |e: serde_json::Error| Error::config(format!("bus configuration: {e}"));
        let Some(fields) = value.as_object_mut() else {
            return Err(Error::config(
                "bus configuration: expected a table of fields (backend, url, namespace, …)",
            ));
        };
        if !fields.contains_key("backend") {
            let Some(url) = fields.get("url").and_then(serde_json::Value::as_str) else {
                return Err(Error::config(
                    "bus configuration: give a `url` (memory://, redis://…, amqp://…, kafka://…, nats://…) or a `backend`",
                ));
            };
            let base = serde_json::to_value(BusConfig::from_url(url)?).map_err(bad)?;
            let serde_json::Value::Object(mut base) = base else {
                unreachable!("a bus configuration serializes to an object")
            };
            // memory:// and kafka:// carry no `url` field of their own.
            let keep_url = base.contains_key("url");
            for (k, v) in std::mem::take(fields) {
                if k != "url" || keep_url {
                    base.insert(k, v);
                }
            }
            *fields = base;
        }
        // Each backend's fields are read on their own, so an error names
        // the field (an internally tagged enum buffers its content and
        // loses the path).
        let backend = match value.as_object_mut().and_then(|f| f.remove("backend")) {
            Some(serde_json::Value::String(b)) => b,
            _ => {
                return serde_json::from_value::<Tagged>(value)
                    .map(BusConfig::from)
                    .map_err(bad)
            }
        };
        fn read<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
            serde_path_to_error::deserialize(value)
                .map_err(|e| super::located("bus configuration", e))
        }
        // A broker's address is never a default: `{"backend": "redis"}`
        // alone would quietly mean a Redis on this machine. Checked after
        // the fields are read, so a typo is reported first.
        let address = match backend.as_str() {
            "redis" => Some(("url", "redis://host:6379")),
            "rabbitmq" => Some(("url", "amqp://user:password@host:5672/%2f")),
            "kafka" => Some(("bootstrap_servers", "host:9092")),
            "nats" => Some(("url", "nats://host:4222")),
            _ => None,
        };
        let missing = address.filter(|(field, _)| value.get(*field).is_none());
        let config = match backend.as_str() {
            #[cfg(feature = "memory")]
            "memory" => read(value).map(BusConfig::Memory),
            #[cfg(feature = "redis")]
            "redis" => read(value).map(BusConfig::Redis),
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => read(value).map(BusConfig::Rabbitmq),
            #[cfg(feature = "kafka")]
            "kafka" => read(value).map(BusConfig::Kafka),
            #[cfg(feature = "nats")]
            "nats" => read(value).map(BusConfig::Nats),
            _ => {
                let mut tagged = value;
                if let Some(fields) = tagged.as_object_mut() {
                    fields.insert("backend".into(), serde_json::Value::String(backend.clone()));
                }
                serde_json::from_value::<Tagged>(tagged)
                    .map(BusConfig::from)
                    .map_err(bad)
            }
        }?;
        match missing {
            Some((field, example)) => Err(Error::config(format!(
                "bus configuration: backend `{backend}` needs its `{field}` ({example}); \
                 no broker address is assumed"
            ))),
            None => Ok(config),
        }
    }
}

/// Connects to the bus `config` describes (validating it first).
pub async fn connect_bus(config: &BusConfig) -> Result<Arc<dyn EventBus>> {
    Ok(match config {
        #[cfg(feature = "memory")]
        BusConfig::Memory(c) => {
            Arc::new(eventsource_bus_memory::MemoryBus::with_config(c.clone())?)
        }
        #[cfg(feature = "redis")]
        BusConfig::Redis(c) => Arc::new(eventsource_bus_redis::RedisBus::connect(c.clone()).await?),
        #[cfg(feature = "rabbitmq")]
        BusConfig::Rabbitmq(c) => {
            Arc::new(eventsource_bus_rabbitmq::RabbitBus::connect(c.clone()).await?)
        }
        #[cfg(feature = "kafka")]
        BusConfig::Kafka(c) => Arc::new(eventsource_bus_kafka::KafkaBus::connect(c.clone()).await?),
        #[cfg(feature = "nats")]
        BusConfig::Nats(c) => Arc::new(eventsource_bus_nats::NatsBus::connect(c.clone()).await?),
        #[cfg(not(any(
            feature = "memory",
            feature = "redis",
            feature = "rabbitmq",
            feature = "kafka",
            feature = "nats"
        )))]
        BusConfig::NoBackend(never) => match *never {},
    })
}

/// [`BusConfig::from_url`] then [`connect_bus`].
pub async fn connect_url(url: &str) -> Result<Arc<dyn EventBus>> {
    connect_bus(&BusConfig::from_url(url)?).await
}
