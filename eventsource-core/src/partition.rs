//! Partitions: where an aggregate's events go in a partitioned group.
//!
//! A partitioned bus routes each event to one of `N` partitions by a
//! stable hash of its aggregate id, so every event of an aggregate lands in
//! one partition, and a partition has one owner per group at a time: the
//! aggregate's events are handled in order across all members of a group
//! (see `docs/adr/0010-partitioned-groups.md`).

use std::collections::BTreeSet;

/// The partition of `aggregate_id` among `partitions` (which must be at
/// least 1): FNV-1a 64 of its UTF-8 bytes, modulo `partitions`.
///
/// The hash is fixed, not seeded, so every process — and every language —
/// computes the same partition for an aggregate.
///
/// ```
/// use eventsource_core::partition_of;
///
/// let p = partition_of("order-42", 16);
/// assert!(p < 16);
/// assert_eq!(p, partition_of("order-42", 16));
/// ```
pub fn partition_of(aggregate_id: &str, partitions: u32) -> u32 {
    (fnv1a64(aggregate_id.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// The partitions `me` should own among a group's live `members` (sorted
/// by name, `me` among them): partition `p` goes to the member of rank
/// `p % members.len()`, so every member gets `partitions / members` or one
/// more, and members beyond the partition count stand by. Empty when `me`
/// is not listed. (For backends whose members agree on a register of
/// names, as Redis's and NATS's do; see [`driver`](crate::driver).)
pub fn assigned_partitions(members: &[String], me: &str, partitions: u32) -> BTreeSet<u32> {
    let Some(rank) = members.iter().position(|m| m == me) else {
        return BTreeSet::new();
    };
    (0..partitions)
        .filter(|p| *p as usize % members.len() == rank)
        .collect()
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_split_evenly_and_each_has_one_owner() {
        let members: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
        let shares: Vec<BTreeSet<u32>> = members
            .iter()
            .map(|m| assigned_partitions(&members, m, 16))
            .collect();
        let sizes: Vec<usize> = shares.iter().map(BTreeSet::len).collect();
        assert_eq!(sizes, [6, 5, 5]);
        let all: BTreeSet<u32> = shares.iter().flatten().copied().collect();
        assert_eq!(all.len(), 16, "every partition owned");
        assert_eq!(sizes.iter().sum::<usize>(), 16, "none owned twice");
        assert!(assigned_partitions(&members, "stranger", 16).is_empty());
        let many: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
        assert_eq!(
            assigned_partitions(&many, "m19", 16).len(),
            0,
            "more members than partitions: some stand by"
        );
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference (draft-eastlake-fnv): "", "a", "foobar".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partitions_are_stable_and_in_range() {
        assert_eq!(partition_of("foobar", 1), 0);
        assert_eq!(
            partition_of("foobar", 16),
            (0x8594_4171_f739_67e8u64 % 16) as u32
        );
        assert_eq!(
            partition_of("anything", 0),
            0,
            "0 is taken as 1, not a panic"
        );
        let mut seen = [0usize; 8];
        for i in 0..8_000 {
            seen[partition_of(&format!("order-{i}"), 8) as usize] += 1;
        }
        assert!(
            seen.iter().all(|n| (800..1_200).contains(n)),
            "8,000 ids spread evenly over 8 partitions: {seen:?}"
        );
    }
}
