//! An instant written as RFC 3339 text exactly as chrono's `to_rfc3339`
//! writes it (`2026-12-06T19:40:00.123456+00:00`: the fraction in 3, 6
//! or 9 digits, or none; a leap second as second 60), but into a buffer
//! on the stack: chrono's goes through `fmt` and a `String`, and was a
//! fifth of what writing a NATS body cost.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Room for the longest form: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+00:00`.
pub(crate) const LEN: usize = 35;

/// `t` as RFC 3339 in `buf`; `None` for a year outside 0..=9999, which
/// chrono writes with a sign (the caller falls back to it).
pub(crate) fn rfc3339<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; LEN]) -> Option<&'b str> {
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let (mut second, mut nano) = (t.second(), t.nanosecond());
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    let mut at = 0;
    put(buf, &mut at, year, 4);
    for (sep, value) in [
        (b'-', t.month()),
        (b'-', t.day()),
        (b'T', t.hour()),
        (b':', t.minute()),
        (b':', second),
    ] {
        buf[at] = sep;
        at += 1;
        put(buf, &mut at, value, 2);
    }
    let fraction = match nano {
        0 => None,
        n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
        n if n % 1_000 == 0 => Some((n / 1_000, 6)),
        n => Some((n, 9)),
    };
    if let Some((value, width)) = fraction {
        buf[at] = b'.';
        at += 1;
        put(buf, &mut at, value, width);
    }
    buf[at..at + 6].copy_from_slice(b"+00:00");
    at += 6;
    std::str::from_utf8(&buf[..at]).ok()
}

/// Writes `value` in `width` digits (zero-padded) at `at`, and moves `at` past them.
fn put(buf: &mut [u8; LEN], at: &mut usize, value: u32, width: usize) {
    let mut rest = value;
    for digit in buf[*at..*at + width].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    *at += width;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    #[test]
    fn writes_what_chrono_writes() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("a date");
        let mut instants: Vec<DateTime<Utc>> = [0, 5_000_000, 123_000, 1, 999_999_999, 120_000_000]
            .into_iter()
            .map(|nano| {
                Utc.from_utc_datetime(&day.and_hms_nano_opt(19, 4, 9, nano).expect("a time"))
            })
            .collect();
        // A leap second, and the first and last years of four digits.
        instants.push(
            Utc.from_utc_datetime(
                &day.and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                    .expect("a leap second"),
            ),
        );
        instants.push(
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0)
                .single()
                .expect("an instant"),
        );
        instants.push(
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .expect("an instant"),
        );
        instants.push(Utc::now());
        // A spread of instants over the years, at odd nanoseconds.
        let mut seconds = 0i64;
        while seconds < 250_000_000_000 {
            let nano = (seconds % 1_000_000_007) as u32 % 1_000_000_000;
            instants.push(
                Utc.timestamp_opt(seconds, nano)
                    .single()
                    .expect("an instant"),
            );
            seconds += 997_654_321;
        }
        let mut buf = [0; LEN];
        for t in instants {
            assert_eq!(
                rfc3339(&t, &mut buf),
                Some(t.to_rfc3339().as_str()),
                "{t:?}"
            );
        }
        // Outside four digits: left to chrono.
        let far = Utc
            .with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
            .single()
            .expect("an instant");
        assert_eq!(rfc3339(&far, &mut buf), None);
        let before = Utc
            .with_ymd_and_hms(-1, 1, 1, 0, 0, 0)
            .single()
            .expect("an instant");
        assert_eq!(rfc3339(&before, &mut buf), None);
    }
}
