//! The joining side: fetch `/cacerts` without verification, check its hash against the token
//! (reference/k3s.md §4 join flow), then talk to the server verified against that CA with basic
//! auth. Also the agents' retry-with-backoff.
//!
//! Must not log the token or password; must not trust a CA whose hash does not match.

use std::time::Duration;

use crate::log;
use crate::pki::{self, Token};

/// Errors while joining.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("token CA hash does not match the Cluster CA certificate hash: {token} != {actual}")]
    HashMismatch { token: String, actual: String },
    #[error("failed to get CA certs from {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {status}: the token's credentials were refused")]
    Unauthorized {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: {status}: {message}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("CA certs from {url} changed between the unverified and the verified fetch")]
    CaChanged { url: String },
    #[error("building an https client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("invalid CA certificate from {url}: {source}")]
    BadCa {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl Error {
    /// Whether retrying may help (the server may not be up yet).
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Connect { .. })
            || matches!(self, Error::Refused { status, .. } if status.is_server_error())
    }
}

/// A verified connection to a server: its CA and an https client that trusts only that CA.
pub struct Joined {
    /// The CA fetched from `/cacerts`, exactly as served.
    pub ca_pem: String,
    /// An https client trusting only that CA.
    pub client: reqwest::Client,
}

fn connect(url: &str) -> impl FnOnce(reqwest::Error) -> Error + '_ {
    move |source| Error::Connect {
        url: url.to_owned(),
        source,
    }
}

/// Fetch and check the cluster CA of `server` against `token`.
pub async fn fetch_ca(server: &str, token: &Token) -> Result<Joined, Error> {
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(Error::Client)?;
    let pem = insecure
        .get(&url)
        .send()
        .await
        .map_err(connect(&url))?
        .bytes()
        .await
        .map_err(connect(&url))?;
    let actual = pki::ca_hash(&pem);
    if token.ca_hash.is_empty() {
        log::warn(
            "Cluster CA certificate is not trusted by the host CA bundle, but the token does not include a CA hash. \
             Use the full token from the server's node-token file to enable Cluster CA validation.",
        );
    } else if token.ca_hash != actual {
        return Err(Error::HashMismatch {
            token: token.ca_hash.clone(),
            actual,
        });
    }
    let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| Error::BadCa {
        url: url.clone(),
        source,
    })?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(Error::Client)?;
    let again = client
        .get(&url)
        .send()
        .await
        .map_err(connect(&url))?
        .bytes()
        .await
        .map_err(connect(&url))?;
    if again != pem {
        return Err(Error::CaChanged { url });
    }
    Ok(Joined {
        ca_pem: String::from_utf8_lossy(&pem).into_owned(),
        client,
    })
}

/// Send a request with basic auth and return the body, mapping 401 and other refusals.
pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    user: &str,
    password: &str,
    body: Option<String>,
) -> Result<String, Error> {
    let mut rb = client.request(method, url).basic_auth(user, Some(password));
    if let Some(b) = body {
        rb = rb.header("Content-Type", "application/json").body(b);
    }
    let r = rb.send().await.map_err(connect(url))?;
    let status = r.status();
    let text = r.text().await.map_err(connect(url))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Error::Unauthorized {
            url: url.to_owned(),
            status,
        });
    }
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(Error::Refused {
            url: url.to_owned(),
            status,
            message,
        });
    }
    Ok(text)
}

/// Run `f` until it succeeds or fails in a way retrying cannot fix; waits 1s, 2s, 4s ... up to
/// 10s between tries.
pub async fn with_backoff<T, F, Fut>(what: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut delay = Duration::from_secs(1);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() => {
                log::info(format!("Waiting to retry {what}: {e}"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn backoff_retries_connection_errors_until_success() {
        let tries = AtomicU32::new(0);
        let url = "https://127.0.0.1:1/cacerts";
        let out = with_backoff("test", || async {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            if n < 3 {
                Err(Error::Refused {
                    url: url.to_owned(),
                    status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
                    message: "starting".to_owned(),
                })
            } else {
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_gives_up_on_refused_credentials() {
        let e = with_backoff("test", || async {
            Err::<(), _>(Error::Unauthorized {
                url: "u".to_owned(),
                status: reqwest::StatusCode::UNAUTHORIZED,
            })
        })
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Unauthorized { .. }));
    }
}
