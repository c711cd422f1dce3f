//! The TOML config format (`clusters/<name>/cluster.toml`): the same uppercase keys as the
//! shell format, values as TOML strings (numbers may be integers, the CIDR and DNS lists may be
//! arrays of strings). Errors carry line numbers taken from TOML spans.
//!
//! Pure: no I/O; what the values mean is checked by `validate`.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::diagnostic::Diagnostic;
use super::validate::{self, Raw};
use super::{Config, Diagnostics};

/// Keys whose value is a list and may be written as a TOML array.
const LIST_KEYS: &[&str] = &["CLUSTER_CIDR", "SERVICE_CIDR", "CLUSTER_DNS"];

/// Parse and validate the text of a `cluster.toml`. `file` is only used in messages.
pub fn parse_toml(text: &str, file: &Path) -> Result<Config, Diagnostics> {
    validate::validate(lex(text, file))
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Read `text` into raw entries; TOML syntax errors and values of the wrong type are recorded
/// as diagnostics.
pub(crate) fn lex(text: &str, file: &Path) -> Raw {
    let mut raw = Raw::new(file);
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let first_line = e.message().lines().next().unwrap_or("invalid TOML").trim();
            let d = match e.span() {
                Some(span) => Diagnostic::at(file, line_of(text, span.start), first_line),
                None => Diagnostic::in_file(file, first_line),
            }
            .help("write one KEY = \"value\" per line, e.g. REGION = \"sjc\"");
            raw.diagnostics.push(d);
            return raw;
        }
    };
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, value) in entries {
        let line = line_of(text, key.span().start);
        let key = key.into_inner();
        let value_line = line_of(text, value.span().start);
        match scalar(&key, value.into_inner()) {
            Ok(v) => raw.add(key, v, line),
            Err(help) => {
                let d = Diagnostic::at(file, value_line, "has a value of the wrong type")
                    .key(key.as_str())
                    .help(help);
                raw.diagnostics.push(d);
                raw.mark_broken(&key);
            }
        }
    }
    raw
}

/// The value as the text the shell format would hold, or the help for a wrong type.
fn scalar(key: &str, value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Array(items) if LIST_KEYS.contains(&key) => items
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                _ => Err(format!(
                    "write the list as strings, e.g. {key} = [\"fd00:42::/56\", \"10.42.0.0/16\"]"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        other => Err(format!(
            "write a string{}, not a {}, e.g. {key} = \"...\"",
            if LIST_KEYS.contains(&key) {
                " or an array of strings"
            } else {
                " or an integer"
            },
            other.type_str()
        )),
    }
}
