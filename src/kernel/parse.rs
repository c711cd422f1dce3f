//! Kernel `.config` text → [`KernelConfig`]: option values, the version from the header, and
//! whether the kernel can load modules.
//!
//! Pure: takes text, does no I/O. The running-kernel facts that are not in the text (the
//! release from `/proc/sys/kernel/osrelease`, a missing `/lib/modules/<release>`) are applied
//! by `kernel::source`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::Error;

/// One option's value as the config states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `CONFIG_X=y`: built in.
    Yes,
    /// `CONFIG_X=m`: built as a loadable module.
    Module,
    /// `# CONFIG_X is not set` or `CONFIG_X=n`.
    No,
    /// Any other value (`CONFIG_X="text"`, `CONFIG_X=32`): the option is set.
    Text(String),
}

/// A kernel version, `major.minor.patch`, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version is not `major.minor[.patch]` followed by an optional suffix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a kernel version: {0:?}")]
pub struct VersionError(pub String);

impl FromStr for Version {
    type Err = VersionError;

    /// Reads the leading `major.minor[.patch]` of a release such as `6.18.44-fc-v669` or
    /// `6.18.39-79.141.amzn2023.x86_64.microvm`; the suffix is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError(s.to_string());
        let numeric_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let mut parts = s[..numeric_end].split('.');
        let mut next = |required: bool| -> Result<u32, VersionError> {
            match parts.next() {
                Some(p) if !p.is_empty() => p.parse().map_err(|_| bad()),
                Some(_) => Err(bad()),
                None if required => Err(bad()),
                None => Ok(0),
            }
        };
        let major = next(true)?;
        let minor = next(true)?;
        let patch = next(false)?;
        Ok(Version::new(major, minor, patch))
    }
}

/// Whether options built as modules (`=m`) can be used on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modules {
    /// `CONFIG_MODULES=y` (and, for the running kernel, `/lib/modules/<release>` exists).
    Loadable,
    /// `CONFIG_MODULES` is not set: the kernel has no module loader at all.
    Disabled,
    /// The running kernel could load modules, but none are shipped for it (Fly machines).
    NotShipped { dir: PathBuf },
}

impl Modules {
    /// Can an `=m` option be loaded on this kernel?
    pub fn loadable(&self) -> bool {
        matches!(self, Modules::Loadable)
    }

    /// Why `=m` does not count, or `None` when modules can be loaded.
    pub fn reason(&self) -> Option<String> {
        match self {
            Modules::Loadable => None,
            Modules::Disabled => {
                Some("kernel cannot load modules: CONFIG_MODULES is not set".to_string())
            }
            Modules::NotShipped { dir } => Some(format!(
                "kernel cannot load modules: {} does not exist (no modules shipped)",
                dir.display()
            )),
        }
    }
}

/// A parsed kernel config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// Every option the file mentions, without the `CONFIG_` prefix.
    pub options: HashMap<String, Value>,
    /// From the header (`# Linux/x86 6.18.44 Kernel Configuration`) or, for the running kernel,
    /// its release. `None` when neither says.
    pub version: Option<Version>,
    /// The release string the version came from (`6.18.44` or `6.18.44-fc-v669`).
    pub release: Option<String>,
    /// Whether `=m` options are usable.
    pub modules: Modules,
}

impl KernelConfig {
    /// Parse `.config` text. Blank lines and comments are skipped except the header and the
    /// `# CONFIG_X is not set` lines; any other line that is not `CONFIG_X=value` is an error,
    /// so a file that is not a kernel config is rejected rather than judged empty.
    pub fn parse(text: &str) -> Result<KernelConfig, Error> {
        let mut options = HashMap::with_capacity(4096);
        let mut release = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim();
                if let Some(name) = comment
                    .strip_prefix("CONFIG_")
                    .and_then(|rest| rest.strip_suffix(" is not set"))
                {
                    options.insert(name.to_string(), Value::No);
                } else if release.is_none() {
                    release = header_release(comment);
                }
                continue;
            }
            let syntax = || Error::Syntax {
                line: index + 1,
                text: raw.to_string(),
            };
            let (key, value) = line.split_once('=').ok_or_else(syntax)?;
            let name = key.strip_prefix("CONFIG_").ok_or_else(syntax)?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(syntax());
            }
            let value = match value {
                "y" => Value::Yes,
                "m" => Value::Module,
                "n" => Value::No,
                other => Value::Text(other.to_string()),
            };
            options.insert(name.to_string(), value);
        }
        if options.is_empty() {
            return Err(Error::Empty);
        }
        let modules = match options.get("MODULES") {
            Some(Value::Yes) => Modules::Loadable,
            _ => Modules::Disabled,
        };
        let version = release.as_deref().and_then(|r| r.parse().ok());
        Ok(KernelConfig {
            options,
            version,
            release,
            modules,
        })
    }

    /// The option's value; an option the file does not mention is [`Value::No`].
    pub fn value(&self, name: &str) -> &Value {
        self.options.get(name).unwrap_or(&Value::No)
    }

    /// Does the file mention the option at all (set, module, or `is not set`)?
    pub fn mentions(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }
}

/// The release in a header comment: `Linux/x86 6.18.44 Kernel Configuration` (kconfig since
/// 2.6.x) or `Linux kernel version: 2.6.32` (older kconfig).
fn header_release(comment: &str) -> Option<String> {
    if let Some(rest) = comment.strip_prefix("Linux/") {
        let rest = rest.strip_suffix("Kernel Configuration")?.trim();
        let (_arch, release) = rest.split_once(' ')?;
        return Some(release.trim().to_string());
    }
    comment
        .strip_prefix("Linux kernel version:")
        .map(|r| r.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_values_not_set_lines_and_header_version() {
        let text = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.18.44 Kernel Configuration\n#\nCONFIG_CC_VERSION_TEXT=\"gcc (GCC) 15.3.0\"\nCONFIG_VXLAN=y\nCONFIG_IP_VS=m\n# CONFIG_INET_ESP is not set\nCONFIG_NR_CPUS=64\nCONFIG_OLD=n\n";
        let config = KernelConfig::parse(text).expect("parses");
        assert_eq!(config.version, Some(Version::new(6, 18, 44)));
        assert_eq!(config.release.as_deref(), Some("6.18.44"));
        assert_eq!(config.value("VXLAN"), &Value::Yes);
        assert_eq!(config.value("IP_VS"), &Value::Module);
        assert_eq!(config.value("INET_ESP"), &Value::No);
        assert!(config.mentions("INET_ESP"));
        assert_eq!(config.value("OLD"), &Value::No);
        assert_eq!(config.value("NR_CPUS"), &Value::Text("64".into()));
        assert_eq!(
            config.value("CC_VERSION_TEXT"),
            &Value::Text("\"gcc (GCC) 15.3.0\"".into())
        );
        assert_eq!(config.value("ABSENT"), &Value::No);
        assert!(!config.mentions("ABSENT"));
    }

    #[test]
    fn header_with_arch_and_distro_suffix_gives_the_version() {
        let text = "# Linux/x86_64 6.18.39-79.141.amzn2023.x86_64.microvm Kernel Configuration\nCONFIG_X=y\n";
        let config = KernelConfig::parse(text).expect("parses");
        assert_eq!(config.version, Some(Version::new(6, 18, 39)));
        assert_eq!(
            config.release.as_deref(),
            Some("6.18.39-79.141.amzn2023.x86_64.microvm")
        );
    }

    #[test]
    fn old_style_header_gives_the_version() {
        let text = "# Linux kernel version: 2.6.32\nCONFIG_X=y\n";
        let config = KernelConfig::parse(text).expect("parses");
        assert_eq!(config.version, Some(Version::new(2, 6, 32)));
    }

    #[test]
    fn config_without_header_has_no_version() {
        let config = KernelConfig::parse("CONFIG_X=y\n").expect("parses");
        assert_eq!(config.version, None);
        assert_eq!(config.release, None);
    }

    #[test]
    fn modules_follow_config_modules() {
        let with = KernelConfig::parse("CONFIG_MODULES=y\n").expect("parses");
        assert_eq!(with.modules, Modules::Loadable);
        let without = KernelConfig::parse("# CONFIG_MODULES is not set\n").expect("parses");
        assert_eq!(without.modules, Modules::Disabled);
        assert_eq!(
            without.modules.reason().as_deref(),
            Some("kernel cannot load modules: CONFIG_MODULES is not set")
        );
        let absent = KernelConfig::parse("CONFIG_X=y\n").expect("parses");
        assert_eq!(absent.modules, Modules::Disabled);
    }

    #[test]
    fn garbage_line_is_a_syntax_error_with_its_line_number() {
        let err = KernelConfig::parse("CONFIG_X=y\nhello world\n").expect_err("rejects");
        assert!(
            matches!(&err, Error::Syntax { line: 2, text } if text == "hello world"),
            "{err:?}"
        );
        let err = KernelConfig::parse("FOO=bar\n").expect_err("rejects");
        assert!(matches!(err, Error::Syntax { line: 1, .. }), "{err:?}");
    }

    #[test]
    fn text_without_options_is_rejected() {
        assert!(matches!(
            KernelConfig::parse("# just a comment\n\n"),
            Err(Error::Empty)
        ));
        assert!(matches!(KernelConfig::parse(""), Err(Error::Empty)));
    }

    #[test]
    fn versions_parse_and_compare_numerically() {
        assert_eq!("6.18.44-fc-v669".parse(), Ok(Version::new(6, 18, 44)));
        assert_eq!("5.3".parse(), Ok(Version::new(5, 3, 0)));
        assert_eq!("4.18.0-80.el8.x86_64".parse(), Ok(Version::new(4, 18, 0)));
        assert!("6".parse::<Version>().is_err());
        assert!("abc".parse::<Version>().is_err());
        assert!("6..1".parse::<Version>().is_err());
        assert!(Version::new(4, 9, 0) < Version::new(4, 18, 0));
        assert!(Version::new(5, 10, 0) > Version::new(5, 3, 99));
    }
}
