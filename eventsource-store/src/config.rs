//! Configuration of the SQL event store.

use std::time::Duration;

use eventsource_core::bounds::{self, HOUR, MILLISECOND};
use eventsource_core::{is_secret_parameter, redact_url, Durability, Error, Result};
use serde::{Deserialize, Serialize};

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// `sqlite://path.db` or `sqlite::memory:` — the embedded default. An
    /// in-memory database lives in one connection, kept open for the
    /// store's life (`max_connections` does not apply to it).
    Sqlite,
    /// `postgres://user:password@host/db` — for production.
    Postgres,
}

impl Dialect {
    /// The dialect of `url`, or a configuration error.
    /// A dialect whose cargo feature (`sqlite`, `postgres`) is off is a
    /// configuration error naming the feature.
    pub fn of(url: &str) -> Result<Dialect> {
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(Error::config(format!(
                "event store: unsupported url `{}`: use sqlite://FILE or postgres://USER@HOST/DB",
                redact_url(url)
            )));
        };
        let compiled = match dialect {
            Dialect::Sqlite => cfg!(feature = "sqlite"),
            Dialect::Postgres => cfg!(feature = "postgres"),
        };
        if !compiled {
            return Err(Error::config(format!(
                "event store: `{}` needs the `{}` feature of eventsource-store",
                redact_url(url),
                dialect.name()
            )));
        }
        Ok(dialect)
    }

    /// The backend name used in errors.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// How to open the store.
///
/// ```
/// use eventsource_store::StoreConfig;
///
/// let config = StoreConfig::new("sqlite://events.db").outbox(true).validated()?;
/// assert!(config.outbox);
/// assert!(StoreConfig::new("mysql://x").validated().is_err());
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StoreConfig {
    /// `sqlite://FILE` (created if missing) or `postgres://USER:PASSWORD@HOST/DB`.
    pub url: String,
    /// Writes an outbox row for every appended event, in the same
    /// transaction, for an [`OutboxRelay`](crate::OutboxRelay) to publish.
    pub outbox: bool,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection (and, on SQLite, for the write lock).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// What `connect` does when PostgreSQL does not keep what it commits
    /// (`fsync`, `full_page_writes` or `synchronous_commit` off): `warn`
    /// (the default) logs each setting, `require` refuses to connect, `off`
    /// does not look. SQLite has nothing to check (the store sets it up).
    pub durability: Durability,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("outbox", &self.outbox)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("durability", &self.durability)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://eventsource.db".to_owned(),
            outbox: false,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            durability: Durability::Warn,
        }
    }
}

impl StoreConfig {
    /// Starts from the defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<Dialect> {
        let dialect = Dialect::of(&self.url)?;
        // sqlx reads `password` from the query; any other parameter it
        // does not know it logs with its value, so a secret one (libpq's
        // `sslpassword`) would reach the logs.
        if let Some((_, query)) = self.url.split_once('?') {
            for pair in query.split('&') {
                let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                if name != "password" && is_secret_parameter(name) {
                    return Err(Error::config(format!(
                        "event store: url `{}`: the query parameter `{name}` is not read by the \
                         store's driver (sqlx), which would log its value; remove it",
                        redact_url(&self.url)
                    )));
                }
            }
        }
        bounds::count(
            "event store: max_connections",
            self.max_connections,
            1,
            10_000,
        )?;
        bounds::duration(
            "event store: acquire_timeout",
            self.acquire_timeout,
            MILLISECOND,
            HOUR,
        )?;
        Ok(dialect)
    }
}

eventsource_core::config_setters!(StoreConfig {
    outbox: bool,
    max_connections: u32,
    acquire_timeout: Duration,
    durability: Durability,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gets_its_dialect_or_names_the_feature_it_needs() {
        let sqlite = Dialect::of("sqlite::memory:");
        let postgres = Dialect::of("postgres://app:s3cret@db/app");
        if cfg!(feature = "sqlite") {
            assert_eq!(sqlite.expect("sqlite compiled in"), Dialect::Sqlite);
        }
        if cfg!(feature = "postgres") {
            assert_eq!(postgres.expect("postgres compiled in"), Dialect::Postgres);
        } else {
            let err = postgres.expect_err("postgres compiled out").to_string();
            assert!(err.contains("`postgres` feature"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        assert!(Dialect::of("mysql://x").is_err());
    }
}
