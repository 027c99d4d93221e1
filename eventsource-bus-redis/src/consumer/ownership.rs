//! How a group's members share its streams: one of three modes, chosen by
//! the configuration. Each mode's own work lives in its file — the shared
//! mode needs none beyond the reader and the takeover, the single active
//! reader is `single_active.rs`, partitions are `partitioned.rs` — and
//! the reader asks the mode, never the configuration's flags.

use crate::RedisBusConfig;

/// How a group's members share its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ownership {
    /// Every member reads the event stream; XREADGROUP shares its entries
    /// among them, and each takes over what a dead member left.
    Shared,
    /// One member reads, holding the group's lease; the others stand by.
    SingleActive,
    /// The event stream is this many partitions; each member reads the
    /// ones it holds the lease of.
    Partitioned(u32),
}

impl Ownership {
    /// The mode `config` asks for (validation refuses both at once).
    pub(super) fn of(config: &RedisBusConfig) -> Self {
        match (config.partitions, config.single_active_consumer) {
            (Some(n), _) => Ownership::Partitioned(n),
            (None, true) => Ownership::SingleActive,
            (None, false) => Ownership::Shared,
        }
    }

    /// The partition count, in partitioned mode.
    pub(super) fn partitions(self) -> Option<u32> {
        match self {
            Ownership::Partitioned(n) => Some(n),
            _ => None,
        }
    }

    /// Whether one member at a time reads.
    pub(super) fn single_active(self) -> bool {
        self == Ownership::SingleActive
    }
}
