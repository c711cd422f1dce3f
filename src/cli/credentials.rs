//! Where the operator's Fly token comes from: `FLY_API_TOKEN` (the contract's variable, first so
//! an explicit setting always wins), then flyctl's own `FLY_ACCESS_TOKEN`, then `access_token`
//! in flyctl's config file (`$FLY_CONFIG_DIR/config.yml`, else `~/.fly/config.yml`), so a user
//! who ran `fly auth login` needs nothing else.
//!
//! Sources (flyctl): `internal/config` names the env keys (`AccessTokenEnvKey =
//! "FLY_ACCESS_TOKEN"`, `FLY_API_TOKEN`) and the file key (`AccessTokenFileKey =
//! "access_token"`, `FileName = "config.yml"`); `helpers.GetConfigDirectory` reads
//! `FLY_CONFIG_DIR`, else `$HOME/.fly`.
//!
//! Must not: print or log a token. Only the file's path appears in errors.

use std::path::{Path, PathBuf};

/// The file flyctl keeps its login in, under its config directory.
pub const FLYCTL_CONFIG_FILE: &str = "config.yml";

/// Reading flyctl's config file failed in a way the user must fix (a missing file is not an
/// error: there is then no token from it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading flyctl's config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("flyctl's config file {path} is not YAML with an `access_token` string")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// The token, if any source has one, with the name of the source for messages.
pub fn token_from_env() -> Result<Option<(String, String)>, Error> {
    let env = |k: &str| std::env::var(k).ok();
    token(env, dirs_home())
}

/// [`token_from_env`] with the environment and home directory passed in (tests).
pub fn token(
    env: impl Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Result<Option<(String, String)>, Error> {
    for key in ["FLY_API_TOKEN", "FLY_ACCESS_TOKEN"] {
        if let Some(t) = env(key).filter(|t| !t.trim().is_empty()) {
            return Ok(Some((t, key.to_string())));
        }
    }
    let dir = match env("FLY_CONFIG_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match home {
            Some(h) => h.join(".fly"),
            None => return Ok(None),
        },
    };
    let path = dir.join(FLYCTL_CONFIG_FILE);
    Ok(from_file(&path)?.map(|t| (t, path.display().to_string())))
}

/// `access_token` of flyctl's config file; `None` when the file or the key is absent.
fn from_file(path: &Path) -> Result<Option<String>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    #[derive(serde::Deserialize)]
    struct File {
        access_token: Option<String>,
    }
    let file: Option<File> = serde_yaml_ng::from_str(&text).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file
        .and_then(|f| f.access_token)
        .filter(|t| !t.trim().is_empty()))
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn home_with(config: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(home.path().join(".fly")).expect("mkdir");
        std::fs::write(home.path().join(".fly/config.yml"), config).expect("write");
        home
    }

    #[test]
    fn env_tokens_come_before_flyctls_file_and_fly_api_token_first() {
        let home = home_with("access_token: from-file\n");
        let h = Some(home.path().to_path_buf());
        let got = token(env(&[("FLY_API_TOKEN", "api")]), h.clone()).expect("ok");
        assert_eq!(got, Some(("api".into(), "FLY_API_TOKEN".into())));
        let both = env(&[("FLY_API_TOKEN", "api"), ("FLY_ACCESS_TOKEN", "access")]);
        let got = token(both, h.clone()).expect("ok");
        assert_eq!(got, Some(("api".into(), "FLY_API_TOKEN".into())));
        let got = token(env(&[("FLY_ACCESS_TOKEN", "access")]), h.clone()).expect("ok");
        assert_eq!(got, Some(("access".into(), "FLY_ACCESS_TOKEN".into())));
        let got = token(env(&[("FLY_API_TOKEN", "  ")]), h).expect("ok");
        assert_eq!(got.map(|(t, _)| t).as_deref(), Some("from-file"));
    }

    #[test]
    fn flyctls_file_is_read_from_home_or_fly_config_dir() {
        let home = home_with("access_token: fo1_abc\nwire_guard_state: {}\n");
        let (t, source) = token(env(&[]), Some(home.path().to_path_buf()))
            .expect("ok")
            .expect("a token");
        assert_eq!(t, "fo1_abc");
        assert!(source.ends_with(".fly/config.yml"), "{source}");
        let other = home_with("access_token: elsewhere\n");
        let dir = other.path().join(".fly");
        let got = token(
            env(&[("FLY_CONFIG_DIR", dir.to_str().expect("utf-8"))]),
            Some(home.path().to_path_buf()),
        )
        .expect("ok");
        assert_eq!(got.map(|(t, _)| t).as_deref(), Some("elsewhere"));
    }

    #[test]
    fn no_file_or_no_key_is_no_token_and_a_broken_file_is_an_error_naming_it() {
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            token(env(&[]), Some(empty.path().to_path_buf())).expect("ok"),
            None
        );
        let keyless = home_with("send_metrics: true\n");
        assert_eq!(
            token(env(&[]), Some(keyless.path().to_path_buf())).expect("ok"),
            None
        );
        let broken = home_with("access_token: [unclosed\n");
        let err = token(env(&[]), Some(broken.path().to_path_buf())).expect_err("broken");
        assert!(err.to_string().contains(".fly/config.yml"), "{err}");
    }
}
