//! What an application gets from the facade alone (#33): the store a
//! configuration names, and the test fixture.

use std::sync::Arc;

use eventsource::testing::AggregateTest;
use eventsource::{Aggregate, Config, DomainEvent, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
#[event(aggregate = "Tally")]
struct Counted {
    by: u32,
}

#[derive(Default)]
struct Tally {
    total: u32,
}

impl Aggregate for Tally {
    type Event = Counted;
    type Command = u32;
    type Error = std::io::Error;
    fn apply(&mut self, e: &Counted) {
        self.total += e.by;
    }
    fn handle(&self, by: u32) -> Result<Vec<Counted>, std::io::Error> {
        Ok(vec![Counted { by }])
    }
}

#[tokio::test]
async fn the_configured_store_opens_and_keeps_an_aggregate() {
    let config = Config::from_toml("store = \"sqlite::memory:\"\n[bus]\nurl = \"memory://\"\n")
        .expect("config");
    let store = config.connect_store().await.expect("open the store");
    let tallies = Repository::<Tally>::new(Arc::new(store));
    tallies.execute("t-1", 2).await.expect("saved");
    tallies.execute("t-1", 3).await.expect("saved");
    assert_eq!(tallies.load("t-1").await.expect("load").state().total, 5);
}

#[tokio::test]
async fn no_store_in_the_configuration_is_an_error_naming_the_field() {
    let config = Config::from_toml("[bus]\nurl = \"memory://\"\n").expect("config");
    let err = config
        .connect_store()
        .await
        .expect_err("no store configured");
    assert!(err.to_string().contains("`store` is not set"), "{err}");
    let err = Config::from_toml("store = \"mysql://db\"\n[bus]\nurl = \"memory://\"\n")
        .expect("config")
        .store_config()
        .expect_err("not a store this crate opens");
    assert!(err.to_string().contains("mysql"), "{err}");
}

#[test]
fn the_fixture_comes_with_the_facade() {
    AggregateTest::<Tally>::given([Counted { by: 1 }])
        .when(2)
        .then_expect([Counted { by: 2 }]);
}
