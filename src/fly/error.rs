//! Errors of the Fly client: [`Error`] names the operation and its identifiers, [`ApiError`]
//! keeps Fly's status code and body and reads as a sentence a user can act on.
//!
//! Must not: hold or print the API token or secret values.

use std::fmt;
use std::time::Duration;

use super::types::{ErrorBody, MachineState};

/// An answer from the Fly API with a non-success status, kept whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Fly's error body; `error` holds the raw text when the body was not JSON.
    pub body: ErrorBody,
    /// The `fly-request-id` header, for support requests.
    pub request_id: Option<String>,
    /// How many attempts were made before giving up.
    pub attempts: u32,
}

impl ApiError {
    /// Builds an error from a status and a raw body: Fly's JSON error body when it parses,
    /// else the trimmed text (reference §1).
    pub fn from_body(status: u16, raw: &[u8], request_id: Option<String>, attempts: u32) -> Self {
        let body = serde_json::from_slice::<ErrorBody>(raw)
            .ok()
            .filter(|b| b.error.is_some() || b.message.is_some() || b.status.is_some())
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(raw).trim().to_string();
                let text: String = text.chars().take(500).collect();
                ErrorBody {
                    error: (!text.is_empty()).then_some(text),
                    ..ErrorBody::default()
                }
            });
        ApiError {
            status,
            body,
            request_id,
            attempts,
        }
    }

    /// Fly's machine-readable code (`name_taken`, `insufficient_capacity`, ...).
    pub fn fly_status(&self) -> Option<&str> {
        self.body.status.as_deref().filter(|s| !s.is_empty())
    }

    /// True for the statuses that are worth trying again later: 408, 429 and any 5xx.
    pub fn is_retryable(&self) -> bool {
        self.status == 408 || self.status == 429 || self.status >= 500
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.body.text();
        let detail = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if text.is_empty() {
                Ok(())
            } else {
                write!(f, ": {text}")
            }
        };
        let s = self.status;
        match (s, self.fly_status()) {
            (401, _) => write!(
                f,
                "the Fly API rejected the token (401): check FLY_API_TOKEN"
            )?,
            (403, _) => {
                write!(
                    f,
                    "the token may not access this resource (403), or another organization owns the name"
                )?;
                detail(f)?;
            }
            (404, _) => {
                write!(f, "not found (404)")?;
                detail(f)?;
            }
            (_, Some("name_taken")) => {
                write!(
                    f,
                    "the name is already taken on Fly ({s} name_taken); app names are global, choose another"
                )?;
            }
            (_, Some("insufficient_capacity")) => {
                write!(
                    f,
                    "Fly has no capacity for this request ({s} insufficient_capacity)"
                )?;
                detail(f)?;
                write!(f, "; retry later or choose another region")?;
            }
            (408, _) => {
                write!(f, "the Fly API timed out (408)")?;
                detail(f)?;
            }
            (409, _) => {
                write!(f, "conflict (409)")?;
                detail(f)?;
                write!(f, "; another operation or lease holder is using it")?;
            }
            (429, _) => {
                write!(
                    f,
                    "rate limited by the Fly API (429) after {} attempts; lower the concurrency or try again later",
                    self.attempts
                )?;
            }
            (500..=599, _) => {
                write!(
                    f,
                    "the Fly API failed ({s}) after {} attempts",
                    self.attempts
                )?;
                detail(f)?;
                write!(f, "; try again later")?;
            }
            _ => {
                write!(f, "the Fly API refused the request ({s})")?;
                detail(f)?;
            }
        }
        if let Some(id) = &self.request_id {
            write!(f, " [fly-request-id {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Errors of [`super::Client`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No token in the environment.
    #[error("no Fly token: set FLY_API_TOKEN (e.g. from `fly tokens create org`) or log in with `fly auth login`, which writes ~/.fly/config.yml")]
    MissingToken,
    /// The token cannot be sent as an HTTP header.
    #[error("FLY_API_TOKEN holds characters that cannot be sent in an HTTP header")]
    InvalidToken,
    /// The base URL does not parse.
    #[error("the Fly API address {value:?} (FLY_API_HOSTNAME) is not a valid URL")]
    InvalidBaseUrl {
        /// What was given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// The base URL parses but cannot carry paths (e.g. `mailto:`).
    #[error("the Fly API address {value:?} (FLY_API_HOSTNAME) must be an http or https URL")]
    UnsupportedBaseUrl {
        /// What was given.
        value: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    /// Fly answered with an error status.
    #[error("{op}")]
    Api {
        /// What was being done, with identifiers: `creating machine ctrl-1 in app demo-cp`.
        op: String,
        /// Fly's answer (boxed: it is large and errors travel through many `Result`s).
        #[source]
        source: Box<ApiError>,
    },
    /// The request failed before an answer arrived (connection, TLS, timeout, reset).
    #[error("{op}: no answer from the Fly API after {attempts} attempts")]
    Transport {
        /// What was being done.
        op: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A success answer whose body is not what the API documents.
    #[error("{op}: the Fly API sent an unexpected response body")]
    Decode {
        /// What was being done.
        op: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A request body could not be encoded (a bug, reported rather than hidden).
    #[error("{op}: could not encode the request body")]
    Encode {
        /// What was being done.
        op: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A wait ran out of time.
    #[error(
        "machine {machine} in app {app} did not become {want} within {}s (last state seen: {})",
        waited.as_secs(),
        last.as_ref().map(MachineState::as_str).unwrap_or("unknown")
    )]
    WaitTimeout {
        /// App name.
        app: String,
        /// Machine id.
        machine: String,
        /// The state waited for.
        want: MachineState,
        /// The last state the API reported.
        last: Option<MachineState>,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// After an ambiguous volume create, more than one new volume matched; the client will not
    /// guess which one is its own.
    #[error(
        "{op}: the create was ambiguous and {} new volumes named {name} appeared ({}); inspect them and delete the extra ones",
        ids.len(),
        ids.join(", ")
    )]
    AmbiguousVolume {
        /// What was being done.
        op: String,
        /// The volume name.
        name: String,
        /// The candidate volume ids.
        ids: Vec<String>,
    },
    /// A lease call answered success without a lease.
    #[error("{op}: the Fly API answered without a lease (status {status:?})")]
    NoLease {
        /// What was being done.
        op: String,
        /// The envelope's status.
        status: String,
    },
}

impl Error {
    /// Fly's answer, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }

    /// The HTTP status code Fly answered with, if any.
    pub fn status_code(&self) -> Option<u16> {
        self.api().map(|a| a.status)
    }

    /// Fly's machine-readable error code (`name_taken`, `insufficient_capacity`, ...).
    pub fn fly_status(&self) -> Option<&str> {
        self.api().and_then(ApiError::fly_status)
    }

    /// True when Fly said the resource does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// True when trying again later may succeed: 408, 429, 5xx, transport failures and wait
    /// timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { source, .. } => source.is_retryable(),
            Error::Transport { .. } | Error::WaitTimeout { .. } => true,
            _ => false,
        }
    }

    /// True when a non-idempotent request may or may not have taken effect: Fly answered 408
    /// or 5xx, or the connection failed after the request may have been sent (reference §5,
    /// §8.9).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Error::Api { source, .. } => source.status == 408 || source.status >= 500,
            Error::Transport { source, .. } => !source.is_connect() && !source.is_builder(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, raw: &str) -> Error {
        Error::Api {
            op: "creating machine ctrl-1 in app demo-cp".to_string(),
            source: Box::new(ApiError::from_body(status, raw.as_bytes(), None, 1)),
        }
    }

    /// The message chain as the binary prints it.
    fn chain(e: &Error) -> String {
        let mut out = e.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    #[test]
    fn unauthorized_tells_user_to_check_the_token() {
        let e = api(401, r#"{"error":"Authenticate: token validation error"}"#);
        assert_eq!(
            chain(&e),
            "creating machine ctrl-1 in app demo-cp: the Fly API rejected the token (401): check FLY_API_TOKEN"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn name_taken_keeps_fly_status() {
        let e = api(
            422,
            r#"{"error":"Validation failed: Name has already been taken","status":"name_taken"}"#,
        );
        assert_eq!(e.status_code(), Some(422));
        assert_eq!(e.fly_status(), Some("name_taken"));
        assert!(chain(&e).contains("choose another"), "{}", chain(&e));
    }

    #[test]
    fn not_found_is_detected_and_shows_fly_text() {
        let e = api(404, r#"{"error":"machine not found"}"#);
        assert!(e.is_not_found());
        assert!(chain(&e).ends_with("not found (404): machine not found"));
    }

    #[test]
    fn capacity_error_suggests_another_region() {
        let e = api(
            412,
            r#"{"error":"no capacity in sjc","status":"insufficient_capacity"}"#,
        );
        let text = chain(&e);
        assert!(text.contains("insufficient_capacity"), "{text}");
        assert!(text.contains("another region"), "{text}");
    }

    #[test]
    fn non_json_body_is_kept_as_text() {
        let e = ApiError::from_body(
            502,
            b"<html>bad gateway</html>\n",
            Some("01J-yyz".into()),
            4,
        );
        assert_eq!(e.body.error.as_deref(), Some("<html>bad gateway</html>"));
        assert_eq!(
            e.to_string(),
            "the Fly API failed (502) after 4 attempts: <html>bad gateway</html>; try again later [fly-request-id 01J-yyz]"
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn message_field_is_preferred() {
        let e = ApiError::from_body(400, br#"{"error":"e","message":"m"}"#, None, 1);
        assert_eq!(e.to_string(), "the Fly API refused the request (400): m");
    }

    #[test]
    fn ambiguity_covers_408_and_5xx_only() {
        assert!(api(408, "{}").is_ambiguous());
        assert!(api(503, "").is_ambiguous());
        assert!(!api(429, "").is_ambiguous());
        assert!(!api(422, "").is_ambiguous());
    }

    #[test]
    fn wait_timeout_names_machine_and_states() {
        let e = Error::WaitTimeout {
            app: "demo-cp".into(),
            machine: "1857156b526dd8".into(),
            want: MachineState::Started,
            last: Some(MachineState::Starting),
            waited: Duration::from_secs(300),
        };
        assert_eq!(
            e.to_string(),
            "machine 1857156b526dd8 in app demo-cp did not become started within 300s (last state seen: starting)"
        );
    }
}
