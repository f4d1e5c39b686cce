//! Retry delays for transient effect failures: exponential, capped, with jitter so that
//! many machines failing together (SIS down) do not retry in lock step.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The delay after the first failure, e.g. "1s".
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// No delay is longer than this, e.g. "5m".
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before attempt `failures + 1`, given a random `jitter` in `[0, 1)`:
    /// the capped exponential delay, of which the upper half is randomised.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(32);
        let full = self
            .initial
            .saturating_mul(1u32 << exponent.min(31))
            .min(self.max);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_per_failure_until_the_cap() {
        let delays: Vec<u64> = (1..=8)
            .map(|failures| backoff().delay(failures, 1.0).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn jitter_keeps_at_least_half_the_delay() {
        assert_eq!(backoff().delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff().delay(3, 0.5), Duration::from_secs(3));
    }

    #[test]
    fn huge_failure_counts_stay_at_the_cap() {
        assert_eq!(backoff().delay(u32::MAX, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn reads_humantime_durations() {
        let parsed: Backoff = serde_json::from_str(r#"{"initial":"500ms","max":"5m"}"#).unwrap();
        assert_eq!(
            parsed,
            Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(300)
            }
        );
    }
}
