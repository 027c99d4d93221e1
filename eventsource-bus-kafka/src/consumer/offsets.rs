//! Offsets of the partitions a member reads: which records are out, how
//! the next follows the last (a gap, a repeat), and the commit list that
//! never passes an unfinished record.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::{Offset, TopicPartitionList};

/// How a record's offset follows the partition's last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// The offset expected.
    Next,
    /// Past it: the broker skipped the records from `gap_from` on.
    After {
        /// The first offset skipped.
        gap_from: i64,
    },
    /// Already read in this assignment: a copy fetched before a rebalance
    /// gave the partition back to this member. Not handled twice.
    Again,
}

/// Offsets of one partition: which are out, and how far it has been read.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    pub(super) pending: BTreeSet<i64>,
    /// One past the last offset read in this assignment (0: none read yet).
    pub(super) next: i64,
    /// The group's offset when the partition was assigned: what the first
    /// record must have.
    pub(super) committed: Option<i64>,
}

impl Tracker {
    /// A partition just assigned, whose group offset is `committed`
    /// (`None` when the group has none yet: it starts at the earliest record).
    pub(super) fn assigned(committed: Option<i64>) -> Self {
        Tracker {
            committed,
            ..Tracker::default()
        }
    }

    /// Records `offset` as read and says how it follows the last one.
    pub(super) fn seen(&mut self, offset: i64) -> Read {
        let read_before = self.next > 0;
        if read_before && offset < self.next {
            return Read::Again;
        }
        let expected = if read_before {
            Some(self.next)
        } else {
            self.committed
        };
        self.pending.insert(offset);
        self.next = offset + 1;
        match expected {
            Some(expected) if offset > expected => Read::After { gap_from: expected },
            _ => Read::Next,
        }
    }

    /// The offset to commit: the oldest unfinished one, or the next to read.
    pub(super) fn committable(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

pub(super) type Trackers = Arc<Mutex<HashMap<(String, i32), Tracker>>>;

/// Builds the commit list of `trackers` (only partitions read from).
pub(super) fn commit_list(trackers: &HashMap<(String, i32), Tracker>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), t) in trackers {
        if t.next > 0 {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(t.committable()));
        }
    }
    tpl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_past_the_expected_offset_is_a_gap_and_one_before_it_a_repeat() {
        let mut t = Tracker::assigned(Some(5));
        assert_eq!(t.seen(5), Read::Next);
        assert_eq!(t.seen(6), Read::Next);
        assert_eq!(
            t.seen(9),
            Read::After { gap_from: 7 },
            "7 and 8 were skipped"
        );
        assert_eq!(t.seen(10), Read::Next);
        assert_eq!(t.seen(6), Read::Again, "6 was read already");
        assert_eq!(t.committable(), 5, "reading 6 again changed nothing");
        let mut reset = Tracker::assigned(Some(50));
        assert_eq!(
            reset.seen(0),
            Read::Next,
            "a reset below the commit (a recreated topic) is read, not skipped"
        );
        let mut fresh = Tracker::assigned(None);
        assert_eq!(
            fresh.seen(40),
            Read::Next,
            "no committed offset: nothing expected yet"
        );
    }

    #[test]
    fn never_commits_past_an_unfinished_offset() {
        let mut t = Tracker::default();
        for o in 10..15 {
            t.seen(o);
        }
        t.pending.remove(&10);
        t.pending.remove(&12);
        assert_eq!(t.committable(), 11, "11 is still out");
        t.pending.remove(&11);
        assert_eq!(t.committable(), 13);
        t.pending.remove(&13);
        t.pending.remove(&14);
        assert_eq!(t.committable(), 15, "all done: commit the next to read");
    }
}
