//! How a group's members share its events: one of three modes, chosen by
//! the configuration. A member reads lanes — durable consumers of the
//! events stream: one, or one per partition — and the mode says which:
//! every member the one lane (shared), the lease holder the one lane
//! (single active, `single_active.rs`), or each member the partitions it
//! holds the lease of (`partitioned.rs`). The reader asks the mode, never
//! the configuration's flags.

use crate::NatsBusConfig;

/// How a group's members share its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ownership {
    /// Every member pulls from the group's one consumer; the server shares
    /// its messages among them.
    Shared,
    /// One member pulls, holding the group's lease; the others stand by.
    SingleActive,
    /// The events are this many partitions, each with its consumer; each
    /// member pulls from the ones it holds the lease of.
    Partitioned(u32),
}

impl Ownership {
    /// The mode `config` asks for (validation refuses both at once).
    pub(super) fn of(config: &NatsBusConfig) -> Self {
        match (config.partitions, config.single_active_consumer) {
            (Some(n), _) => Ownership::Partitioned(n),
            (None, true) => Ownership::SingleActive,
            (None, false) => Ownership::Shared,
        }
    }

    /// Whether an aggregate's events stay in order across the members.
    pub(super) fn ordered(self) -> bool {
        self != Ownership::Shared
    }
}

/// Where a member stands with a lane it holds the lease of (or, shared,
/// the one lane every member reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// Just taken from a member that died holding messages: not pulled
    /// until this instant, by when the server has made the dead member's
    /// messages due again (their `ack_wait` ran out with its lease), so
    /// that they come first, in order.
    Draining(tokio::time::Instant),
    /// Pulled from.
    Reading,
    /// Meant for another member: no longer pulled; the lease goes once
    /// every message pulled from it is settled.
    Releasing,
}

/// A lane this member holds: where it stands, and the sequence of its
/// lease's last renewal (0 in shared mode, which has no lease).
#[derive(Debug, Clone, Copy)]
pub(super) struct Owned {
    pub(super) part: Part,
    pub(super) lease: u64,
}
