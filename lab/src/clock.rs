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

/// RFC 3339 in whole seconds, as Fly writes machine timestamps (`2023-11-08T01:52:30Z`, reference §4).
/// An instant past what `time` holds (year 9999) prints as the epoch.
pub fn rfc3339_s(ms: u64) -> String {
    let at = i64::try_from(ms / 1000)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
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
