//! [`Config`]: the bus, the store and each consumer group's settings in
//! one place, from a TOML or JSON file or from the environment.

use std::collections::BTreeMap;
use std::path::Path;

use eventsource_core::{Error, Result, RetryPolicy, SubscriptionBuilder};
use serde::{Deserialize, Serialize};

use super::env;
use super::BusConfig;

/// An application's eventsource configuration: which bus, which store,
/// and how each consumer group handles its events.
///
/// ```
/// use eventsource::{handler_fn, Config};
///
/// let config = Config::from_toml(r#"
///     store = "sqlite://events.db"
///
///     [bus]
///     url = "memory://"
///
///     [groups.billing]
///     concurrency = 4
///     retry = { max_attempts = 5, backoff = { kind = "fixed", delay = "200ms" } }
/// "#)?;
/// assert_eq!(config.bus.backend(), "memory");
/// let billing = config
///     .subscription("billing")
///     .handler(handler_fn(|_e| async { Ok(()) }))
///     .build()?;
/// assert_eq!(billing.concurrency(), 4);
/// assert_eq!(billing.retry().max_attempts(), 5);
///
/// // The same, built in code.
/// use eventsource::{BusConfig, GroupConfig, RetryPolicy};
/// use std::time::Duration;
/// let same = Config::new(BusConfig::from_url("memory://")?)
///     .with_store("sqlite://events.db")
///     .with_group(
///         "billing",
///         GroupConfig::default()
///             .concurrency(4)
///             .retry(RetryPolicy::fixed(5, Duration::from_millis(200))?),
///     );
/// assert_eq!(same, config);
///
/// // A typo is an error that names it.
/// let err = Config::from_toml("[bus]\nurl = \"memory://\"\n[groups.billing]\nconcurency = 4\n")
///     .unwrap_err();
/// assert!(err.to_string().contains("concurency"), "{err}");
/// # Ok::<(), eventsource::Error>(())
/// ```
///
/// Every field but `bus` is optional; a group that is not listed gets the
/// subscription defaults. `Debug` shows the store URL with its password
/// masked (as [`redact_url`](eventsource_core::redact_url) does).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The bus (its `backend` may be left out when `url` says it).
    pub bus: BusConfig,
    /// The event store's URL (`sqlite://FILE`, `sqlite::memory:`,
    /// `postgres://…`), opened by [`Config::connect_store`] (features
    /// `sqlite`, `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Settings per consumer group, by group name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bus", &self.bus)
            .field(
                "store",
                &self.store.as_deref().map(eventsource_core::redact_url),
            )
            .field("groups", &self.groups)
            .finish()
    }
}

/// How one consumer group handles its events; what is left out keeps the
/// subscription's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The retry policy before a message is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Handlers of this member running at once (different aggregates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Messages a member of this group reads ahead. Prefetch belongs to a
    /// bus connection, so a group with its own prefetch runs on a bus of
    /// its own: connect it with [`Config::bus_for`]. (The memory bus has
    /// no prefetch; this sets its group capacity.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
}

impl GroupConfig {
    /// Sets the retry policy (see the field).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the handlers running at once (see the field).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Sets the messages read ahead (see the field).
    #[must_use]
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Applies these settings to a subscription being built.
    pub fn apply(&self, mut builder: SubscriptionBuilder) -> SubscriptionBuilder {
        if let Some(retry) = self.retry {
            builder = builder.retry(retry);
        }
        if let Some(concurrency) = self.concurrency {
            builder = builder.concurrency(concurrency);
        }
        builder
    }
}

impl Config {
    /// A configuration of just a bus.
    pub fn new(bus: BusConfig) -> Self {
        Config {
            bus,
            store: None,
            groups: BTreeMap::new(),
        }
    }

    /// Sets the event store's URL (see the field).
    #[must_use]
    pub fn with_store(mut self, url: impl Into<String>) -> Self {
        self.store = Some(url.into());
        self
    }

    /// The store's configuration, from the `store` URL with the store's
    /// defaults (add `.outbox(true)` and others before connecting).
    /// Fails naming the field when no store is configured.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub fn store_config(&self) -> Result<eventsource_store::StoreConfig> {
        let url = self.store.as_deref().ok_or_else(|| {
            Error::config(
                "`store` is not set: give the event store's URL (`sqlite://events.db`, \
                 `sqlite::memory:`, `postgres://user@host/db`), or EVENTSOURCE_STORE",
            )
        })?;
        eventsource_store::StoreConfig::new(url).validated()
    }

    /// Opens the event store the `store` URL names (creating its tables),
    /// with the store's defaults; for other settings, connect
    /// [`store_config`](Self::store_config) yourself.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub async fn connect_store(&self) -> Result<eventsource_store::SqlEventStore> {
        eventsource_store::SqlEventStore::connect(self.store_config()?).await
    }

    /// Sets the settings of consumer group `group` (see the field).
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>, config: GroupConfig) -> Self {
        self.groups.insert(group.into(), config);
        self
    }

    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Config> {
        let value: serde_json::Value = toml::from_str(text)
            .map_err(|e| Error::config(format!("configuration (TOML): {}", e.message())))?;
        Config::from_value(value)
    }

    /// Parses JSON.
    pub fn from_json(text: &str) -> Result<Config> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("configuration (JSON): {e}")))?;
        Config::from_value(value)
    }

    /// Reads a file: JSON when its name ends in `.json`, TOML otherwise.
    /// Errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("reading `{}`: {e}", path.display())))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Config::from_json(&text)
        } else {
            Config::from_toml(&text)
        };
        parsed.map_err(|e| Error::config(format!("`{}`: {e}", path.display())))
    }

    /// Reads the process environment; see [`Config::from_vars`].
    pub fn from_env() -> Result<Config> {
        Config::from_vars(std::env::vars())
    }

    /// Reads `EVENTSOURCE_*` variables from `vars`:
    ///
    /// - `EVENTSOURCE_BUS`: the bus URL (required);
    /// - `EVENTSOURCE_NAMESPACE`: the key, queue or topic prefix;
    /// - `EVENTSOURCE_BUS_<FIELD>`: any other field of the backend's
    ///   configuration (`EVENTSOURCE_BUS_PREFETCH=64`,
    ///   `EVENTSOURCE_BUS_CLAIM_MIN_IDLE=1m`);
    /// - `EVENTSOURCE_STORE`: the store URL;
    /// - `EVENTSOURCE_GROUP_<GROUP>_CONCURRENCY`, `_MAX_ATTEMPTS` and
    ///   `_PREFETCH` (the group name in upper case, `-` written `_`).
    ///
    /// An `EVENTSOURCE_` variable that means nothing is an error naming it.
    ///
    /// ```
    /// use eventsource::Config;
    ///
    /// let config = Config::from_vars([
    ///     ("EVENTSOURCE_BUS".to_owned(), "memory://".to_owned()),
    ///     ("EVENTSOURCE_BUS_GROUP_CAPACITY".to_owned(), "500".to_owned()),
    ///     ("EVENTSOURCE_GROUP_BILLING_CONCURRENCY".to_owned(), "8".to_owned()),
    ///     ("PATH".to_owned(), "/bin".to_owned()),
    /// ])?;
    /// assert_eq!(config.groups["billing"].concurrency, Some(8));
    ///
    /// let err = Config::from_vars([
    ///     ("EVENTSOURCE_BUS".to_owned(), "memory://".to_owned()),
    ///     ("EVENTSOURCE_BUS_GRUP_CAPACITY".to_owned(), "500".to_owned()),
    /// ])
    /// .unwrap_err();
    /// assert!(err.to_string().contains("EVENTSOURCE_BUS_GRUP_CAPACITY"), "{err}");
    /// # Ok::<(), eventsource::Error>(())
    /// ```
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        env::config_from_vars(vars)
    }

    /// The bus configuration for `group`'s members: [`bus`](Self::bus)
    /// with the group's `prefetch`, if it sets one. A prefetch the backend
    /// cannot take (RabbitMQ's is at most 65 535) is an error naming the
    /// group.
    pub fn bus_for(&self, group: &str) -> Result<BusConfig> {
        let Some(prefetch) = self.group(group).prefetch else {
            return Ok(self.bus.clone());
        };
        let mut bus = self.bus.clone();
        match &mut bus {
            #[cfg(feature = "memory")]
            BusConfig::Memory(c) => c.group_capacity = prefetch,
            #[cfg(feature = "redis")]
            BusConfig::Redis(c) => c.prefetch = prefetch,
            #[cfg(feature = "rabbitmq")]
            BusConfig::Rabbitmq(c) => {
                c.prefetch = u16::try_from(prefetch).map_err(|_| {
                    Error::config(format!(
                        "group `{group}`: prefetch {prefetch} is too large for rabbitmq (at most 65535)"
                    ))
                })?;
            }
            #[cfg(feature = "kafka")]
            BusConfig::Kafka(c) => c.prefetch = prefetch,
            #[cfg(feature = "nats")]
            BusConfig::Nats(c) => c.prefetch = prefetch,
            #[cfg(not(any(
                feature = "memory",
                feature = "redis",
                feature = "rabbitmq",
                feature = "kafka",
                feature = "nats"
            )))]
            BusConfig::NoBackend(never) => match *never {},
        }
        Ok(bus)
    }

    /// The settings of `group` (the defaults when it is not listed).
    pub fn group(&self, group: &str) -> GroupConfig {
        self.groups.get(group).cloned().unwrap_or_default()
    }

    /// A subscription builder for `group` with its configured settings;
    /// add the handler (and filter) and build.
    pub fn subscription(&self, group: &str) -> SubscriptionBuilder {
        self.group(group)
            .apply(eventsource_core::Subscription::builder(group))
    }

    pub(crate) fn from_value(mut value: serde_json::Value) -> Result<Config> {
        // The bus is read on its own, so its errors say which backend field.
        let bus = match value.as_object_mut().and_then(|m| m.remove("bus")) {
            Some(bus) => BusConfig::from_value(bus)?,
            None => {
                return Err(Error::config(
                    "configuration: a `bus` table (with at least its `url`) is required",
                ))
            }
        };
        Config::with_bus(bus, value)
    }

    /// `bus`, with the store and groups read from `rest`.
    pub(crate) fn with_bus(bus: BusConfig, rest: serde_json::Value) -> Result<Config> {
        bus.validate()?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rest {
            #[serde(default)]
            store: Option<String>,
            #[serde(default)]
            groups: BTreeMap<String, GroupConfig>,
        }
        let rest: Rest = serde_path_to_error::deserialize(rest)
            .map_err(|e| super::located("configuration", e))?;
        for name in rest.groups.keys() {
            eventsource_core::validate_name("consumer group", name)?;
        }
        Ok(Config {
            bus,
            store: rest.store,
            groups: rest.groups,
        })
    }
}
