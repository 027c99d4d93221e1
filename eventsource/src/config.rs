//! Choosing the bus by configuration.

use std::sync::Arc;

use eventsource_core::{redact_url, Error, EventBus, Result};
use serde::{Deserialize, Serialize};

/// Which bus to connect to, and how: one variant per backend compiled in.
///
/// Deserializes from configuration (`{"backend": "redis", "url": ...}`) or
/// is built from a URL with [`BusConfig::from_url`]: `memory://`,
/// `redis://…`, `amqp://…`, `kafka://…`. Application code then holds an
/// `Arc<dyn EventBus>` from [`connect_bus`] and never names a backend.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
            "redis" | "rediss" => {
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
            _ => Err(Error::config(format!(
                "unknown bus url `{}`: use memory://, redis://, amqp:// or kafka://",
                redact_url(url)
            ))),
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
        }
    }

    /// Sets the key, queue or topic prefix of the backends that have one
    /// (Redis namespace, RabbitMQ namespace, Kafka topic prefix).
    #[must_use]
    #[cfg_attr(
        not(any(feature = "redis", feature = "rabbitmq", feature = "kafka")),
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
        }
        self
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
    })
}

/// [`BusConfig::from_url`] then [`connect_bus`].
pub async fn connect_url(url: &str) -> Result<Arc<dyn EventBus>> {
    connect_bus(&BusConfig::from_url(url)?).await
}
