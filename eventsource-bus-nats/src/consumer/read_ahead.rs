//! How far ahead of its workers a member reads: the messages it has
//! asked for and not yet received, plus those queued for the workers.
//!
//! A JetStream pull costs a round trip, so workers that get through
//! thousands of messages a second starve unless more is asked for
//! before they run out. But what one member asks for, the server gives
//! it first, before another member's request gets anything; so workers
//! that take 10 ms a message would, with a deep read-ahead, sit on a
//! burst that idle members could handle. The depth follows the workers:
//! what they finished in the last `WINDOW`, at least one request's worth
//! (as much as a prefetch of 32 reads), at most the prefetch.

use std::time::Duration;

use tokio::time::Instant;

/// How long a stretch of the workers' pace the depth follows.
const WINDOW: Duration = Duration::from_millis(10);

/// A member's read-ahead depth.
pub(super) struct ReadAhead {
    floor: usize,
    ceiling: usize,
    /// Where the current stretch began, and the count of messages
    /// finished then.
    since: Instant,
    finished_then: u64,
    depth: usize,
}

impl ReadAhead {
    /// Between `floor` and `prefetch` (a floor above the prefetch is the prefetch).
    pub(super) fn new(floor: usize, prefetch: usize, now: Instant) -> Self {
        let floor = floor.min(prefetch);
        ReadAhead {
            floor,
            ceiling: prefetch,
            since: now,
            finished_then: 0,
            depth: floor,
        }
    }

    /// The depth now, given how many messages the workers have finished
    /// in all (a count that only grows).
    pub(super) fn depth(&mut self, finished: u64, now: Instant) -> usize {
        let stretch = now.saturating_duration_since(self.since);
        if stretch >= WINDOW {
            let done = finished.saturating_sub(self.finished_then) as f64;
            let per_window = done * WINDOW.as_secs_f64() / stretch.as_secs_f64();
            self.depth = (per_window as usize).clamp(self.floor, self.ceiling);
            self.since = now;
            self.finished_then = finished;
        }
        self.depth
    }

    /// The most one request asks for: the floor (a burst is shared while
    /// the handlers are slow), or half a deeper depth. Fast handlers are
    /// fed in two requests' worth, not four: each request is work for the
    /// server (parsed, queued, answered), and asking for a quarter of 128
    /// cost 7 % of the end-to-end rate. A large prefetch still takes a
    /// few requests, not hundreds (the server refuses a consumer's
    /// requests past its `max_waiting`, 512).
    pub(super) fn request_at_most(&self) -> usize {
        (self.depth / 2).max(self.floor)
    }

    /// Whether `room` free slots are worth a request: once half the depth
    /// is free (at least one slot). Fast workers are fed in requests of
    /// half the depth, not in a request for each few slots freed; slow
    /// ones (the depth at the floor) in requests of 16 to 32.
    pub(super) fn worth_asking(&self, room: usize) -> bool {
        room >= (self.depth / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_follows_the_workers_pace_within_its_bounds() {
        let start = Instant::now();
        let mut ahead = ReadAhead::new(32, 128, start);
        assert_eq!(
            ahead.depth(0, start),
            32,
            "no pace yet: one request's worth"
        );
        // Fast workers: 500 in 10 ms.
        assert_eq!(
            ahead.depth(500, start + WINDOW),
            128,
            "at most the prefetch"
        );
        // Within a stretch the depth holds.
        assert_eq!(
            ahead.depth(500, start + WINDOW + Duration::from_millis(5)),
            128
        );
        // 60 in the next 10 ms.
        assert_eq!(ahead.depth(560, start + WINDOW * 2), 60);
        // Slow workers: one message in 20 ms.
        assert_eq!(
            ahead.depth(561, start + WINDOW * 4),
            32,
            "at least the floor"
        );
        // Idle a long while, then a burst: the average over the stretch.
        assert_eq!(ahead.depth(661, start + Duration::from_secs(5)), 32);
        // Requests: one floor's worth, half a deep depth.
        let mut deep = ReadAhead::new(32, 10_000, start);
        assert_eq!(deep.request_at_most(), 32);
        deep.depth(100_000, start + WINDOW);
        assert_eq!(deep.request_at_most(), 5_000);
        // Asked for once half the depth is free.
        assert!(!deep.worth_asking(4_999) && deep.worth_asking(5_000));
        let slow = ReadAhead::new(32, 128, start);
        assert!(!slow.worth_asking(15) && slow.worth_asking(16));
        assert!(ReadAhead::new(1, 1, start).worth_asking(1));
        // A prefetch below the floor bounds both.
        let mut small = ReadAhead::new(32, 8, start);
        assert_eq!(small.depth(0, start), 8);
        assert_eq!(small.depth(1000, start + WINDOW), 8);
    }
}
