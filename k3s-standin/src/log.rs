//! k3s-style log lines on stderr: `time="<RFC 3339>" level=<level> msg="<text>"` (the logrus text
//! format k3s uses), and the UTC timestamp formatting shared with the Node objects.
//!
//! Must not log secrets: callers never pass the token or a password here.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The version of the `k3s-standin` binary: the Kubernetes version it imitates plus a
/// `+k3s-standin` build tag, so no output can be mistaken for a real k3s release (which would
/// end in `+k3s<N>`).
pub const VERSION: &str = "v1.33.7+k3s-standin";

/// The version of the `k3s-standin-next` binary: one Kubernetes minor after [`VERSION`], the
/// target of the upgrade tests.
pub const NEXT_VERSION: &str = "v1.34.1+k3s-standin";

static RUNNING: OnceLock<&'static str> = OnceLock::new();

/// Sets the version this process reports (once, first thing in `main`; later calls are
/// ignored).
pub fn set_version(version: &'static str) {
    let _ = RUNNING.set(version);
}

/// The version this process reports: what [`set_version`] set, else [`VERSION`] (library
/// users such as tests).
pub fn version() -> &'static str {
    RUNNING.get().copied().unwrap_or(VERSION)
}

/// The first log line of every server or agent run: says plainly this is not k3s.
pub fn banner() -> String {
    format!(
        "k3s-standin: a test double for k3s (NOT k3s), version {}",
        version()
    )
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC), the form Kubernetes uses in
/// `creationTimestamp` and logrus uses in `time=`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn line(level: &str, msg: &str) {
    let escaped = msg.replace('\\', "\\\\").replace('"', "\\\"");
    eprintln!(
        "time=\"{}\" level={level} msg=\"{escaped}\"",
        rfc3339(now_secs())
    );
}

/// Log at info level.
pub fn info(msg: impl AsRef<str>) {
    line("info", msg.as_ref());
}

/// Log at warning level.
pub fn warn(msg: impl AsRef<str>) {
    line("warning", msg.as_ref());
}

/// Log at error level.
pub fn error(msg: impl AsRef<str>) {
    line("error", msg.as_ref());
}

/// Log at fatal level (the caller then exits non-zero, as logrus.Fatal does in k3s).
pub fn fatal(msg: impl AsRef<str>) {
    line("fatal", msg.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
