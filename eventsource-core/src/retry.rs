//! How often, and how patiently, a failed delivery is retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// `initial * multiplier^(retry-1)`, capped at `max`, optionally with
    /// full jitter (a uniform random delay between half and all of it).
    /// In a config file only `initial` and `max` are needed: `multiplier`
    /// defaults to 2 and `jitter` to on, as in [`RetryPolicy::exponential`].
    Exponential {
        /// The delay before the first retry.
        #[serde(with = "humantime_serde")]
        initial: Duration,
        /// Growth factor per retry (at least 1.0; default 2.0).
        #[serde(default = "default_multiplier")]
        multiplier: f64,
        /// The cap.
        #[serde(with = "humantime_serde")]
        max: Duration,
        /// Whether to randomize each delay in `[d/2, d]` (default on).
        #[serde(default = "default_jitter")]
        jitter: bool,
    },
}

fn default_multiplier() -> f64 {
    2.0
}

fn default_jitter() -> bool {
    true
}

/// How a failed delivery is retried before it goes to the dead-letter queue.
///
/// `max_attempts` counts every delivery, the first included: with 3, a
/// handler is called at most three times for one message.
///
/// ```
/// use std::time::Duration;
/// use eventsource_core::RetryPolicy;
///
/// let policy = RetryPolicy::exponential(5, Duration::from_millis(100), Duration::from_secs(5))?;
/// assert_eq!(policy.max_attempts(), 5);
/// assert!(policy.delay_before(2) <= Duration::from_millis(100));
/// assert!(RetryPolicy::fixed(0, Duration::ZERO).is_err());
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRetryPolicy", into = "RawRetryPolicy")]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

#[derive(Serialize, Deserialize)]
struct RawRetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
}

impl TryFrom<RawRetryPolicy> for RetryPolicy {
    type Error = Error;
    fn try_from(raw: RawRetryPolicy) -> Result<Self> {
        RetryPolicy::new(raw.max_attempts, raw.backoff)
    }
}

impl From<RetryPolicy> for RawRetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        RawRetryPolicy {
            max_attempts: p.max_attempts,
            backoff: p.backoff,
        }
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, exponential from 100 ms doubling to at most 10 s, with jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(10),
                jitter: true,
            },
        }
    }
}

impl RetryPolicy {
    /// The longest delay a policy may ask for: a day. A message that waits
    /// longer between attempts belongs in the dead-letter queue.
    pub const MAX_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// The most attempts a policy may make. A message that still fails
    /// after this many belongs in the dead-letter queue; more, with a
    /// zero delay, would be a hot loop holding its aggregate.
    pub const MAX_ATTEMPTS: u32 = 1_000;

    /// A validated policy.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Result<Self> {
        crate::bounds::count(
            "retry policy: max_attempts",
            max_attempts,
            1,
            Self::MAX_ATTEMPTS,
        )?;
        let delays: &[(&str, Duration)] = match &backoff {
            Backoff::Fixed { delay } => &[("delay", *delay)],
            Backoff::Exponential { initial, max, .. } => {
                &[("initial delay", *initial), ("cap", *max)]
            }
        };
        for (what, d) in delays {
            if *d > Self::MAX_DELAY {
                return Err(Error::config(format!(
                    "retry policy: {what} {d:?} exceeds the longest allowed delay, {:?}",
                    Self::MAX_DELAY
                )));
            }
        }
        if let Backoff::Exponential {
            initial,
            multiplier,
            max,
            ..
        } = backoff
        {
            if !multiplier.is_finite() || multiplier < 1.0 {
                return Err(Error::config(format!(
                    "retry policy: multiplier must be a finite number >= 1.0, got {multiplier}"
                )));
            }
            if initial > max {
                return Err(Error::config(format!(
                    "retry policy: initial delay {initial:?} exceeds the cap {max:?}"
                )));
            }
        }
        Ok(RetryPolicy {
            max_attempts,
            backoff,
        })
    }

    /// `max_attempts` deliveries with the same `delay` between them.
    pub fn fixed(max_attempts: u32, delay: Duration) -> Result<Self> {
        Self::new(max_attempts, Backoff::Fixed { delay })
    }

    /// Doubling delays from `initial` up to `max`, with jitter.
    pub fn exponential(max_attempts: u32, initial: Duration, max: Duration) -> Result<Self> {
        Self::new(
            max_attempts,
            Backoff::Exponential {
                initial,
                multiplier: 2.0,
                max,
                jitter: true,
            },
        )
    }

    /// One attempt: a failure goes straight to the dead-letter queue.
    pub fn no_retry() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed {
                delay: Duration::ZERO,
            },
        }
    }

    /// How many deliveries at most, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Whether another attempt follows a failed attempt number `attempt` (1-based).
    pub fn should_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait before attempt number `attempt` (2 for the first retry).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let retry = attempt.saturating_sub(1).max(1);
        match self.backoff {
            Backoff::Fixed { delay } => delay,
            Backoff::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => {
                let factor = multiplier.powi(i32::try_from(retry - 1).unwrap_or(i32::MAX));
                let secs = (initial.as_secs_f64() * factor).min(max.as_secs_f64());
                // Saturating: an overflowing or NaN product means "the cap".
                let delay = Duration::try_from_secs_f64(secs).unwrap_or(max).min(max);
                if jitter {
                    delay.mul_f64(0.5 + fastrand::f64() * 0.5)
                } else {
                    delay
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_past_a_day_are_refused_and_the_cap_never_overflows() {
        let err = RetryPolicy::exponential(3, Duration::MAX, Duration::MAX)
            .expect_err("a cap of Duration::MAX");
        assert!(err.to_string().contains("longest allowed delay"), "{err}");
        assert!(RetryPolicy::fixed(3, Duration::from_secs(90_000)).is_err());
        let hot = RetryPolicy::fixed(u32::MAX, Duration::ZERO).expect_err("a hot retry loop");
        assert!(
            hot.to_string()
                .contains("max_attempts must be between 1 and 1000"),
            "{hot}"
        );
        let p = RetryPolicy::new(
            RetryPolicy::MAX_ATTEMPTS,
            Backoff::Exponential {
                initial: RetryPolicy::MAX_DELAY,
                multiplier: 1e300,
                max: RetryPolicy::MAX_DELAY,
                jitter: false,
            },
        )
        .expect("valid");
        for attempt in [2, 3, 100, u32::MAX] {
            assert_eq!(p.delay_before(attempt), RetryPolicy::MAX_DELAY);
        }
    }

    #[test]
    fn exponential_grows_and_caps() {
        let p = RetryPolicy::new(
            10,
            Backoff::Exponential {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_millis(500),
                jitter: false,
            },
        )
        .expect("valid");
        assert_eq!(p.delay_before(2), Duration::from_millis(100));
        assert_eq!(p.delay_before(3), Duration::from_millis(200));
        assert_eq!(p.delay_before(4), Duration::from_millis(400));
        assert_eq!(p.delay_before(5), Duration::from_millis(500));
        assert_eq!(p.delay_before(60), Duration::from_millis(500));
        assert!(p.should_retry(9));
        assert!(!p.should_retry(10));
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        let p = RetryPolicy::exponential(5, Duration::from_millis(200), Duration::from_secs(1))
            .expect("valid");
        for _ in 0..200 {
            let d = p.delay_before(3);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }

    #[test]
    fn invalid_policies_are_rejected_with_reasons() {
        assert!(RetryPolicy::fixed(0, Duration::ZERO)
            .expect_err("zero attempts")
            .to_string()
            .contains("max_attempts"));
        let err = RetryPolicy::new(
            3,
            Backoff::Exponential {
                initial: Duration::from_secs(2),
                multiplier: 0.5,
                max: Duration::from_secs(1),
                jitter: false,
            },
        )
        .expect_err("bad multiplier");
        assert!(err.to_string().contains("multiplier"), "{err}");
    }

    #[test]
    fn serde_validates_and_reads_human_durations() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts":3,"backoff":{"kind":"fixed","delay":"250ms"}}"#,
        )
        .expect("parse");
        assert_eq!(p.delay_before(2), Duration::from_millis(250));
        let bad = serde_json::from_str::<RetryPolicy>(
            r#"{"max_attempts":0,"backoff":{"kind":"fixed","delay":"1s"}}"#,
        );
        assert!(bad
            .expect_err("invalid")
            .to_string()
            .contains("max_attempts"));
    }

    #[test]
    fn an_exponential_backoff_needs_only_its_delays() {
        let p: RetryPolicy = serde_json::from_str(
            r#"{"max_attempts":4,"backoff":{"kind":"exponential","initial":"100ms","max":"5s"}}"#,
        )
        .expect("multiplier and jitter have defaults");
        assert_eq!(
            p,
            RetryPolicy::exponential(4, Duration::from_millis(100), Duration::from_secs(5))
                .expect("valid")
        );
    }
}
