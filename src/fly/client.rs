//! The Fly Machines API client core: configuration (base URL, token, options), URL building,
//! and the one request path every call goes through (rate limit, send, trace, classify,
//! retry). The per-resource methods live in `apps.rs`, `volumes.rs`, `machines.rs`,
//! `leases.rs` and `secrets.rs`.
//!
//! Must not: log or print the token or secret values; retry a non-idempotent call unless the
//! retry rules in `retry.rs` allow it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::error::{ApiError, Error};
use super::ratelimit::{Action, RateLimiter};
use super::retry::{uuid_v4, RetryClass, RetryPolicy};
use super::types::SecretString;

/// The public API address (reference §1).
pub const DEFAULT_BASE_URL: &str = "https://api.machines.dev";

/// The lease header (reference §2.3.2).
pub const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";

/// An API token. It cannot be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    /// Wraps a token as given (with or without a `FlyV1 `/`Bearer ` prefix).
    pub fn new(token: impl Into<String>) -> Self {
        Token(SecretString::new(token.into().trim().to_string()))
    }

    /// The `Authorization` header value: a token that already starts with `FlyV1 ` or
    /// `Bearer ` is sent unchanged, anything else as `Bearer <token>` (reference §1, §8.11;
    /// comma-joined macaroons are never split).
    pub fn header_value(&self) -> Result<HeaderValue, Error> {
        let raw = self.0.expose();
        let text = if raw.starts_with("FlyV1 ") || raw.starts_with("Bearer ") {
            raw.to_string()
        } else {
            format!("Bearer {raw}")
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| Error::InvalidToken)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Client behaviour that tests and benchmarks change.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client-side token buckets sized to Fly's limits (on by default; off for benchmarks).
    pub rate_limit: bool,
    /// Retry policy for every call.
    pub retry: RetryPolicy,
    /// Seed of the RNG behind jitter and generated idempotency ids; `None` seeds from the OS.
    /// Tests set it for reproducible runs; production must leave it `None` so ids are unique.
    pub seed: Option<u64>,
    /// Time limit of one HTTP request (waits and execs get their own longer limit).
    pub request_timeout: Duration,
    /// Pause before looking for what an ambiguous create made (the API is eventually
    /// consistent; flyctl waits briefly too).
    pub create_settle: Duration,
    /// How many times an ambiguous create is followed by a lookup and a re-create.
    pub max_create_recoveries: u32,
    /// How long a new app may keep answering 404/401 before it counts as usable (flyctl's
    /// `WaitForApp`: 1 min, reference fly-runtime.md §6).
    pub app_wait: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate_limit: true,
            retry: RetryPolicy::default(),
            seed: None,
            request_timeout: Duration::from_secs(30),
            create_settle: Duration::from_secs(1),
            max_create_recoveries: 3,
            app_wait: Duration::from_secs(60),
            user_agent: concat!("fks-bootstrap/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    options: Options,
    limiter: Option<RateLimiter>,
    rng: Mutex<StdRng>,
}

/// A typed client of the Fly Machines API. Cheap to clone; clones share rate-limit buckets.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base.as_str())
            .field("token", &"<redacted>")
            .field("options", &self.inner.options)
            .finish()
    }
}

/// Parses a base URL: a scheme-less host gets `https://`; a trailing `/v1` is dropped because
/// the client adds it to every path.
pub fn parse_base_url(value: &str) -> Result<Url, Error> {
    let trimmed = value.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("https://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|source| Error::InvalidBaseUrl {
        value: value.to_string(),
        source,
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(Error::UnsupportedBaseUrl {
            value: value.to_string(),
        });
    }
    let path = url.path().trim_end_matches('/').to_string();
    let path = path.strip_suffix("/v1").unwrap_or(&path).to_string();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// One API call, described before it is sent.
pub(crate) struct Call {
    /// The operation, for errors: `creating machine ctrl-1 in app demo-cp`.
    pub op: String,
    pub method: Method,
    /// Path segments under `/v1`, unencoded.
    pub path: Vec<String>,
    /// Query pairs, unencoded.
    pub query: Vec<(String, String)>,
    /// JSON body, already encoded.
    pub body: Option<Vec<u8>>,
    pub nonce: Option<String>,
    pub action: Action,
    /// The app name or machine id Fly counts this action by.
    pub scope: String,
    pub class: RetryClass,
    /// Overrides [`Options::request_timeout`].
    pub timeout: Option<Duration>,
}

impl Call {
    pub(crate) fn new(
        op: String,
        method: Method,
        path: &[&str],
        action: Action,
        scope: &str,
    ) -> Self {
        let class = if method == Method::POST {
            RetryClass::NonIdempotent
        } else {
            RetryClass::Idempotent
        };
        Call {
            op,
            method,
            path: path.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
            nonce: None,
            action,
            scope: scope.to_string(),
            class,
            timeout: None,
        }
    }

    pub(crate) fn class(mut self, class: RetryClass) -> Self {
        self.class = class;
        self
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    pub(crate) fn nonce(mut self, nonce: Option<&str>) -> Self {
        self.nonce = nonce.map(str::to_string);
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn json<T: Serialize>(mut self, body: &T) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(body).map_err(|source| Error::Encode {
            op: self.op.clone(),
            source,
        })?;
        self.body = Some(bytes);
        Ok(self)
    }
}

/// A success answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn decode<T: DeserializeOwned>(&self, op: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            op: op.to_string(),
            source,
        })
    }
}

impl Client {
    /// A client for `hostname` (the `FLY_API_HOSTNAME` setting; default [`DEFAULT_BASE_URL`])
    /// with `token` (found by the CLI: `cli::credentials`); a missing token is an error.
    pub fn from_values(
        token: Option<String>,
        hostname: Option<String>,
        options: Options,
    ) -> Result<Client, Error> {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .ok_or(Error::MissingToken)?;
        let base = hostname
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        Client::new(&base, Token::new(token), options)
    }

    /// A client for `base` (e.g. the lab's address) with `token` and `options`.
    pub fn new(base: &str, token: Token, options: Options) -> Result<Client, Error> {
        let base = parse_base_url(base)?;
        let auth = token.header_value()?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(options.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::Build)?;
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let limiter = options.rate_limit.then(RateLimiter::new);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                options,
                limiter,
                rng: Mutex::new(rng),
            }),
        })
    }

    /// The base URL (without `/v1`).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The full URL of a path under `/v1`, with each segment and the query percent-encoded.
    pub fn url(&self, path: &[&str], query: &[(String, String)]) -> Url {
        build_url(&self.inner.base, path, query)
    }

    fn with_rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        // The RNG has no invariant a panic elsewhere could break.
        let mut rng = crate::sync::lock(&self.inner.rng);
        f(&mut rng)
    }

    /// A fresh idempotency id.
    pub fn new_launch_id(&self) -> String {
        self.with_rng(uuid_v4)
    }

    /// Sleeps for the backoff after failed attempt `attempt`, or says the policy is used up.
    async fn backoff(&self, attempt: u32, started: Instant) -> bool {
        let policy = &self.inner.options.retry;
        let delay = self.with_rng(|rng| policy.next_delay(attempt, started.elapsed(), rng));
        match delay {
            Some(d) => {
                tracing::debug!(
                    attempt,
                    delay_ms = d.as_millis() as u64,
                    "retrying after backoff"
                );
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }

    /// Sends `call`: waits for the rate limiter, sends, traces, and retries as its class
    /// allows. Returns the success answer or the last error.
    pub(crate) async fn execute(&self, call: &Call) -> Result<Reply, Error> {
        let url = self.url(
            &call.path.iter().map(String::as_str).collect::<Vec<_>>(),
            &call.query,
        );
        let path = url.path().to_string();
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if let Some(limiter) = &self.inner.limiter {
                limiter.acquire(call.action, &call.scope).await;
            }
            let mut req = self
                .inner
                .http
                .request(call.method.clone(), url.clone())
                .header(AUTHORIZATION, self.inner.auth.clone())
                .header(USER_AGENT, self.inner.options.user_agent.as_str());
            if let Some(timeout) = call.timeout {
                req = req.timeout(timeout);
            }
            if let Some(body) = &call.body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if let Some(nonce) = &call.nonce {
                req = req.header(LEASE_NONCE_HEADER, nonce.as_str());
            }
            let sent = Instant::now();
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let request_id = resp
                        .headers()
                        .get("fly-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    match resp.bytes().await {
                        Ok(bytes) => Ok((status, bytes.to_vec(), request_id)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let elapsed_ms = sent.elapsed().as_millis() as u64;
            match outcome {
                Ok((status, body, request_id)) => {
                    tracing::debug!(
                        method = %call.method, path = %path, status, duration_ms = elapsed_ms,
                        attempt, "fly api call"
                    );
                    if (200..300).contains(&status) {
                        return Ok(Reply { body });
                    }
                    if call.class.retries_status(status) && self.backoff(attempt, started).await {
                        continue;
                    }
                    return Err(Error::Api {
                        op: call.op.clone(),
                        source: Box::new(ApiError::from_body(status, &body, request_id, attempt)),
                    });
                }
                Err(e) => {
                    tracing::debug!(
                        method = %call.method, path = %path, error = %e, duration_ms = elapsed_ms,
                        attempt, "fly api call failed in transport"
                    );
                    let before_sending = e.is_connect();
                    if call.class.retries_transport(before_sending)
                        && self.backoff(attempt, started).await
                    {
                        continue;
                    }
                    return Err(Error::Transport {
                        op: call.op.clone(),
                        attempts: attempt,
                        source: e.without_url(),
                    });
                }
            }
        }
    }

    /// Sends `call` and decodes the JSON answer.
    pub(crate) async fn execute_json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, Error> {
        self.execute(call).await?.decode(&call.op)
    }
}

/// Builds `<base>/v1/<segments...>?<query>`; pure. `base` must come from [`parse_base_url`].
pub(crate) fn build_url(base: &Url, path: &[&str], query: &[(String, String)]) -> Url {
    let mut url = base.clone();
    {
        // `parse_base_url` rejects cannot-be-a-base URLs, so segments are always available.
        let mut segments = url
            .path_segments_mut()
            .expect("base URL was checked to be hierarchical");
        segments.pop_if_empty().push("v1");
        for s in path {
            segments.push(s);
        }
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_get_bearer_prefix() {
        let v = Token::new("abc123").header_value().expect("valid");
        assert_eq!(v.to_str().expect("ascii"), "Bearer abc123");
        assert!(v.is_sensitive());
    }

    #[test]
    fn prefixed_tokens_are_sent_unchanged() {
        let fly = "FlyV1 fm2_aaa,fm2_bbb,fo1_ccc";
        assert_eq!(
            Token::new(fly)
                .header_value()
                .expect("valid")
                .to_str()
                .expect("ascii"),
            fly
        );
        let bearer = "Bearer FlyV1 fm2_aaa";
        assert_eq!(
            Token::new(bearer)
                .header_value()
                .expect("valid")
                .to_str()
                .expect("ascii"),
            bearer
        );
    }

    #[test]
    fn token_with_newline_is_rejected_without_echoing_it() {
        let err = Token::new("abc\ndef").header_value().expect_err("invalid");
        assert!(!err.to_string().contains("abc"));
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new("FlyV1 fm2_secret");
        assert!(!format!("{t:?} {t}").contains("fm2_secret"));
        let c = Client::new("http://127.0.0.1:1", t, Options::default()).expect("client");
        assert!(!format!("{c:?}").contains("fm2_secret"));
    }

    #[test]
    fn from_values_requires_a_token_and_defaults_the_host() {
        assert!(matches!(
            Client::from_values(None, None, Options::default()),
            Err(Error::MissingToken)
        ));
        assert!(matches!(
            Client::from_values(Some("  ".into()), None, Options::default()),
            Err(Error::MissingToken)
        ));
        let c = Client::from_values(Some("t".into()), Some(String::new()), Options::default())
            .expect("client");
        assert_eq!(c.base_url().as_str(), "https://api.machines.dev/");
        let c = Client::from_values(
            Some("t".into()),
            Some("http://127.0.0.1:4280".into()),
            Options::default(),
        )
        .expect("client");
        assert_eq!(c.base_url().as_str(), "http://127.0.0.1:4280/");
    }

    #[test]
    fn base_url_forms_are_normalised() {
        for (given, want) in [
            ("https://api.machines.dev", "https://api.machines.dev/"),
            ("https://api.machines.dev/", "https://api.machines.dev/"),
            ("https://api.machines.dev/v1", "https://api.machines.dev/"),
            ("api.machines.dev", "https://api.machines.dev/"),
            ("http://_api.internal:4280", "http://_api.internal:4280/"),
            (
                "http://127.0.0.1:4280/prefix/",
                "http://127.0.0.1:4280/prefix",
            ),
        ] {
            assert_eq!(
                parse_base_url(given).expect(given).as_str(),
                want,
                "{given}"
            );
        }
        assert!(matches!(
            parse_base_url("http://[::1"),
            Err(Error::InvalidBaseUrl { .. })
        ));
        assert!(matches!(
            parse_base_url("ftp://x"),
            Err(Error::UnsupportedBaseUrl { .. })
        ));
    }

    #[test]
    fn urls_put_paths_under_v1_and_encode_segments() {
        let base = parse_base_url("http://127.0.0.1:4280").expect("base");
        let url = build_url(&base, &["apps", "demo-cp", "machines", "abc"], &[]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4280/v1/apps/demo-cp/machines/abc"
        );
        let prefixed = parse_base_url("http://h/prefix").expect("base");
        assert_eq!(
            build_url(&prefixed, &["apps"], &[]).as_str(),
            "http://h/prefix/v1/apps"
        );
        let odd = build_url(&base, &["apps", "a/b c"], &[]);
        assert_eq!(odd.path(), "/v1/apps/a%2Fb%20c");
    }

    #[test]
    fn metadata_filters_are_query_encoded() {
        let base = parse_base_url("https://api.machines.dev").expect("base");
        let filter = crate::fly::types::MachineListFilter::metadata("fks_launch_id", "a b&c=d");
        let url = build_url(&base, &["apps", "demo", "machines"], &filter.query_pairs());
        assert_eq!(
            url.as_str(),
            "https://api.machines.dev/v1/apps/demo/machines?metadata.fks_launch_id=a+b%26c%3Dd"
        );
        let back: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(back, filter.query_pairs());
    }
}
