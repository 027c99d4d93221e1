//! Real databases for the store tests: a fresh SQLite file, or a fresh
//! PostgreSQL database on the local server, per test.

#![allow(dead_code)]

use eventsource_store::{SqlEventStore, StoreConfig};

/// `POSTGRES_URL` (a server URL with a database to connect to first), or
/// the local server the test script starts.
pub fn postgres_admin_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of the test's own; dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub url: String,
    name: Option<String>,
}

impl TestDb {
    /// A new SQLite file in the temp directory.
    pub fn sqlite() -> TestDb {
        let path =
            std::env::temp_dir().join(format!("es-store-{}.db", uuid::Uuid::now_v7().simple()));
        TestDb {
            url: format!("sqlite://{}", path.display()),
            name: None,
        }
    }

    /// A new database on the PostgreSQL server.
    pub async fn postgres() -> TestDb {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!("es_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}). Start it with ./scripts/test.sh, or \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set POSTGRES_URL.",
                eventsource_core::redact_url(&admin)
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b)
            .expect("url with a database");
        TestDb {
            url: format!("{base}/{name}"),
            name: Some(name),
        }
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub async fn store(&self, outbox: bool) -> SqlEventStore {
        SqlEventStore::connect(
            StoreConfig::new(&self.url)
                .outbox(outbox)
                .validated()
                .expect("valid config"),
        )
        .await
        .expect("connect to the test database")
    }

    /// Drops the PostgreSQL database or deletes the SQLite file.
    pub async fn drop_db(self) {
        use sqlx::Connection;
        match self.name {
            Some(name) => {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://").to_owned();
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }
}

/// Writes one `#[tokio::test]` per case and dialect: `{case}_sqlite` and `{case}_postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = $crate::common::TestDb::sqlite();
                    super::$case(&db).await;
                    db.drop_db().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$case(&db).await;
                    db.drop_db().await;
                }
            )*
        }
    };
}
