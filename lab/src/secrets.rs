//! App secrets, kept apart from the journal in `secrets.json` (mode 0600) so machine and app
//! records never contain a secret value. Owns the file; the API never returns values from it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors of the secret store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One stored secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Secret {
    pub value: String,
    pub digest: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The app's secrets version its last write made.
    #[serde(default)]
    pub version: u64,
    /// When its last write reaches machine boots (the `secrets_lag` fault; 0 = at once).
    #[serde(default)]
    pub visible_at_ms: u64,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The secrets of one app and its secrets version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppSecrets {
    pub version: u64,
    pub secrets: BTreeMap<String, Secret>,
}

impl AppSecrets {
    /// The secrets a machine booting at `now_ms` gets. Fly's secret store is eventually
    /// consistent (reference fly-runtime.md §6): a write not yet visible is missing, so a
    /// changed secret is missing too rather than old (the lab keeps no old values).
    pub fn visible(&self, now_ms: u64) -> impl Iterator<Item = (&String, &Secret)> {
        self.secrets
            .iter()
            .filter(move |(_, s)| s.visible_at_ms <= now_ms)
    }

    /// A machine create or update asked for `min_secrets_version`: every write up to that
    /// version is made current before it boots, as Fly makes sure the machine sees at least
    /// that version.
    pub fn catch_up(&mut self, min_version: u64) {
        for s in self.secrets.values_mut() {
            if s.version <= min_version {
                s.visible_at_ms = 0;
            }
        }
    }
}

/// All secrets, persisted as a whole on every change (secrets change rarely).
#[derive(Debug, Default)]
pub struct Store {
    path: PathBuf,
    pub apps: BTreeMap<String, AppSecrets>,
}

/// The digest Fly shows in place of a value: hex SHA-256, first 16 characters.
pub fn digest(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Load `secrets.json` from `dir` (empty when absent).
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join("secrets.json");
        let apps = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(Error::Read { path, source }),
        };
        Ok(Store { path, apps })
    }

    /// Write the whole store: a temp file created with mode 0600, then renamed into place.
    pub fn save(&self) -> Result<(), Error> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.apps).map_err(|e| Error::Write {
            path: tmp.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|source| Error::Write {
                path: tmp.clone(),
                source,
            })?;
        f.write_all(&bytes).map_err(|source| Error::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &self.path).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn store_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::open(dir.path()).expect("open");
        let app = s.apps.entry("demo".into()).or_default();
        app.version = 1;
        app.secrets.insert(
            "K3S_TOKEN".into(),
            Secret {
                value: "hunter2".into(),
                digest: digest("hunter2"),
                created_at_ms: 1,
                updated_at_ms: 1,
                version: 1,
                visible_at_ms: 0,
            },
        );
        s.save().expect("save");
        let mode = std::fs::metadata(dir.path().join("secrets.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s2 = Store::open(dir.path()).expect("reopen");
        assert_eq!(s2.apps["demo"].secrets["K3S_TOKEN"].value, "hunter2");
        assert!(!format!("{:?}", s2.apps["demo"].secrets["K3S_TOKEN"]).contains("hunter2"));
    }

    #[test]
    fn a_lagging_write_is_missing_until_its_time_or_a_min_version_catches_up() {
        let secret = |version, visible_at_ms| Secret {
            value: "v".into(),
            digest: digest("v"),
            created_at_ms: 1,
            updated_at_ms: 1,
            version,
            visible_at_ms,
        };
        let mut a = AppSecrets::default();
        a.secrets.insert("OLD".into(), secret(1, 0));
        a.secrets.insert("NEW".into(), secret(2, 5_000));
        a.secrets.insert("NEWER".into(), secret(3, 5_000));
        let names =
            |a: &AppSecrets, now| a.visible(now).map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a, 4_999), ["OLD"]);
        assert_eq!(names(&a, 5_000), ["NEW", "NEWER", "OLD"]);
        a.catch_up(2);
        assert_eq!(names(&a, 0), ["NEW", "OLD"]);
    }
}
