//! Architectures and release URLs of k3s (reference/k3s.md §5). Pure: no I/O here.

use std::fmt;

use super::{Error, Result};

/// Where k3s publishes releases: `<base>/<tag>/<asset>`.
pub const DEFAULT_BASE_URL: &str = "https://github.com/k3s-io/k3s/releases/download";

/// A CPU architecture k3s publishes a binary for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64: binary `k3s`.
    Amd64,
    /// 64-bit ARM: binary `k3s-arm64`.
    Arm64,
    /// 32-bit ARM (armhf): binary `k3s-armhf`.
    Arm,
}

impl Arch {
    /// Maps a machine name as install.sh does with `uname -m`: `x86_64|amd64` → amd64,
    /// `aarch64|arm64` → arm64, `arm*` → arm. Rust's `std::env::consts::ARCH` names
    /// (`x86_64`, `aarch64`, `arm`) map the same way.
    pub fn from_machine(name: &str) -> Result<Arch> {
        match name {
            "x86_64" | "amd64" => Ok(Arch::Amd64),
            "aarch64" | "arm64" => Ok(Arch::Arm64),
            n if n.starts_with("arm") => Ok(Arch::Arm),
            _ => Err(Error::UnknownArch {
                name: name.to_string(),
            }),
        }
    }

    /// The architecture this program was built for.
    pub fn host() -> Result<Arch> {
        Arch::from_machine(std::env::consts::ARCH)
    }

    /// The release's name for it (`amd64`, `arm64`, `arm`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
        }
    }

    /// The binary's asset name (`k3s`, `k3s-arm64`, `k3s-armhf`).
    pub fn binary_asset(self) -> &'static str {
        match self {
            Arch::Amd64 => "k3s",
            Arch::Arm64 => "k3s-arm64",
            Arch::Arm => "k3s-armhf",
        }
    }

    /// The checksum file's asset name (`sha256sum-<arch>.txt`).
    pub fn sums_asset(self) -> String {
        format!("sha256sum-{}.txt", self.name())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The two URLs a verified download needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseUrls {
    /// The k3s binary.
    pub binary: String,
    /// `sha256sum-<arch>.txt`.
    pub sums: String,
}

/// The URLs of `version`'s binary and checksum file for `arch` under `base` (normally
/// [`DEFAULT_BASE_URL`]; a mirror with the same layout works too).
///
/// The `+` of a tag such as `v1.31.3+k3s1` stays a literal `+`: in a URL path `+` means
/// itself, GitHub resolves it as well as `%2B`, and it is the form install.sh requests
/// (reference/k3s.md §5), so logs and mirrors see the tag exactly as published.
pub fn release_urls(version: &str, arch: Arch, base: &str) -> Result<ReleaseUrls> {
    check_version(version)?;
    let parsed = url::Url::parse(base).map_err(|_| Error::InvalidBaseUrl {
        url: base.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Error::InvalidBaseUrl {
            url: base.to_string(),
        });
    }
    let base = base.trim_end_matches('/');
    Ok(ReleaseUrls {
        binary: format!("{base}/{version}/{}", arch.binary_asset()),
        sums: format!("{base}/{version}/{}", arch.sums_asset()),
    })
}

/// Checks that `version` looks like a k3s tag (`v1.34.3+k3s1`, `v1.33.7-rc4+k3s1`): it becomes
/// a URL path segment and a cache directory name, so it may hold only letters, digits and
/// `.+-_`, and must start with `v`.
pub fn check_version(version: &str) -> Result<()> {
    let bad = |reason| Error::InvalidVersion {
        version: version.to_string(),
        reason,
    };
    if !version.starts_with('v') || version.len() < 2 {
        return Err(bad("k3s versions look like v1.34.3+k3s1"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_');
    if !version.chars().all(allowed) {
        return Err(bad(
            "only letters, digits and '.', '+', '-', '_' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_names_map_like_install_sh() {
        for (name, arch, binary) in [
            ("x86_64", Arch::Amd64, "k3s"),
            ("amd64", Arch::Amd64, "k3s"),
            ("aarch64", Arch::Arm64, "k3s-arm64"),
            ("arm64", Arch::Arm64, "k3s-arm64"),
            ("armv7l", Arch::Arm, "k3s-armhf"),
            ("arm", Arch::Arm, "k3s-armhf"),
        ] {
            let got = Arch::from_machine(name).expect(name);
            assert_eq!(got, arch, "{name}");
            assert_eq!(got.binary_asset(), binary, "{name}");
        }
        assert_eq!(Arch::Arm.sums_asset(), "sha256sum-arm.txt");
        let err = Arch::from_machine("riscv64").expect_err("riscv64");
        assert!(err.to_string().contains("riscv64"), "{err}");
        assert!(
            Arch::host().is_ok(),
            "the build machines are amd64 or arm64"
        );
    }

    #[test]
    fn release_urls_keep_the_plus_literal() {
        let urls = release_urls("v1.31.3+k3s1", Arch::Amd64, DEFAULT_BASE_URL).expect("urls");
        assert_eq!(
            urls.sums,
            "https://github.com/k3s-io/k3s/releases/download/v1.31.3+k3s1/sha256sum-amd64.txt"
        );
        assert_eq!(
            urls.binary,
            "https://github.com/k3s-io/k3s/releases/download/v1.31.3+k3s1/k3s"
        );
        let mirror = release_urls("v1.33.7-rc4+k3s1", Arch::Arm64, "http://mirror.lan/k3s/")
            .expect("mirror");
        assert_eq!(
            mirror.binary,
            "http://mirror.lan/k3s/v1.33.7-rc4+k3s1/k3s-arm64"
        );
    }

    #[test]
    fn release_urls_refuse_versions_that_could_leave_their_directory() {
        for bad in ["", "1.31.3+k3s1", "v1/../../x", "v1.31 k3s1", "v", "v1?x"] {
            let err = release_urls(bad, Arch::Amd64, DEFAULT_BASE_URL).expect_err(bad);
            assert!(matches!(err, Error::InvalidVersion { .. }), "{bad}: {err}");
        }
        let err = release_urls("v1.31.3+k3s1", Arch::Amd64, "ftp://x/y").expect_err("ftp");
        assert!(matches!(err, Error::InvalidBaseUrl { .. }), "{err}");
    }
}
