//! Problems found in a cluster config: one [`Diagnostic`] per problem, collected into
//! [`Diagnostics`] so a user sees every problem of a file at once.
//!
//! Pure data and formatting; no parsing or validation rules live here.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One problem in a config file: where it is, which key, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem sits on one line (a missing key has none).
    pub line: Option<usize>,
    /// The key concerned, when there is one.
    pub key: Option<String>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `line` of `file`.
    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: Some(line),
            key: None,
            message: message.into(),
            help: None,
        }
    }

    /// A problem of the whole file (no line).
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
            help: None,
        }
    }

    /// Name the key concerned.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Say what to write instead.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line: KEY: message (help: ...)`, leaving out the parts that are absent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// Every problem found in one config file, in line order (problems without a line last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty collection for `file`.
    pub fn new(file: &Path) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    /// The file these problems are in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Record one more problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Take over every problem of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.items.iter()
    }

    /// Sort by line (stable, so problems of one line keep the order they were found in);
    /// problems without a line go last.
    pub(crate) fn sort(&mut self) {
        self.items
            .sort_by_key(|d| (d.line.is_none(), d.line.unwrap_or(0)));
    }

    /// `Ok(value)` when nothing was recorded, else `Err(self)`, sorted.
    pub(crate) fn into_result<T>(mut self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            self.sort();
            Err(self)
        }
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl fmt::Display for Diagnostics {
    /// One diagnostic per line, no header (the caller says how many and where).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostic_display_names_file_line_key_and_help() {
        let d = Diagnostic::at(
            Path::new("clusters/demo/config"),
            3,
            "\"10.0.0.0/16\" lists IPv4 first",
        )
        .key("CLUSTER_CIDR")
        .help("put the IPv6 range first, e.g. \"fd00:42::/56,10.42.0.0/16\"");
        assert_eq!(
            d.to_string(),
            "clusters/demo/config:3: CLUSTER_CIDR: \"10.0.0.0/16\" lists IPv4 first \
             (help: put the IPv6 range first, e.g. \"fd00:42::/56,10.42.0.0/16\")"
        );
    }

    #[test]
    fn diagnostics_sort_by_line_with_lineless_last() {
        let file = Path::new("c");
        let mut all = Diagnostics::new(file);
        all.push(Diagnostic::in_file(file, "missing").key("A"));
        all.push(Diagnostic::at(file, 9, "nine"));
        all.push(Diagnostic::at(file, 2, "two"));
        let all = all.into_result(()).expect_err("three problems");
        let lines: Vec<_> = all.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![Some(2), Some(9), None]);
        assert_eq!(all.to_string().lines().count(), 3);
    }
}
