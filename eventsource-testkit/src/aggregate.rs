//! Given/when/then tests for aggregates: a history, a command, and the
//! events it must decide (or the rejection), with no store and no bus.
//!
//! ```
//! use eventsource_testkit::AggregateTest;
//! use eventsource_core::{Aggregate, DomainEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! #[event(aggregate = "Account")]
//! #[serde(tag = "type")]
//! enum AccountEvent { Deposited { amount: u64 }, Withdrawn { amount: u64 } }
//!
//! #[derive(Debug, thiserror::Error)]
//! enum AccountError {
//!     #[error("insufficient funds: balance {balance}")]
//!     InsufficientFunds { balance: u64 },
//! }
//!
//! #[derive(Default)]
//! struct Account { balance: u64 }
//! impl Aggregate for Account {
//!     type Event = AccountEvent;
//!     type Command = u64; // withdraw
//!     type Error = AccountError;
//!     fn apply(&mut self, e: &AccountEvent) {
//!         match e {
//!             AccountEvent::Deposited { amount } => self.balance += amount,
//!             AccountEvent::Withdrawn { amount } => self.balance -= amount,
//!         }
//!     }
//!     fn handle(&self, amount: u64) -> Result<Vec<AccountEvent>, AccountError> {
//!         if amount > self.balance {
//!             return Err(AccountError::InsufficientFunds { balance: self.balance });
//!         }
//!         Ok(vec![AccountEvent::Withdrawn { amount }])
//!     }
//! }
//!
//! AggregateTest::<Account>::given([AccountEvent::Deposited { amount: 10 }])
//!     .when(4)
//!     .then_expect([AccountEvent::Withdrawn { amount: 4 }]);
//!
//! AggregateTest::<Account>::given([AccountEvent::Deposited { amount: 10 }])
//!     .when(40)
//!     .then_expect_error(|e| matches!(e, AccountError::InsufficientFunds { balance: 10 }));
//! ```

use std::fmt::Debug;

use eventsource_core::{Aggregate, DomainEvent};

/// An aggregate rebuilt from a history, ready for one command.
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// The aggregate after `history`, applied in order.
    pub fn given(history: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in history {
            state.apply(&event);
        }
        AggregateTest { state }
    }

    /// A new aggregate, with no history.
    pub fn given_no_history() -> Self {
        Self::given(std::iter::empty())
    }

    /// Runs `command` against the aggregate.
    pub fn when(self, command: A::Command) -> AggregateOutcome<A> {
        AggregateOutcome {
            result: self.state.handle(command),
        }
    }
}

/// What a command decided; assert on it with `then_*`.
pub struct AggregateOutcome<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateOutcome<A>
where
    A::Event: PartialEq + Debug,
{
    /// Fails the test unless the command decided exactly `expected`, in order.
    #[track_caller]
    pub fn then_expect(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(
                events,
                expected,
                "{}: the command decided other events than expected",
                A::Event::AGGREGATE_TYPE
            ),
            Err(e) => panic!(
                "{}: expected events {expected:?}, but the command was rejected: {e}",
                A::Event::AGGREGATE_TYPE
            ),
        }
    }

    /// Fails the test unless the command was rejected with an error that
    /// `check` accepts.
    #[track_caller]
    pub fn then_expect_error(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!(
                "{}: expected a rejection, but the command decided {events:?}",
                A::Event::AGGREGATE_TYPE
            ),
            Err(e) => assert!(
                check(&e),
                "{}: the command was rejected with another error: {e}",
                A::Event::AGGREGATE_TYPE
            ),
        }
    }

    /// The decision itself, for checks the `then_*` methods do not cover.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_core::DomainEvent;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Added(u32);
    impl DomainEvent for Added {
        fn event_type(&self) -> &str {
            "Added"
        }
        const AGGREGATE_TYPE: &'static str = "Sum";
    }

    #[derive(Default)]
    struct Sum(u32);
    impl Aggregate for Sum {
        type Event = Added;
        type Command = u32;
        type Error = std::io::Error;
        fn apply(&mut self, e: &Added) {
            self.0 += e.0;
        }
        fn handle(&self, n: u32) -> Result<Vec<Added>, std::io::Error> {
            if self.0 + n > 10 {
                return Err(std::io::Error::other("over ten"));
            }
            Ok(vec![Added(n)])
        }
    }

    #[test]
    fn the_history_is_applied_before_the_command() {
        AggregateTest::<Sum>::given([Added(4), Added(5)])
            .when(1)
            .then_expect([Added(1)]);
        AggregateTest::<Sum>::given([Added(4), Added(5)])
            .when(2)
            .then_expect_error(|e| e.to_string() == "over ten");
        assert!(AggregateTest::<Sum>::given_no_history()
            .when(3)
            .into_result()
            .is_ok());
    }

    #[test]
    #[should_panic(expected = "decided other events")]
    fn other_events_fail_the_test() {
        AggregateTest::<Sum>::given_no_history()
            .when(1)
            .then_expect([Added(2)]);
    }

    #[test]
    #[should_panic(expected = "expected a rejection")]
    fn an_accepted_command_fails_an_error_expectation() {
        AggregateTest::<Sum>::given_no_history()
            .when(1)
            .then_expect_error(|_| true);
    }

    #[test]
    #[should_panic(expected = "was rejected")]
    fn a_rejection_fails_an_events_expectation() {
        AggregateTest::<Sum>::given([Added(10)])
            .when(1)
            .then_expect([Added(1)]);
    }
}
