//! Go-style durations as the Machines API carries them: written as Go duration strings
//! (`"30s"`, `"1m30s"`), read from either a string or an integer of nanoseconds
//! (reference fly-machines-api.md §4 and §8.12).
//!
//! Pure: parsing and formatting only; no clock, no I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration that serializes as a Go duration string and deserializes from a Go
/// duration string or an integer number of nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

/// Why a Go duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// The string is not `<number><unit>...` with units ns, us, µs, ms, s, m, h.
    #[error("invalid duration {0:?}: expected a Go duration such as 30s, 1m30s or 500ms")]
    Invalid(String),
    /// Negative durations have no meaning in the fields that carry them.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// The value does not fit in a `std::time::Duration`.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl GoDuration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

/// Nanoseconds per unit, longest unit names first so `ms` is not read as `m`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // micro sign, what Go prints
    ("\u{3bc}s", 1_000), // Greek mu, which Go also accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for GoDuration {
    type Err = Error;

    /// Parses like Go's `time.ParseDuration`: an optional `+`, then one or more
    /// `<decimal><unit>` pairs; a bare `0` is allowed.
    fn from_str(s: &str) -> Result<Self, Error> {
        let orig = s;
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(Error::Empty);
        }
        if let Some(r) = rest.strip_prefix('-') {
            // `-0s` is zero in Go; anything else negative is refused.
            if GoDuration::from_str(r)
                .map(|d| d.0.is_zero())
                .unwrap_or(false)
            {
                return Ok(GoDuration::default());
            }
            return Err(Error::Negative(orig.to_string()));
        }
        if let Some(r) = rest.strip_prefix('+') {
            rest = r;
        }
        if rest == "0" {
            return Ok(GoDuration::default());
        }
        let invalid = || Error::Invalid(orig.to_string());
        let overflow = || Error::Overflow(orig.to_string());
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let int_part = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac_part = "";
            if let Some(r) = rest.strip_prefix('.') {
                let frac_len = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                frac_part = &r[..frac_len];
                rest = &r[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(invalid());
            }
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let scale = UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, n)| *n)
                .ok_or_else(invalid)?;
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| overflow())?
            };
            let mut value = int.checked_mul(scale).ok_or_else(overflow)?;
            // Digits beyond nanosecond precision are dropped, as Go does.
            let mut frac_scale = scale;
            for digit in frac_part.bytes() {
                frac_scale /= 10;
                if frac_scale == 0 {
                    break;
                }
                value += u128::from(digit - b'0') * frac_scale;
            }
            total = total.checked_add(value).ok_or_else(overflow)?;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
        let nanos = u32::try_from(total % 1_000_000_000).expect("remainder below 1e9 fits u32");
        Ok(GoDuration(Duration::new(secs, nanos)))
    }
}

/// Writes `value / unit` with the fraction trimmed of trailing zeros, as Go does.
fn write_fraction(f: &mut fmt::Formatter<'_>, value: u128, unit: u128) -> fmt::Result {
    let int = value / unit;
    let frac = value % unit;
    write!(f, "{int}")?;
    if frac != 0 {
        let width = unit.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        write!(f, ".{}", digits.trim_end_matches('0'))?;
    }
    Ok(())
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `time.Duration.String()`: `0s`, `500ms`, `1.5µs`, `1m30s`, `2h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            write_fraction(f, ns, 1_000)?;
            return f.write_str("\u{b5}s");
        }
        if ns < 1_000_000_000 {
            write_fraction(f, ns, 1_000_000)?;
            return f.write_str("ms");
        }
        let hours = ns / 3_600_000_000_000;
        let rem = ns % 3_600_000_000_000;
        let minutes = rem / 60_000_000_000;
        let sec_ns = rem % 60_000_000_000;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m")?;
        } else if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_fraction(f, sec_ns, 1_000_000_000)?;
        f.write_str("s")
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct GoDurationVisitor;

impl Visitor<'_> for GoDurationVisitor {
    type Value = GoDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Go duration string (\"30s\") or an integer number of nanoseconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
        Ok(GoDuration(Duration::from_nanos(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
        u64::try_from(v)
            .map(|n| GoDuration(Duration::from_nanos(n)))
            .map_err(|_| E::custom(format!("negative duration {v}ns is not allowed")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoDuration, E> {
        if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
            Ok(GoDuration(Duration::from_nanos(v as u64)))
        } else {
            Err(E::custom(format!("invalid duration {v}ns")))
        }
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(GoDurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Duration {
        s.parse::<GoDuration>().expect("valid duration").0
    }

    #[test]
    fn parses_go_duration_strings() {
        assert_eq!(parse("30s"), Duration::from_secs(30));
        assert_eq!(parse("1m30s"), Duration::from_secs(90));
        assert_eq!(parse("500ms"), Duration::from_millis(500));
        assert_eq!(parse("1.5s"), Duration::from_millis(1500));
        assert_eq!(parse("2h"), Duration::from_secs(7200));
        assert_eq!(parse("1h2m3s"), Duration::from_secs(3723));
        assert_eq!(parse("10us"), Duration::from_micros(10));
        assert_eq!(parse("10\u{b5}s"), Duration::from_micros(10));
        assert_eq!(parse("7ns"), Duration::from_nanos(7));
        assert_eq!(parse("0"), Duration::ZERO);
        assert_eq!(parse("+5s"), Duration::from_secs(5));
        assert_eq!(parse(".5s"), Duration::from_millis(500));
    }

    #[test]
    fn rejects_malformed_and_negative_durations() {
        for bad in ["", "30", "s", "5x", "1..5s", "1.5.5s"] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            "-5s".parse::<GoDuration>(),
            Err(Error::Negative("-5s".to_string()))
        );
        assert_eq!(parse("-0s"), Duration::ZERO);
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(7200), "2h0m0s"),
        ];
        for (d, want) in cases {
            assert_eq!(GoDuration(d).to_string(), want);
            assert_eq!(parse(want), d, "round trip of {want}");
        }
    }

    #[test]
    fn deserializes_strings_and_nanosecond_integers() {
        let from_str: GoDuration = serde_json::from_str("\"15s\"").expect("string");
        let from_int: GoDuration = serde_json::from_str("15000000000").expect("integer");
        assert_eq!(from_str, from_int);
        assert!(serde_json::from_str::<GoDuration>("-1").is_err());
        assert_eq!(
            serde_json::to_string(&GoDuration::from_secs(15)).expect("serialize"),
            "\"15s\""
        );
    }
}
