//! Wall-clock helpers: milliseconds since the epoch and RFC 3339 formatting.
//! Pure formatting apart from `now_ms`; no other I/O here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 in whole seconds, as Fly writes machine timestamps (`2023-11-08T01:52:30Z`, reference §4).
pub fn rfc3339_s(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// RFC 3339 with milliseconds, as Fly writes volume timestamps (reference §4).
pub fn rfc3339_ms(ms: u64) -> String {
    let s = rfc3339_s(ms);
    format!("{}.{:03}Z", &s[..s.len() - 1], ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_s(1_699_408_350_000), "2023-11-08T01:52:30Z");
        assert_eq!(rfc3339_ms(1_699_408_350_123), "2023-11-08T01:52:30.123Z");
        assert_eq!(rfc3339_s(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
