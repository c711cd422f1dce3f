//! The k3s flag table: which long flags `k3s server` and `k3s agent` accept and what type of
//! value each takes, read from `k3s-flags.txt` (a copy of reference/k3s-flags.txt, embedded).
//!
//! Pure: no I/O. The renderer's tests check every rendered key against this table, and the k3s
//! stand-in reuses it to reject keys that real k3s would not accept for a role.

use std::sync::OnceLock;

use super::Error;

/// The embedded flag list: `<server|agent|both> <flag> <bool|string|slice|int|duration>` lines,
/// `#` comments (reference/k3s.md §2).
pub const K3S_FLAGS_TXT: &str = include_str!("k3s-flags.txt");

/// Which k3s subcommand accepts a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `k3s server` only.
    Server,
    /// `k3s agent` only.
    Agent,
    /// Both subcommands.
    Both,
}

impl Scope {
    /// Whether `k3s server` accepts the flag.
    pub fn on_server(self) -> bool {
        matches!(self, Scope::Server | Scope::Both)
    }

    /// Whether `k3s agent` accepts the flag.
    pub fn on_agent(self) -> bool {
        matches!(self, Scope::Agent | Scope::Both)
    }
}

/// The value type of a flag, as urfave/cli defines it in k3s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    String,
    /// A `StringSliceFlag`: a YAML list in config.yaml, one `--flag=item` per element.
    Slice,
    Int,
    /// A Go duration string such as `5m0s`.
    Duration,
}

/// One k3s long flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub scope: Scope,
    /// The long name without dashes, which is also its config.yaml key.
    pub name: String,
    pub kind: Kind,
}

/// Parse a flag list in the `k3s-flags.txt` format. `source` names the text in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<Flag>, Error> {
    let mut flags = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| Error::FlagTable {
            source_name: source.to_owned(),
            line: i + 1,
            reason: reason.to_owned(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [scope, name, kind] = fields[..] else {
            return Err(bad("expected `<scope> <flag> <type>`"));
        };
        let scope = match scope {
            "server" => Scope::Server,
            "agent" => Scope::Agent,
            "both" => Scope::Both,
            _ => return Err(bad("scope must be server, agent or both")),
        };
        let kind = match kind {
            "bool" => Kind::Bool,
            "string" => Kind::String,
            "slice" => Kind::Slice,
            "int" => Kind::Int,
            "duration" => Kind::Duration,
            _ => return Err(bad("type must be bool, string, slice, int or duration")),
        };
        flags.push(Flag {
            scope,
            name: name.to_owned(),
            kind,
        });
    }
    Ok(flags)
}

/// The embedded table, parsed once.
pub fn table() -> &'static [Flag] {
    static TABLE: OnceLock<Vec<Flag>> = OnceLock::new();
    TABLE.get_or_init(|| {
        parse(K3S_FLAGS_TXT, "k3s-flags.txt")
            .expect("the embedded k3s-flags.txt parses (checked by embedded_table_parses)")
    })
}

/// The flag named `name` (no dashes), if k3s has one.
pub fn lookup(name: &str) -> Option<&'static Flag> {
    table().iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses_with_the_documented_counts() {
        let flags = parse(K3S_FLAGS_TXT, "k3s-flags.txt").unwrap();
        // reference/k3s.md §2: 125 flags, 45 both, 79 server-only, 1 agent-only.
        assert_eq!(flags.len(), 125);
        let count = |s: Scope| flags.iter().filter(|f| f.scope == s).count();
        assert_eq!(count(Scope::Both), 45);
        assert_eq!(count(Scope::Server), 79);
        assert_eq!(count(Scope::Agent), 1);
    }

    #[test]
    fn lookup_finds_scope_and_kind() {
        let f = lookup("tls-san").unwrap();
        assert_eq!((f.scope, f.kind), (Scope::Server, Kind::Slice));
        assert!(f.scope.on_server() && !f.scope.on_agent());
        let f = lookup("node-ip").unwrap();
        assert_eq!((f.scope, f.kind), (Scope::Both, Kind::Slice));
        assert!(lookup("no-such-flag").is_none());
    }

    #[test]
    fn parse_rejects_bad_lines_with_line_number() {
        let err = parse("# c\nboth token string\nserver x blob\n", "t.txt").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.txt line 3: bad k3s flag table: type must be bool, string, slice, int or duration"
        );
        assert!(parse("both token\n", "t.txt").is_err());
        assert!(parse("nobody token string\n", "t.txt").is_err());
    }
}
