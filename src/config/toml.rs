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
/// Keys whose value is a switch and may be written as a TOML boolean.
const BOOL_KEYS: &[&str] = &[super::ALLOW_IPV6_ONLY_POD_TRAFFIC];

/// Parse and validate the text of a `cluster.toml`. `file` is only used in messages.
pub fn parse_toml(text: &str, file: &Path) -> Result<Config, Diagnostics> {
    validate::validate(lex(text, file)?)
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

/// Read `text` into raw entries; values of the wrong type are recorded as diagnostics. A
/// document that is not TOML gives only its syntax errors (nothing else can be checked).
pub(crate) fn lex(text: &str, file: &Path) -> Result<Raw, Diagnostics> {
    let mut raw = Raw::new(file);
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => return Err(syntax_errors(text, file, &e)),
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
    Ok(raw)
}

/// Every syntax error of a document that failed to parse. A flat config has one key per line,
/// so each line is tried on its own to find all bad lines at once; when no single line is bad
/// (a duplicate key, a multi-line value) the document's own error is reported.
fn syntax_errors(text: &str, file: &Path, document: &toml::de::Error) -> Diagnostics {
    let help = "write one KEY = \"value\" per line, e.g. REGION = \"sjc\"";
    let mut diags = Diagnostics::new(file);
    for (index, line) in text.lines().enumerate() {
        if let Err(e) = toml::from_str::<toml::Table>(line) {
            diags.push(Diagnostic::at(file, index + 1, first_line(&e)).help(help));
        }
    }
    if diags.is_empty() {
        let d = match document.span() {
            Some(span) => Diagnostic::at(file, line_of(text, span.start), first_line(document)),
            None => Diagnostic::in_file(file, first_line(document)),
        };
        diags.push(d.help(help));
    }
    diags
}

/// The first line of a TOML error message (the rest repeats the source text).
fn first_line(e: &toml::de::Error) -> String {
    let m = e.message().lines().next().unwrap_or("invalid TOML").trim();
    format!("not valid TOML: {m}")
}

/// The value as the text the shell format would hold, or the help for a wrong type.
fn scalar(key: &str, value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) if BOOL_KEYS.contains(&key) => Ok(b.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_shell;

    const FILE: &str = "clusters/demo/cluster.toml";

    const VALID: &str = r#"# the demo cluster
CLUSTER_NAME = "demo"
CLUSTER_CIDR = ["fd00:42::/56", "10.42.0.0/16"]
SERVICE_CIDR = "fd00:43::/112,10.43.0.0/16"
CLUSTER_DNS = "fd00:43::a,10.43.0.10"
REGION = "sjc"
NODE_GROUP_SIZE = 3
VOLUME_SIZE = 10
VOLUME_NAME = "demo_data"
WORKER_VM_SIZE = "shared-cpu-1x"
WORKER_VM_MEMORY = 1024
CP_VM_SIZE = "performance-2x"
CP_VM_MEMORY = "8192"
K3S_VERSION = "v1.33.7+k3s1"
ORG_NAME = "personal"
FLANNEL_BACKEND = "wireguard-native"
"#;

    fn parse(text: &str) -> Result<Config, Diagnostics> {
        parse_toml(text, Path::new(FILE))
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from}");
        VALID.replace(from, to)
    }

    fn only(diags: &Diagnostics) -> &Diagnostic {
        assert_eq!(diags.len(), 1, "{diags}");
        diags.iter().next().expect("one")
    }

    #[test]
    fn toml_config_resolves_like_the_shell_config() {
        let from_toml = parse(VALID).expect("valid toml");
        let shell: String = VALID
            .lines()
            .map(|l| {
                l.replace(" = ", "=").replace(
                    "[\"fd00:42::/56\", \"10.42.0.0/16\"]",
                    "\"fd00:42::/56,10.42.0.0/16\"",
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let from_shell = parse_shell(&shell, Path::new(FILE)).expect("valid shell");
        assert_eq!(from_toml, from_shell);
        assert_eq!(from_toml.node_group_size, 3);
        assert_eq!(from_toml.cp_vm.memory_mb, 8192);
    }

    #[test]
    fn toml_syntax_error_names_the_line() {
        let text = replace("REGION = \"sjc\"", "REGION = sjc")
            .replace("VOLUME_SIZE = 10", "VOLUME_SIZE = 10 10");
        let diags = parse(&text).expect_err("bad toml");
        let lines: Vec<_> = diags.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![Some(6), Some(8)], "{diags}");
        let d = diags.iter().next().expect("two");
        assert!(
            d.to_string()
                .starts_with(&format!("{FILE}:6: not valid TOML")),
            "{d}"
        );
    }

    #[test]
    fn toml_duplicate_key_names_the_line() {
        let diags = parse(&format!("{VALID}REGION = \"iad\"\n")).expect_err("duplicate");
        let d = only(&diags);
        assert_eq!(d.line, Some(VALID.lines().count() + 1), "{d}");
        assert!(d.message.contains("duplicate"), "{d}");
    }

    #[test]
    fn toml_value_of_the_wrong_type_names_key_and_line() {
        let diags = parse(&replace("VOLUME_SIZE = 10", "VOLUME_SIZE = true")).expect_err("bool");
        let d = only(&diags);
        assert_eq!(
            (d.key.as_deref(), d.line),
            (Some("VOLUME_SIZE"), Some(8)),
            "{d}"
        );
        assert!(
            d.help.as_deref().unwrap_or("").contains("not a boolean"),
            "{d}"
        );
        let diags = parse(&replace("REGION = \"sjc\"", "REGION = [\"sjc\"]")).expect_err("array");
        assert_eq!(only(&diags).key.as_deref(), Some("REGION"));
    }

    #[test]
    fn toml_validation_errors_name_the_key_line() {
        let diags = parse(&replace("CP_VM_MEMORY = \"8192\"", "CP_VM_MEMORY = -8192"))
            .expect_err("negative");
        let d = only(&diags);
        assert_eq!(
            (d.key.as_deref(), d.line),
            (Some("CP_VM_MEMORY"), Some(13)),
            "{d}"
        );
        let diags = parse(&replace(
            "CLUSTER_CIDR = [\"fd00:42::/56\", \"10.42.0.0/16\"]",
            "CLUSTER_CIDR = [\"10.42.0.0/16\", \"fd00:42::/56\"]",
        ))
        .expect_err("ipv4 first");
        let d = only(&diags);
        assert_eq!(
            (d.key.as_deref(), d.line),
            (Some("CLUSTER_CIDR"), Some(3)),
            "{d}"
        );
    }

    #[test]
    fn toml_lowercase_key_suggests_the_uppercase_key() {
        let diags = parse(&replace("FLANNEL_BACKEND", "flannel_backend")).expect_err("lowercase");
        let d = only(&diags);
        assert_eq!(d.line, Some(16), "{d}");
        assert!(
            d.help
                .as_deref()
                .unwrap_or("")
                .contains("did you mean FLANNEL_BACKEND?"),
            "{d}"
        );
    }

    #[test]
    fn toml_allow_ipv6_only_pod_traffic_takes_a_boolean() {
        let text = replace(
            "FLANNEL_BACKEND = \"wireguard-native\"",
            "FLANNEL_BACKEND = \"vxlan\"\nALLOW_IPV6_ONLY_POD_TRAFFIC = true",
        );
        let c = parse(&text).expect("accepted dual-stack vxlan");
        assert!(c.allow_ipv6_only_pod_traffic);
        let diags = parse(&replace(
            "FLANNEL_BACKEND = \"wireguard-native\"",
            "FLANNEL_BACKEND = \"vxlan\"",
        ))
        .expect_err("dual-stack vxlan");
        let d = only(&diags);
        assert_eq!(
            (d.key.as_deref(), d.line),
            (Some("FLANNEL_BACKEND"), Some(16)),
            "{d}"
        );
    }

    #[test]
    fn toml_tables_are_rejected() {
        let diags = parse(&format!("{VALID}[extra]\nA = 1\n")).expect_err("table");
        let d = only(&diags);
        assert_eq!(d.key.as_deref(), Some("extra"), "{d}");
    }
}
