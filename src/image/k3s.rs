//! Which k3s binary goes into the node image, and what the image's labels say about it.
//!
//! Real k3s comes through `artifacts::fetch_k3s`: downloaded for `K3S_VERSION` and verified
//! against the release's `sha256sum-amd64.txt`, or taken from an airgap directory (which must
//! hold that file) or a lone file (verified when the checksum file sits beside it). A file
//! declared as the stand-in (`k3s-standin`, the project's test double) is hashed and labelled
//! as the stand-in, never as k3s. Local binaries are asked `--version` (argv only, no shell)
//! so that a stand-in cannot be given as k3s nor the reverse, and a real k3s of another
//! version than `K3S_VERSION` is refused. Downloaded binaries are never run here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::artifacts::{self, Arch};

use super::{Error, Result};

/// How long `<k3s> --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the k3s binary comes from (`--k3s-source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Download the release of `K3S_VERSION` from `base_url` (GitHub or a mirror).
    Download {
        /// Release base URL, e.g. [`artifacts::DEFAULT_BASE_URL`].
        base_url: String,
    },
    /// An airgap directory with the release's `k3s` and `sha256sum-amd64.txt`.
    Airgap(PathBuf),
    /// One binary file.
    File(PathBuf),
}

/// The k3s source and whether the operator declares it the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Where it comes from.
    pub source: Source,
    /// The file is `k3s-standin`, the test double (only with [`Source::File`]).
    pub standin: bool,
}

/// The binary chosen, ready to be put into the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// Its path on this machine.
    pub path: PathBuf,
    /// sha256 of its bytes (hex).
    pub sha256: String,
    /// What it is.
    pub kind: Kind,
}

/// Real k3s or the stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Real k3s of this version; `verified_by` names the checksum file that matched it, or is
    /// `None` for a lone file without one.
    Real {
        version: String,
        verified_by: Option<String>,
    },
    /// `k3s-standin` reporting this version.
    Standin { version: String },
}

/// Gets the binary `choice` names for `version` (the cluster's `K3S_VERSION`), using
/// `cache_dir` for downloads and copies; `hash` gives the sha256 of a stand-in file.
pub async fn resolve(
    choice: &Choice,
    version: &str,
    cache_dir: &Path,
    hash: &dyn Fn(&Path) -> Result<String>,
) -> Result<Binary> {
    let arch = Arch::Amd64;
    if choice.standin {
        let Source::File(path) = &choice.source else {
            return Err(Error::K3sIdentity {
                path: PathBuf::new(),
                reason: "the stand-in can only be given as a file (--k3s-source file PATH)"
                    .to_string(),
            });
        };
        let (kind, reported) = identity(path).await?;
        if kind != IdentityKind::Standin {
            return Err(Error::K3sIdentity {
                path: path.clone(),
                reason: format!(
                    "it reports itself as real k3s ({reported}), not k3s-standin: leave out --k3s-standin"
                ),
            });
        }
        // The stand-in imitates one Kubernetes version; an image claiming K3S_VERSION must
        // run that version, or an upgrade would roll out an image that reports the old one.
        if crate::plan::skew::kubernetes_version(&reported)
            != crate::plan::skew::kubernetes_version(version)
        {
            return Err(Error::K3sIdentity {
                path: path.clone(),
                reason: format!(
                    "it is k3s-standin {reported} (Kubernetes {}), but K3S_VERSION is {version} (Kubernetes {}): give the stand-in build of that version",
                    crate::plan::skew::kubernetes_version(&reported),
                    crate::plan::skew::kubernetes_version(version)
                ),
            });
        }
        let sha256 = hash(path)?;
        return Ok(Binary {
            path: path.clone(),
            sha256,
            kind: Kind::Standin { version: reported },
        });
    }
    let (source, verified_by) = match &choice.source {
        Source::Download { base_url } => {
            let urls = artifacts::release_urls(version, arch, base_url).map_err(Error::K3s)?;
            (
                artifacts::Source::Download {
                    base_url: base_url.clone(),
                },
                Some(urls.sums),
            )
        }
        Source::Airgap(dir) => {
            let sums = dir.join(arch.sums_asset());
            if !sums.is_file() {
                return Err(Error::K3sIdentity {
                    path: dir.clone(),
                    reason: format!(
                        "an airgap directory must hold the release's {} to verify k3s against",
                        arch.sums_asset()
                    ),
                });
            }
            (
                artifacts::Source::LocalDir(dir.clone()),
                Some(sums.display().to_string()),
            )
        }
        Source::File(path) => {
            let sums = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(arch.sums_asset());
            let verified_by = sums.is_file().then(|| sums.display().to_string());
            (artifacts::Source::LocalFile(path.clone()), verified_by)
        }
    };
    let fetched = artifacts::fetch_k3s(version, arch, &cache_dir.join("k3s"), &source)
        .await
        .map_err(Error::K3s)?;
    if !matches!(choice.source, Source::Download { .. }) {
        let (kind, reported) = identity(&fetched.path).await?;
        if kind == IdentityKind::Standin {
            return Err(Error::K3sIdentity {
                path: fetched.path,
                reason: format!(
                    "it is k3s-standin ({reported}), a test double, not k3s: give it with --k3s-source file PATH --k3s-standin"
                ),
            });
        }
        if reported != version {
            return Err(Error::K3sIdentity {
                path: fetched.path,
                reason: format!("it is k3s {reported}, but K3S_VERSION is {version}"),
            });
        }
    }
    Ok(Binary {
        path: fetched.path,
        sha256: fetched.sha256,
        kind: Kind::Real {
            version: version.to_string(),
            verified_by,
        },
    })
}

/// Real k3s or the stand-in, as `--version` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Real,
    Standin,
}

/// Reads `(kind, version)` from a k3s binary's `--version` output: real k3s prints
/// `k3s version v1.33.7+k3s1 (<commit>)`, the stand-in `k3s-standin version
/// v1.33.7+k3s-standin (...)`. Anything mentioning `k3s-standin` is the stand-in.
pub fn parse_identity(out: &str) -> std::result::Result<(IdentityKind, String), String> {
    let first = out.lines().next().unwrap_or("").trim();
    let mut words = first.split_whitespace();
    let (program, word, version) = (words.next(), words.next(), words.next());
    if out.contains("k3s-standin") {
        return match (program, word, version) {
            (Some("k3s-standin"), Some("version"), Some(v)) => {
                Ok((IdentityKind::Standin, v.to_string()))
            }
            _ => Err(format!(
                "`--version` mentions k3s-standin but its first line {first:?} is not `k3s-standin version V`"
            )),
        };
    }
    match (program, word, version) {
        (Some("k3s"), Some("version"), Some(v)) if v.starts_with('v') => {
            Ok((IdentityKind::Real, v.to_string()))
        }
        _ => Err(format!(
            "`--version` says {first:?}, not `k3s version vX.Y.Z+k3sN`"
        )),
    }
}

/// Runs `<path> --version` (killed after [`VERSION_TIMEOUT`]) and parses what it says.
async fn identity(path: &Path) -> Result<(IdentityKind, String)> {
    let fail = |reason: String| Error::K3sIdentity {
        path: path.to_path_buf(),
        reason,
    };
    let child = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("running it with --version: {e}")))?;
    let out = tokio::time::timeout(VERSION_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            fail(format!(
                "--version did not exit within {}s",
                VERSION_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(format!("reading --version: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("--version exited with {}", out.status)));
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    parse_identity(&text).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    async fn resolve(choice: &Choice, version: &str, cache_dir: &Path) -> Result<Binary> {
        super::resolve(choice, version, cache_dir, &crate::image::store::hash_file).await
    }

    fn fake(dir: &Path, name: &str, line: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{line}'\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    #[test]
    fn identity_lines_of_k3s_and_the_standin() {
        assert_eq!(
            parse_identity("k3s version v1.33.7+k3s1 (abc)\ngo version go1.24\n"),
            Ok((IdentityKind::Real, "v1.33.7+k3s1".to_string()))
        );
        assert_eq!(
            parse_identity("k3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)"),
            Ok((IdentityKind::Standin, "v1.33.7+k3s-standin".to_string()))
        );
        assert!(parse_identity("k3s version v1.33.7 (k3s-standin)").is_err());
        assert!(parse_identity("hello").is_err());
    }

    #[tokio::test]
    async fn a_standin_is_labelled_as_one_and_cannot_pass_as_k3s() {
        let dir = tempfile::tempdir().expect("tempdir");
        let standin = fake(
            dir.path(),
            "k3s-standin",
            "k3s-standin version v1.33.7+k3s-standin (stand-in for k3s, not k3s)",
        );
        let cache = dir.path().join("cache");
        let as_standin = Choice {
            source: Source::File(standin.clone()),
            standin: true,
        };
        let b = resolve(&as_standin, "v1.33.7+k3s1", &cache)
            .await
            .expect("stand-in");
        assert_eq!(
            b.kind,
            Kind::Standin {
                version: "v1.33.7+k3s-standin".into()
            }
        );
        // A stand-in of another Kubernetes version cannot make an image of K3S_VERSION.
        let e = resolve(&as_standin, "v1.34.1+k3s1", &cache)
            .await
            .expect_err("another version");
        assert!(
            e.to_string().contains(
                "it is k3s-standin v1.33.7+k3s-standin (Kubernetes v1.33.7), but K3S_VERSION is v1.34.1+k3s1 (Kubernetes v1.34.1)"
            ),
            "{e}"
        );
        let as_real = Choice {
            source: Source::File(standin),
            standin: false,
        };
        let e = resolve(&as_real, "v1.33.7+k3s1", &cache)
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("--k3s-standin"), "{e}");
    }

    #[tokio::test]
    async fn a_real_k3s_file_must_match_k3s_version_and_its_checksum_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("release");
        std::fs::create_dir(&src).expect("mkdir");
        let k3s = fake(&src, "k3s", "k3s version v1.33.7+k3s1 (abc)");
        let cache = dir.path().join("cache");
        let choice = Choice {
            source: Source::File(k3s.clone()),
            standin: false,
        };
        let e = resolve(&choice, "v1.30.0+k3s1", &cache)
            .await
            .expect_err("other version");
        assert!(e.to_string().contains("K3S_VERSION is v1.30.0+k3s1"), "{e}");
        let b = resolve(&choice, "v1.33.7+k3s1", &cache)
            .await
            .expect("unverified");
        assert!(matches!(
            b.kind,
            Kind::Real {
                verified_by: None,
                ..
            }
        ));
        std::fs::write(
            src.join("sha256sum-amd64.txt"),
            format!("{}  k3s\n", "b".repeat(64)),
        )
        .expect("sums");
        let airgap = Choice {
            source: Source::Airgap(src.clone()),
            standin: false,
        };
        let e = resolve(&airgap, "v1.33.7+k3s1", &dir.path().join("cache2"))
            .await
            .expect_err("mismatch");
        assert!(
            matches!(e, Error::K3s(artifacts::Error::Mismatch { .. })),
            "{e}"
        );
        let e = resolve(
            &Choice {
                source: Source::Airgap(dir.path().to_path_buf()),
                standin: false,
            },
            "v1.33.7+k3s1",
            &cache,
        )
        .await
        .expect_err("no sums");
        assert!(e.to_string().contains("sha256sum-amd64.txt"), "{e}");
    }
}
