//! When to publish a new inventory after node changes: once the nodes have been quiet for
//! a moment, but never later than a bound after the first unpublished change, so a steady
//! stream of node updates (kubelet heartbeats, a rolling relabel) cannot hold it back.
//!
//! Pure: change times and `now` arrive as data; the caller sleeps until
//! [`Debouncer::publish_at`]. NVCA has no debouncer here (it recomputes on a 60 s tick,
//! `pkg/nvca/agent_updates.go`); ours publishes sooner, and its bound stays below that
//! tick so a node added, removed or relabelled reaches SIS within the registration diff
//! interval.

use std::time::Duration;

use crate::machines::Timestamp;

use super::registration::REGISTRATION_DIFF_INTERVAL;

/// Publish after this long without node changes.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(2);
/// Publish at most this long after the first unpublished change.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Unpublished node changes and when they must be published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debouncer {
    quiet: Duration,
    max_delay: Duration,
    first_unpublished: Option<Timestamp>,
    last_change: Option<Timestamp>,
}

impl Default for Debouncer {
    fn default() -> Self {
        Debouncer::new(DEFAULT_QUIET, DEFAULT_MAX_DELAY)
    }
}

impl Debouncer {
    /// `max_delay` is raised to `quiet` if below it, and lowered to the registration diff
    /// interval if above it.
    pub fn new(quiet: Duration, max_delay: Duration) -> Debouncer {
        let quiet = quiet.min(REGISTRATION_DIFF_INTERVAL);
        Debouncer {
            quiet,
            max_delay: max_delay.clamp(quiet, REGISTRATION_DIFF_INTERVAL),
            first_unpublished: None,
            last_change: None,
        }
    }

    /// A node was added, removed or changed at `at`.
    pub fn changed(&mut self, at: Timestamp) {
        self.first_unpublished.get_or_insert(at);
        self.last_change = Some(self.last_change.map_or(at, |last| last.max(at)));
    }

    /// When the pending changes are due; `None` when nothing is pending.
    pub fn publish_at(&self) -> Option<Timestamp> {
        let first = self.first_unpublished?;
        let last = self.last_change.unwrap_or(first);
        Some(last.plus(self.quiet).min(first.plus(self.max_delay)))
    }

    /// Whether to publish at `now`; if so, the pending changes count as published.
    pub fn poll(&mut self, now: Timestamp) -> bool {
        match self.publish_at() {
            Some(due) if due <= now => {
                self.first_unpublished = None;
                self.last_change = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: u64) -> Timestamp {
        Timestamp(seconds * 1000)
    }

    #[test]
    fn a_burst_publishes_once_after_it_goes_quiet() {
        let mut debouncer = Debouncer::default();
        assert_eq!(debouncer.publish_at(), None);
        assert!(!debouncer.poll(at(100)));
        debouncer.changed(at(100));
        debouncer.changed(at(101));
        assert_eq!(debouncer.publish_at(), Some(at(103)));
        assert!(!debouncer.poll(at(102)));
        assert!(debouncer.poll(at(103)));
        assert!(!debouncer.poll(at(104)), "published once");
        assert_eq!(debouncer.publish_at(), None);
    }

    #[test]
    fn constant_churn_still_publishes_by_the_bound() {
        let mut debouncer = Debouncer::default();
        let mut published = Vec::new();
        for second in 0..30 {
            debouncer.changed(at(second));
            if debouncer.poll(at(second)) {
                published.push(second);
            }
        }
        assert_eq!(published, vec![10, 21]);
    }

    #[test]
    fn bounds_are_clamped_below_the_registration_interval() {
        let debouncer = Debouncer::new(Duration::from_secs(5), Duration::from_secs(600));
        let mut probe = debouncer.clone();
        probe.changed(at(0));
        for second in 1..=60 {
            probe.changed(at(second));
        }
        assert_eq!(probe.publish_at(), Some(at(60)));
        let inverted = Debouncer::new(Duration::from_secs(8), Duration::from_secs(1));
        let mut probe = inverted;
        probe.changed(at(0));
        assert_eq!(probe.publish_at(), Some(at(8)));
    }

    proptest! {
        /// Every change is published, no later than the bound after it and never before it.
        #[test]
        fn every_change_is_published_within_the_bound(
            gaps in proptest::collection::vec(0u64..15_000, 1..60),
            quiet_ms in 0u64..5_000,
            max_ms in 0u64..120_000,
        ) {
            let mut debouncer = Debouncer::new(Duration::from_millis(quiet_ms), Duration::from_millis(max_ms));
            let bound = Duration::from_millis(max_ms.max(quiet_ms)).min(REGISTRATION_DIFF_INTERVAL);
            let mut changes = Vec::new();
            let mut t = 0u64;
            for gap in gaps {
                t += gap;
                changes.push(t);
            }
            let end = t + 200_000;
            let mut next_change = 0;
            let mut unpublished: Vec<u64> = Vec::new();
            // Step through time in 100 ms ticks, feeding changes as they happen.
            let mut now = 0u64;
            while now <= end {
                while next_change < changes.len() && changes[next_change] <= now {
                    debouncer.changed(Timestamp(changes[next_change]));
                    unpublished.push(changes[next_change]);
                    next_change += 1;
                }
                if debouncer.poll(Timestamp(now)) {
                    for change in unpublished.drain(..) {
                        prop_assert!(now >= change);
                        // Ticks are 100 ms apart, so allow one tick of lateness.
                        prop_assert!(Duration::from_millis(now - change) <= bound + Duration::from_millis(100));
                    }
                }
                now += 100;
            }
            prop_assert!(unpublished.is_empty());
        }
    }
}
