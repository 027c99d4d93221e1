//! The store's durability contract checked at connect, on the local
//! PostgreSQL: a database whose commits return before they are on disk
//! (`synchronous_commit = off`, set on the test's own database) is refused
//! under `durability = require` and only logged under `warn`; the server's
//! defaults connect under `require`; SQLite has nothing to refuse.

mod common;

use common::{postgres_admin_url, TestDb};
use eventsource_core::{Durability, Error};
use eventsource_store::{SqlEventStore, StoreConfig};
use sqlx::Connection;

async fn connect(url: &str, mode: Durability) -> eventsource_core::Result<SqlEventStore> {
    SqlEventStore::connect(StoreConfig::new(url).durability(mode)).await
}

#[tokio::test]
async fn asynchronous_commits_are_refused_under_require() {
    let db = TestDb::postgres().await;
    connect(&db.url, Durability::Require)
        .await
        .expect("the server's defaults keep what they commit");

    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("admin connection");
    let name = db.name().expect("a PostgreSQL database").to_owned();
    sqlx::query(&format!(
        "ALTER DATABASE {name} SET synchronous_commit = off"
    ))
    .execute(&mut admin)
    .await
    .expect("alter database");

    match connect(&db.url, Durability::Require).await {
        Err(Error::Durability { backend, risks }) => {
            assert_eq!(backend, "postgres");
            let settings: Vec<_> = risks.iter().map(|r| r.setting.as_str()).collect();
            assert_eq!(settings, ["synchronous_commit"]);
            assert_eq!(risks[0].value, "off");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("connected to a database that loses its last commits"),
    }
    connect(&db.url, Durability::Warn)
        .await
        .expect("warn connects");
    connect(&db.url, Durability::Off)
        .await
        .expect("off connects");
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_connects_under_require() {
    let db = TestDb::sqlite();
    connect(&db.url, Durability::Require)
        .await
        .expect("the store sets SQLite up itself");
    db.drop_db().await;
}
