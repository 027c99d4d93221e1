//! # eventsource-testkit
//!
//! The conformance suite every `EventBus` backend runs (one async function
//! per promise of the delivery contract, against a fresh bus), the fault
//! and membership scenarios, and fixtures for application tests
//! ([`AggregateTest`], [`handle_with_retries`]). A crate of its own, as
//! tokio-test and tower-test are: a dev-dependency, never in a build.
//!
//! A backend's integration test implements [`BusFactory`] and expands
//! [`conformance_suite!`](crate::conformance_suite), which writes one
//! `#[tokio::test]` per case:
//!
//! `eventsource-bus-memory/tests/conformance.rs` is the whole of it for the
//! memory bus: a `BusFactory` whose `bus()` returns a new `MemoryBus`, and
//! `eventsource_testkit::conformance_suite!(Factory);`.
//!
//! Every case asserts with a message that says what was expected; waits are
//! channels and polls with a deadline, never bare sleeps. Absence (no
//! duplicate, no delivery after unsubscribe) is checked over
//! [`BusFactory::quiet`] after a positive control has arrived.

mod aggregate;
pub mod bench;
pub mod checkout;
mod conformance;
mod factory;
mod fault;
mod fixtures;
mod garbage;
mod handling;
mod membership;
mod newer_version;
mod parking;
mod partition_count;
mod personal;
mod ports;
mod proxy;
mod redeliver;
mod secrets;
mod single_active;
mod spans;
mod takeover;
#[cfg(feature = "trace")]
mod trace;
mod unreadable;

pub use aggregate::{AggregateOutcome, AggregateTest};
pub use conformance::*;
pub use factory::{peers_of, BusFactory, Features, GroupStart};
pub use fault::{survives_outage, OutageReport};
pub use fixtures::{dead_letters_of, eventually, probe, OtherCreated, Probe, Recorder};
pub use garbage::garbage_is_dead_lettered_raw;
pub use handling::{handle_with_retries, HandlingReport};
pub use membership::*;
pub use newer_version::a_newer_version_waits_for_a_member_that_knows_it;
pub use parking::*;
pub use partition_count::{a_namespace_keeps_its_partition_count, PartitionCountRefusals};
pub use personal::{personal_data_is_sealed_on_the_bus, RawDump};
pub use ports::{free_port, wait_until_listening};
pub use proxy::{publish_gives_up_within_its_timeout, FreezableProxy};
pub use redeliver::redeliver_reaches_one_group_only;
pub use secrets::{assert_never_shown, urls_with_password};
pub use single_active::one_member_reads_and_a_standby_takes_over;
pub use spans::{CapturedSpan, SpanCapture};
pub use takeover::{a_dead_members_event_goes_to_another, BJoins};
#[cfg(feature = "trace")]
pub use trace::handler_span_joins_the_publishers_trace;
pub use unreadable::an_unreadable_letter_stops_nothing;

/// Writes one `#[tokio::test]` per conformance case, each calling the case
/// with the given [`BusFactory`] expression.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            delivers_once_to_one_group,
            fans_out_to_every_group,
            unsubscribe_stops_delivery,
            filters_select_events,
            failing_handler_does_not_affect_other_groups,
            retries_then_succeeds,
            a_retry_backoff_does_not_hold_the_worker,
            a_forged_replay_marker_reaches_every_group,
            dead_letters_after_max_attempts_with_metadata,
            replay_redelivers_only_to_the_failing_group,
            keeps_per_aggregate_order_under_concurrency,
            competing_consumers_split_work_without_loss_or_duplicates,
            undecodable_payload_goes_to_dlq_without_stopping_the_consumer,
            panicking_handler_is_retried_like_a_failure,
            dead_letters_can_be_deleted_and_purged,
            shutdown_lets_in_flight_handlers_finish,
            a_new_group_starts_where_the_backend_says,
            group_stats_come_from_the_broker,
            a_watch_follows_new_events_without_taking_any,
            parks_an_aggregate_behind_its_dead_letter,
            discard_releases_what_is_parked_behind_it,
            a_newer_version_waits_for_a_member_that_knows_it,
            redeliver_reaches_one_group_only,
        );
        $crate::membership_suite!($factory);
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                $crate::$case(&factory).await;
            }
        )*
    };
}

/// Writes one `#[tokio::test]` per case of the membership suite (groups
/// whose members join, leave and differ); [`conformance_suite!`](crate::conformance_suite)
/// includes it. A backend with a mode that changes what it promises (one
/// active member per group) runs it again with that mode's factory.
#[macro_export]
macro_rules! membership_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            keeps_order_with_ten_members,
            keeps_order_while_members_join_and_leave,
            keeps_order_across_a_changing_group,
            clean_leave_hands_over_promptly,
            a_leaver_hands_over_what_it_held_in_order,
            members_with_different_filters_are_refused,
            new_member_after_shutdown_with_handlers_in_flight_loses_nothing,
        );
    };
}
