//! Reading PG's ISO-style date/time text output into comparable numbers.
//!
//! Only `DateStyle = ISO` output is read (`2024-03-10 01:30:00.5+05:30`,
//! `0044-03-15 BC`, `infinity`); any other style fails to parse and the
//! merge refuses, rather than guess day/month order. Years past 9999 and BC
//! years are handled, which a byte comparison would get wrong. A timestamptz
//! is turned into an instant with its printed UTC offset, so shards whose
//! offsets differ (DST, or a different `TimeZone`) still compare correctly.

/// Microseconds per day.
const DAY_US: i128 = 86_400_000_000;

/// `date` text: days since 1970-01-01, or `i64::MIN`/`i64::MAX` for
/// `-infinity`/`infinity`.
pub(crate) fn date(s: &str) -> Option<i64> {
    match s {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    let (days, rest) = ymd(s, bc)?;
    rest.is_empty().then_some(days)
}

/// `timestamp` (or, with `tz`, `timestamptz`) text: microseconds since
/// 1970-01-01 00:00 UTC, or `i128::MIN`/`i128::MAX` for the infinities.
pub(crate) fn timestamp(s: &str, tz: bool) -> Option<i128> {
    match s {
        "infinity" => return Some(i128::MAX),
        "-infinity" => return Some(i128::MIN),
        _ => {}
    }
    let (s, bc) = strip_bc(s);
    let (days, rest) = ymd(s, bc)?;
    let rest = rest.strip_prefix(' ')?;
    let (micros, rest) = clock(rest)?;
    let offset = if tz {
        utc_offset(rest)?
    } else if rest.is_empty() {
        0
    } else {
        return None;
    };
    Some(i128::from(days) * DAY_US + i128::from(micros) - i128::from(offset) * 1_000_000)
}

/// `time` text (`HH:MM:SS[.ffffff]`): microseconds since midnight.
pub(crate) fn time(s: &str) -> Option<i64> {
    let (micros, rest) = clock(s)?;
    rest.is_empty().then_some(micros)
}

fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// Leading ASCII digits of `s` (at least `min`, at most `max`) as a number.
fn number(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    if len < min || len > max {
        return None;
    }
    Some((s[..len].parse().ok()?, &s[len..]))
}

/// `YYYY-MM-DD` (four or more year digits) at the start of `s`.
fn ymd(s: &str, bc: bool) -> Option<(i64, &str)> {
    let (year, rest) = number(s, 4, 9)?;
    let (month, rest) = number(rest.strip_prefix('-')?, 2, 2)?;
    let (day, rest) = number(rest.strip_prefix('-')?, 2, 2)?;
    if year == 0 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    Some((days_from_civil(year, month, day), rest))
}

/// `HH:MM:SS[.f{1,6}]` at the start of `s`, in microseconds.
fn clock(s: &str) -> Option<(i64, &str)> {
    let (h, rest) = number(s, 2, 2)?;
    let (m, rest) = number(rest.strip_prefix(':')?, 2, 2)?;
    let (sec, mut rest) = number(rest.strip_prefix(':')?, 2, 2)?;
    let mut micros = ((h * 60 + m) * 60 + sec) * 1_000_000;
    if let Some(frac) = rest.strip_prefix('.') {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 || len > 6 {
            return None;
        }
        let digits: i64 = frac[..len].parse().ok()?;
        micros += digits * 10i64.pow(6 - len as u32);
        rest = &frac[len..];
    }
    Some((micros, rest))
}

/// `+HH`, `-HH:MM` or `+HH:MM:SS` (the whole of `s`), in seconds east of UTC.
fn utc_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, mut rest) = number(rest, 2, 2)?;
    let mut secs = h * 3600;
    for unit in [60, 1] {
        match rest.strip_prefix(':') {
            Some(r) => {
                let (v, r) = number(r, 2, 2)?;
                secs += v * unit;
                rest = r;
            }
            None => break,
        }
    }
    rest.is_empty().then_some(sign * secs)
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (as PG
/// counts), for any astronomical year (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date("1970-01-01"), Some(0));
        assert_eq!(date("2000-01-01"), Some(10_957));
        assert_eq!(date("2000-03-01"), Some(11_017));
        assert_eq!(date("0001-01-01"), Some(-719_162));
        assert_eq!(date("0001-12-31 BC"), Some(-719_163));
        assert!(date("0044-03-15 BC") < date("0001-01-01"));
        assert!(date("0044-03-15 BC") < date("0043-03-15 BC"));
        assert!(date("10000-01-01") > date("9999-12-31"));
        assert_eq!(date("infinity"), Some(i64::MAX));
        for bad in ["03/10/2024", "10.03.2024", "Sun Mar 10 2024", "2024-3-10", "2024-03-10 00:00:00", ""] {
            assert_eq!(date(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp("1970-01-01 00:00:00", false), Some(0));
        assert_eq!(timestamp("1970-01-01 00:00:01.5", false), Some(1_500_000));
        assert_eq!(timestamp("1970-01-01 00:00:00.000001", false), Some(1));
        assert_eq!(timestamp("1970-01-01 05:30:00+05:30", true), Some(0));
        assert_eq!(timestamp("1969-12-31 19:00:00-05", true), Some(0));
        assert_eq!(timestamp("1970-01-01 00:09:21+00:09:21", true), Some(0));
        // The same instant on both sides of a DST change.
        assert_eq!(
            timestamp("2024-03-10 01:30:00-05", true).map(|t| t + 3_600_000_000),
            timestamp("2024-03-10 03:30:00-04", true)
        );
        assert!(timestamp("0044-03-15 10:00:00+05:53:28 BC", true) < timestamp("0001-01-01 00:00:00+00", true));
        assert_eq!(timestamp("-infinity", true), Some(i128::MIN));
        assert_eq!(timestamp("1970-01-01 00:00:00+00", false), None);
        assert_eq!(timestamp("1970-01-01 00:00:00", true), None);
        assert_eq!(timestamp("Thu Jan 01 00:00:00 1970", false), None);
    }

    #[test]
    fn times() {
        assert_eq!(time("00:00:00"), Some(0));
        assert_eq!(time("24:00:00"), Some(86_400_000_000));
        assert_eq!(time("12:34:56.789"), Some(45_296_789_000));
        assert_eq!(time("12:34"), None);
    }
}
