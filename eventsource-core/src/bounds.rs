//! The ranges configuration values must fall in: every duration and
//! count a config type holds is checked against one, so a value the
//! broker or the arithmetic cannot take (`connect_timeout =
//! "584542046090y"` overflows an `Instant`) is refused by `validate()`
//! with an error naming the field, not met later as a panic or a read
//! that fails forever.

use std::time::Duration;

use crate::{Error, Result};

/// A millisecond.
pub const MILLISECOND: Duration = Duration::from_millis(1);
/// A minute.
pub const MINUTE: Duration = Duration::from_secs(60);
/// An hour.
pub const HOUR: Duration = Duration::from_secs(60 * 60);
/// A day.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks that `value` of `field` (named with its owner: `redis: block`)
/// lies in `min..=max`.
///
/// ```
/// use std::time::Duration;
/// use eventsource_core::bounds::{duration, HOUR, MILLISECOND};
///
/// assert!(duration("redis: connect_timeout", Duration::from_secs(30), MILLISECOND, HOUR).is_ok());
/// let err = duration("redis: connect_timeout", Duration::MAX, MILLISECOND, HOUR).unwrap_err();
/// assert!(err.to_string().contains("connect_timeout must be between 1ms and 1h"), "{err}");
/// ```
pub fn duration(field: &str, value: Duration, min: Duration, max: Duration) -> Result<()> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(Error::config(format!(
        "{field} must be between {} and {}, got {}",
        shown(min),
        shown(max),
        shown(value)
    )))
}

/// Checks that `value` of `field` lies in `min..=max`.
///
/// ```
/// use eventsource_core::bounds::count;
///
/// assert!(count("redis: prefetch", 64, 1, 10_000).is_ok());
/// let err = count("redis: prefetch", 0, 1, 10_000).unwrap_err();
/// assert!(err.to_string().contains("prefetch must be between 1 and 10000, got 0"), "{err}");
/// ```
pub fn count<T>(field: &str, value: T, min: T, max: T) -> Result<()>
where
    T: PartialOrd + std::fmt::Display,
{
    if value >= min && value <= max {
        return Ok(());
    }
    Err(Error::config(format!(
        "{field} must be between {min} and {max}, got {value}"
    )))
}

/// A duration as configuration writes it (`1h 30m`, `500ms`).
fn shown(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_are_inside_and_the_message_names_the_field() {
        assert!(duration("x: d", MILLISECOND, MILLISECOND, HOUR).is_ok());
        assert!(duration("x: d", HOUR, MILLISECOND, HOUR).is_ok());
        assert!(duration("x: d", Duration::ZERO, MILLISECOND, HOUR).is_err());
        let err = duration("x: d", HOUR + MILLISECOND, MILLISECOND, HOUR).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: x: d must be between 1ms and 1h, got 1h 1ms"
        );
        assert!(count("x: n", 0u64, 1, 5).is_err());
        assert!(count("x: n", 6u64, 1, 5).is_err());
        assert!(count("x: n", 5u64, 1, 5).is_ok());
    }
}
