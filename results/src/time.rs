//! Timestamps and the block clock. Records carry RFC 3339 UTC times; the weights rule counts
//! in chain blocks. Without a chain (a competitor's own store, CI), a block is read off the
//! wall clock: Bittensor produces one block every 12 seconds, so block = unix seconds / 12.
//! The validator daemon uses the chain's own block numbers instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds per Bittensor block.
pub const BLOCK_SECONDS: u64 = 12;

/// RFC 3339 in UTC, to the second (`2026-12-06T22:41:03Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix seconds of an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z` or
/// `±HH:MM`). None when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let (h, m): (i64, i64) = (rest[1..3].parse().ok()?, rest[4..6].parse().ok()?);
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm), the inverse of `rfc3339`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// The local block clock's block at unix time `secs`.
pub fn block_at(secs: i64) -> u64 {
    (secs.max(0) as u64) / BLOCK_SECONDS
}

/// The local block clock now.
pub fn current_block() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs / BLOCK_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn known_instants() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_596_863), "2026-12-06T22:41:03Z");
        assert_eq!(parse_rfc3339("2026-12-06T22:41:03Z"), Some(1_796_596_863));
        assert_eq!(
            parse_rfc3339("2026-12-07T00:41:03.25+02:00"),
            Some(1_796_596_863)
        );
        assert_eq!(parse_rfc3339("2026-13-06T22:41:03Z"), None);
        assert_eq!(parse_rfc3339("2026-12-06 22:41"), None);
        assert_eq!(parse_rfc3339(""), None);
        assert_eq!(parse_rfc3339("2026-12-06T22:41:03"), None);
    }

    proptest! {
        #[test]
        fn parse_inverts_format(secs in 0u64..8_000_000_000) {
            let text = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
            prop_assert_eq!(parse_rfc3339(&text), Some(secs as i64));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
