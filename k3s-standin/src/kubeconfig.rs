//! The admin kubeconfig k3s writes (`/etc/rancher/k3s/k3s.yaml`): one cluster, user and context
//! all named `default` (reference/k3s.md §4), serialised with serde_yaml_ng.
//!
//! Owns the file's shape, URL and mode. Must not print the key material.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

/// Errors writing the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing kubeconfig {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serialising kubeconfig {path}: {source}")]
    Yaml {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    certificate_authority_data: String,
    server: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

#[derive(Serialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    inner: Wrapped<T>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Wrapped<T> {
    Cluster { cluster: T },
    User { user: T },
    Context { context: T },
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    api_version: String,
    kind: String,
    clusters: Vec<Named<Cluster>>,
    contexts: Vec<Named<Context>>,
    current_context: String,
    preferences: serde_yaml_ng::Mapping,
    users: Vec<Named<User>>,
}

/// The server URL: `bind-address` when set (bracketed if IPv6), else `[::1]` when the primary
/// service CIDR is IPv6, else `127.0.0.1` (reference/k3s.md §4 "Server URL").
pub fn server_url(bind_address: Option<IpAddr>, primary_service_v6: bool, port: u16) -> String {
    let host = match bind_address {
        Some(IpAddr::V6(a)) => format!("[{a}]"),
        Some(IpAddr::V4(a)) => a.to_string(),
        None if primary_service_v6 => "[::1]".to_owned(),
        None => "127.0.0.1".to_owned(),
    };
    format!("https://{host}:{port}")
}

/// Render the kubeconfig YAML.
pub fn render(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<String, serde_yaml_ng::Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let k = Kubeconfig {
        api_version: "v1".into(),
        kind: "Config".into(),
        clusters: vec![Named {
            name: "default".into(),
            inner: Wrapped::Cluster {
                cluster: Cluster {
                    certificate_authority_data: b64(ca_pem),
                    server: server.into(),
                },
            },
        }],
        contexts: vec![Named {
            name: "default".into(),
            inner: Wrapped::Context {
                context: Context {
                    cluster: "default".into(),
                    user: "default".into(),
                },
            },
        }],
        current_context: "default".into(),
        preferences: serde_yaml_ng::Mapping::new(),
        users: vec![Named {
            name: "default".into(),
            inner: Wrapped::User {
                user: User {
                    client_certificate_data: b64(cert_pem),
                    client_key_data: b64(key_pem),
                },
            },
        }],
    };
    serde_yaml_ng::to_string(&k)
}

/// Write `text` to `path` with `mode`, creating parent directories. The file is written beside
/// the target and renamed into place, so a reader never sees a half-written kubeconfig.
pub fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let shown = path.display().to_string();
    let err = |source| Error::Write {
        path: shown.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_follows_bind_address_then_primary_service_family() {
        assert_eq!(server_url(None, true, 6443), "https://[::1]:6443");
        assert_eq!(server_url(None, false, 6443), "https://127.0.0.1:6443");
        assert_eq!(
            server_url(Some("::".parse().unwrap()), false, 1),
            "https://[::]:1"
        );
    }

    #[test]
    fn render_names_everything_default() {
        let y: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&render("https://[::1]:6443", "CA", "C", "K").unwrap())
                .unwrap();
        assert_eq!(y["current-context"], "default");
        assert_eq!(y["clusters"][0]["name"], "default");
        assert_eq!(y["clusters"][0]["cluster"]["server"], "https://[::1]:6443");
        assert_eq!(y["users"][0]["user"]["client-key-data"], "Sw==");
        assert_eq!(y["contexts"][0]["context"]["user"], "default");
    }
}
