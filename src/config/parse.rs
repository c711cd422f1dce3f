//! The shell-style config format (`clusters/<name>/config`, as k3s.sh sourced it): `KEY=VALUE`
//! lines, comments, single and double quotes, an optional `export `.
//!
//! This is a lexer for data, not a shell: nothing is ever executed or expanded. Every construct
//! a shell would act on (`$(...)`, backticks, `$VAR`, `;`, `|`, `&`, redirections, a second
//! word after the value) is rejected with the file, the line and what to write instead.
//! Pure: no I/O; it does not check what the values mean (that is `validate`).

use std::path::Path;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::validate::{self, Raw};
use super::Config;

/// Parse and validate the text of a shell-style config. `file` is only used in messages.
/// Returns every problem of the file at once.
pub fn parse_shell(text: &str, file: &Path) -> Result<Config, Diagnostics> {
    validate::validate(lex(text, file))
}

/// Split `text` into `KEY=VALUE` entries without judging the values. Syntax problems are
/// recorded in the result's diagnostics; lines with problems contribute no entry.
pub(crate) fn lex(text: &str, file: &Path) -> Raw {
    let mut raw = Raw::new(file);
    // Editors on some systems write a byte-order mark; it is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match lex_line(line) {
            Ok(None) => {}
            Ok(Some((key, value))) => raw.add(key, value, number),
            Err(problem) => {
                let mut d = Diagnostic::at(file, number, problem.message).help(problem.help);
                if let Some(key) = problem.key {
                    raw.mark_broken(&key);
                    d = d.key(key);
                }
                raw.diagnostics.push(d);
            }
        }
    }
    raw
}

/// What is wrong with one line.
#[derive(Debug, PartialEq, Eq)]
struct LineProblem {
    key: Option<String>,
    message: String,
    help: String,
}

impl LineProblem {
    fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        LineProblem {
            key: None,
            message: message.into(),
            help: help.into(),
        }
    }
}

/// Whether `s` is a key: `[A-Z_][A-Z0-9_]*`.
pub(crate) fn is_key(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// One line: `None` for blank lines and comments, else the key and the literal value.
fn lex_line(line: &str) -> Result<Option<(String, String)>, LineProblem> {
    let line = line.trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let rest = match line.strip_prefix("export") {
        Some(after) if after.starts_with([' ', '\t']) => after.trim_start_matches([' ', '\t']),
        _ => line,
    };
    let Some(eq) = rest.find('=') else {
        return Err(LineProblem::new(
            format!("`{}` is not a KEY=VALUE assignment", shorten(line)),
            "write one KEY=VALUE per line, e.g. REGION=sjc; the config is data and is never run",
        ));
    };
    let key = &rest[..eq];
    if !is_key(key) {
        return Err(key_problem(key));
    }
    lex_value(&rest[eq + 1..])
        .map(|value| Some((key.to_string(), value)))
        .map_err(|mut problem| {
            problem.key = Some(key.to_string());
            problem
        })
}

/// Explain why `key` (the text before the first `=`) is not a key.
fn key_problem(key: &str) -> LineProblem {
    let trimmed = key.trim();
    if trimmed != key && is_key(trimmed) {
        return LineProblem::new(
            format!("space around `=` after {trimmed}"),
            format!("write {trimmed}=VALUE with no spaces around ="),
        );
    }
    let upper = trimmed.to_ascii_uppercase();
    if is_key(&upper) {
        return LineProblem::new(
            format!("key `{trimmed}` is not uppercase"),
            format!("write {upper}=VALUE"),
        );
    }
    LineProblem::new(
        format!("`{}` is not a valid key", shorten(key)),
        "keys are uppercase letters, digits and _, starting with a letter or _, e.g. CLUSTER_NAME=demo",
    )
}

/// The literal value of the text after `=`: quotes removed, escapes resolved, a trailing
/// ` # comment` dropped; anything a shell would expand or run is a problem.
fn lex_value(text: &str) -> Result<String, LineProblem> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => return end_of_value(&chars[i..], out),
            '\'' => {
                let Some(len) = chars[i + 1..].iter().position(|&c| c == '\'') else {
                    return Err(LineProblem::new(
                        "unbalanced single quote",
                        "close the quote on the same line, e.g. KEY='value'",
                    ));
                };
                let quoted = &chars[i + 1..i + 1 + len];
                if let Some(c) = quoted.iter().find(|c| c.is_control() && **c != '\t') {
                    return Err(LineProblem::new(
                        format!("control character {c:?} in the value"),
                        "remove it",
                    ));
                }
                out.extend(quoted);
                i += len + 2;
            }
            '"' => {
                i = double_quoted(&chars, i + 1, &mut out)?;
            }
            '$' => return Err(dollar_problem(&chars[i..])),
            '`' => return Err(backtick_problem()),
            ';' => {
                return Err(LineProblem::new(
                    "`;` would end the assignment and run what follows as a command",
                    "write one KEY=VALUE per line; if ; belongs to the value, put it in single quotes",
                ))
            }
            '|' => {
                return Err(LineProblem::new(
                    "`|` would pipe into a command",
                    "write the value itself; if | belongs to the value, put it in single quotes",
                ))
            }
            '&' => {
                let op = if chars.get(i + 1) == Some(&'&') { "&&" } else { "&" };
                return Err(LineProblem::new(
                    format!("`{op}` would run a command"),
                    "write the value itself; if & belongs to the value, put it in single quotes",
                ));
            }
            '<' | '>' => {
                return Err(LineProblem::new(
                    format!("`{c}` is a redirection"),
                    format!("write the value itself; if {c} belongs to the value, put it in single quotes"),
                ))
            }
            '(' | ')' => {
                return Err(LineProblem::new(
                    format!("`{c}` starts a subshell or an array in a shell"),
                    "write a single value; lists are comma-separated, e.g. \"fd00:42::/56,10.42.0.0/16\"",
                ))
            }
            '\\' => {
                return Err(LineProblem::new(
                    "backslash outside quotes",
                    "put the value in single quotes, e.g. KEY='a\\b'",
                ))
            }
            '~' if i == 0 => {
                return Err(LineProblem::new(
                    "a leading `~` would be expanded to a home directory",
                    "write the full path, or quote it: KEY='~/x'",
                ))
            }
            c if c.is_control() => {
                return Err(LineProblem::new(
                    format!("control character {:?} in the value", c),
                    "remove it",
                ))
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The value ended at whitespace: only a comment may follow.
fn end_of_value(tail: &[char], value: String) -> Result<String, LineProblem> {
    let tail: String = tail.iter().collect();
    let tail = tail.trim_start_matches([' ', '\t']);
    if tail.is_empty() || tail.starts_with('#') {
        return Ok(value);
    }
    let word = tail.split([' ', '\t']).next().unwrap_or(tail);
    if let Some((next_key, _)) = word.split_once('=') {
        if is_key(next_key) {
            return Err(LineProblem::new(
                format!("a second assignment ({next_key}=...) on the same line"),
                "put each KEY=VALUE on its own line",
            ));
        }
    }
    Err(LineProblem::new(
        format!("space inside an unquoted value, before `{}`", shorten(tail)),
        "quote a value that contains spaces, e.g. KEY=\"a b\"; a shell would run the second word as a command",
    ))
}

/// Read a double-quoted string starting after its opening quote; return the index after
/// the closing quote. Only `\" \\ \$ \`` are escapes; `$` and backticks must be escaped.
fn double_quoted(chars: &[char], mut i: usize, out: &mut String) -> Result<usize, LineProblem> {
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok(i + 1),
            '\\' => match chars.get(i + 1) {
                Some(&n @ ('"' | '\\' | '$' | '`')) => {
                    out.push(n);
                    i += 2;
                }
                Some(&n) => {
                    // POSIX keeps the backslash when it does not escape anything.
                    out.push('\\');
                    out.push(n);
                    i += 2;
                }
                None => break,
            },
            '$' => return Err(dollar_problem(&chars[i..])),
            '`' => return Err(backtick_problem()),
            c if c.is_control() && c != '\t' => {
                return Err(LineProblem::new(
                    format!("control character {:?} in the value", c),
                    "remove it",
                ))
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(LineProblem::new(
        "unbalanced double quote",
        "close the quote on the same line, e.g. KEY=\"value\"",
    ))
}

/// Explain a `$` (at `rest[0]`) that a shell would expand.
fn dollar_problem(rest: &[char]) -> LineProblem {
    let help = "write the value itself; for a literal $ use single quotes ('a$b') or \\$ inside double quotes";
    let message = match rest.get(1) {
        Some('(') => {
            "command substitution `$(...)` is not allowed: the config is data and is never run"
                .to_string()
        }
        Some('{') => {
            "variable expansion `${...}` is not allowed: nothing in the config is expanded"
                .to_string()
        }
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let name: String = rest[1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .collect();
            format!(
                "variable expansion `${name}` is not allowed: nothing in the config is expanded"
            )
        }
        Some(&c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
            format!("special parameter `${c}` is not allowed: nothing in the config is expanded")
        }
        _ => "a bare `$` is not allowed: a shell may expand it".to_string(),
    };
    LineProblem::new(message, help)
}

fn backtick_problem() -> LineProblem {
    LineProblem::new(
        "command substitution with backticks is not allowed: the config is data and is never run",
        "write the value itself; for a literal ` use single quotes",
    )
}

/// At most 40 characters of `s`, for quoting user text in messages.
fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        let mut short: String = s.chars().take(37).collect();
        short.push_str("...");
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(line: &str) -> Result<Option<(String, String)>, LineProblem> {
        lex_line(line)
    }

    fn ok(line: &str) -> String {
        match value(line) {
            Ok(Some((_, v))) => v,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn problem(line: &str) -> LineProblem {
        match value(line) {
            Err(p) => p,
            other => panic!("{line:?} should be rejected, gave {other:?}"),
        }
    }

    #[test]
    fn plain_quoted_and_exported_values_are_read_literally() {
        assert_eq!(ok("REGION=sjc"), "sjc");
        assert_eq!(ok("export REGION=sjc"), "sjc");
        assert_eq!(ok("  REGION='s j$c;`x`'"), "s j$c;`x`");
        assert_eq!(ok(r#"K="a \"b\" \\ \$HOME \`x\`""#), r#"a "b" \ $HOME `x`"#);
        assert_eq!(ok(r#"K="a\nb""#), r"a\nb");
        assert_eq!(ok("K=ab'cd'\"ef\""), "abcdef");
        assert_eq!(ok("K="), "");
        assert_eq!(ok("K=a#b"), "a#b");
    }

    #[test]
    fn trailing_comments_are_dropped_after_unquoted_and_quoted_values() {
        assert_eq!(ok("REGION=sjc # the lab"), "sjc");
        assert_eq!(ok("REGION=\"sjc\"   # the lab $(x)"), "sjc");
        assert_eq!(ok("REGION='sjc'\t# c"), "sjc");
        assert_eq!(ok("REGION=sjc   "), "sjc");
    }

    #[test]
    fn blank_lines_and_comments_give_no_entry() {
        assert_eq!(value(""), Ok(None));
        assert_eq!(value("   "), Ok(None));
        assert_eq!(value("# CLUSTER_NAME=$(rm -rf /)"), Ok(None));
        assert_eq!(value("   # indented"), Ok(None));
    }

    #[test]
    fn command_substitution_is_rejected() {
        assert!(problem("K=$(id)").message.contains("$(...)"));
        assert!(problem("K=\"$(id)\"").message.contains("$(...)"));
        assert!(problem("K=`id`").message.contains("backticks"));
        assert!(problem("K=\"a`id`\"").message.contains("backticks"));
        assert!(problem("K=$((1+2))").message.contains("$(...)"));
    }

    #[test]
    fn variable_expansion_is_rejected_unquoted_and_in_double_quotes() {
        let p = problem("K=${HOME}");
        assert!(p.message.contains("${...}"), "{p:?}");
        assert_eq!(p.key.as_deref(), Some("K"));
        assert!(problem("K=$HOME/x").message.contains("$HOME"));
        assert!(problem("K=\"$HOME\"").message.contains("$HOME"));
        assert!(problem("K=\"a$1\"").message.contains("$1"));
        assert!(problem("K=a$").message.contains("bare"));
        assert!(problem("K=$'x'").message.contains("bare"));
    }

    #[test]
    fn control_operators_and_redirections_are_rejected() {
        assert!(problem("K=a;b").message.contains(';'));
        assert!(problem("K=a; rm -rf /").message.contains(';'));
        assert!(problem("K=a|b").message.contains('|'));
        assert!(problem("K=a&").message.contains("`&`"));
        assert!(problem("K=a&&b").message.contains("&&"));
        assert!(problem("K=a<b").message.contains('<'));
        assert!(problem("K=a>b").message.contains('>'));
        assert!(problem("K=(a b)").message.contains("subshell"));
        assert!(problem("K=a\\b").message.contains("backslash"));
        assert!(problem("K=~/x").message.contains('~'));
    }

    #[test]
    fn unbalanced_quotes_are_rejected() {
        assert!(problem("K='abc").message.contains("single quote"));
        assert!(problem("K=\"abc").message.contains("double quote"));
        assert!(problem("K=\"abc\\\"").message.contains("double quote"));
    }

    #[test]
    fn spaces_and_second_assignments_are_rejected() {
        let p = problem("K=a b");
        assert!(p.message.contains("space"), "{p:?}");
        assert!(p.help.contains("KEY=\"a b\""));
        let p = problem("K= value");
        assert!(p.message.contains("space"), "{p:?}");
        let p = problem("A=1 B=2");
        assert!(p.message.contains("second assignment"), "{p:?}");
        assert!(p.help.contains("own line"));
    }

    #[test]
    fn bad_keys_are_rejected_with_the_right_spelling() {
        let p = problem("cluster_name=x");
        assert!(p.help.contains("CLUSTER_NAME="), "{p:?}");
        let p = problem("REGION =sjc");
        assert!(p.help.contains("no spaces"), "{p:?}");
        assert!(problem("1ABC=x").message.contains("not a valid key"));
        assert!(problem("echo hello").message.contains("not a KEY=VALUE"));
        assert!(problem("export").message.contains("not a KEY=VALUE"));
        assert!(problem("export FOO").message.contains("not a KEY=VALUE"));
        assert!(problem("$(touch /tmp/x)=1")
            .message
            .contains("not a valid key"));
    }

    #[test]
    fn lex_reports_file_line_and_key_and_skips_broken_lines() {
        let raw = lex("A=1\n\nB=$(id)\nC=3\n", Path::new("clusters/x/config"));
        let keys: Vec<_> = raw
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.line))
            .collect();
        assert_eq!(keys, vec![("A", 1), ("C", 4)]);
        let d: Vec<_> = raw.diagnostics.iter().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, Some(3));
        assert_eq!(d[0].key.as_deref(), Some("B"));
        let raw = lex("\u{feff}A=1\r\nB='2'\r\n", Path::new("c"));
        assert!(raw.diagnostics.is_empty(), "{}", raw.diagnostics);
        assert_eq!(raw.entries[1].value, "2");
        assert!(
            d[0].to_string().starts_with("clusters/x/config:3: B: "),
            "{}",
            d[0]
        );
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let raw = lex("REGION=sjc\nA=1\nREGION=iad\n", Path::new("c"));
        let d: Vec<_> = raw.diagnostics.iter().collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, Some(3));
        assert_eq!(d[0].key.as_deref(), Some("REGION"));
        assert!(d[0].message.contains("line 1"), "{}", d[0]);
    }

    #[test]
    fn command_substitution_in_a_value_runs_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("pwned");
        let m = marker.display();
        for text in [
            format!("CLUSTER_NAME=$(touch {m})"),
            format!("CLUSTER_NAME=\"$(touch {m})\""),
            format!("CLUSTER_NAME=`touch {m}`"),
            format!("CLUSTER_NAME=x; touch {m}"),
            format!("CLUSTER_NAME=x && touch {m}"),
            format!("CLUSTER_NAME=x | touch {m}"),
            format!("CLUSTER_NAME=x touch {m}"),
        ] {
            let err = parse_shell(&text, Path::new("c")).expect_err("must be rejected");
            assert!(
                err.iter()
                    .any(|d| d.line == Some(1) && d.key.as_deref() == Some("CLUSTER_NAME")),
                "{text}: {err}"
            );
            assert!(!marker.exists(), "{text} created {m}");
        }
    }

    /// Independent model of where a shell would act on `$`, backtick or `;`: outside quotes,
    /// or (`$`, backtick) unescaped inside double quotes. Returns (dangerous-in-active-position,
    /// dangerous-in-inert-position) counts for one line, stopping at a comment.
    fn shell_positions(line: &str) -> (usize, usize) {
        #[derive(PartialEq)]
        enum S {
            Plain,
            Single,
            Double,
        }
        let dangerous = |c: char| c == '$' || c == '`' || c == ';';
        let (mut active, mut inert) = (0, 0);
        let mut state = S::Plain;
        let mut prev_blank = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match state {
                S::Plain => match c {
                    '#' if prev_blank => break,
                    '\'' => state = S::Single,
                    '"' => state = S::Double,
                    '\\' => {
                        if let Some(n) = chars.next() {
                            inert += usize::from(dangerous(n));
                        }
                    }
                    c if dangerous(c) => active += 1,
                    _ => {}
                },
                S::Single => {
                    if c == '\'' {
                        state = S::Plain;
                    } else if dangerous(c) {
                        inert += 1;
                    }
                }
                S::Double => match c {
                    '"' => state = S::Plain,
                    '\\' => {
                        if let Some(n) = chars.next() {
                            inert += usize::from(dangerous(n));
                        }
                    }
                    '$' | '`' => active += 1,
                    ';' => inert += 1,
                    _ => {}
                },
            }
            prev_blank = state == S::Plain && (c == ' ' || c == '\t');
        }
        (active, inert)
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn shellish() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    1 => Just('$'),
                    1 => Just('`'),
                    1 => Just(';'),
                    1 => Just('\''),
                    1 => Just('"'),
                    1 => Just('\\'),
                    1 => Just(' '),
                    1 => Just('#'),
                    1 => Just('('),
                    1 => Just('{'),
                    1 => Just('|'),
                    1 => Just('&'),
                    1 => Just('='),
                    // Plain characters weigh more so that a fair share of lines is accepted.
                    8 => Just('a'),
                    4 => Just('Z'),
                    4 => Just('1'),
                    1 => Just('-'),
                    1 => Just('\n'),
                ],
                0..24,
            )
            .prop_map(|v| v.into_iter().collect())
        }

        /// A value built from quoted and unquoted pieces, with the literal it stands for.
        fn quoted_value() -> impl Strategy<Value = (String, String)> {
            let piece = prop_oneof![
                "[A-Za-z0-9._:/,+@%=-]{1,6}".prop_map(|p| (p.clone(), p)),
                "[^'\\p{Cc}]{0,6}".prop_map(|p| (format!("'{p}'"), p)),
                "[^\\p{Cc}]{0,6}".prop_map(|p| {
                    let mut quoted = String::from("\"");
                    for c in p.chars() {
                        if matches!(c, '"' | '\\' | '$' | '`') {
                            quoted.push('\\');
                        }
                        quoted.push(c);
                    }
                    quoted.push('"');
                    (quoted, p)
                }),
            ];
            proptest::collection::vec(piece, 1..5).prop_map(|pieces| {
                pieces.into_iter().fold(
                    (String::new(), String::new()),
                    |(mut w, mut l), (pw, pl)| {
                        w.push_str(&pw);
                        l.push_str(&pl);
                        (w, l)
                    },
                )
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            #[test]
            fn quoted_values_are_read_back_literally((written, literal) in quoted_value(), comment in any::<bool>()) {
                let line = if comment { format!("export K={written}  # note $(x)") } else { format!("K={written}") };
                let raw = lex(&line, Path::new("c"));
                prop_assert!(raw.diagnostics.is_empty(), "{:?}: {}", line, raw.diagnostics);
                prop_assert_eq!(raw.entries.len(), 1);
                prop_assert_eq!(&raw.entries[0].value, &literal);
            }

            #[test]
            fn parser_never_panics_on_arbitrary_text(text in "\\PC*") {
                let _ = parse_shell(&text, Path::new("c"));
                let _ = lex(&text, Path::new("c"));
            }

            #[test]
            fn accepted_dangerous_characters_come_from_quotes_or_escapes(v in prop_oneof![
                shellish(),
                quoted_value().prop_map(|(written, _)| written),
                (quoted_value(), shellish()).prop_map(|((written, _), tail)| format!("{written}{tail}")),
            ]) {
                let line = format!("K={v}");
                let raw = lex(&line, Path::new("c"));
                if raw.diagnostics.is_empty() {
                    for (entry, text) in raw.entries.iter().zip(line.lines().filter(|l| {
                        let t = l.trim_start();
                        !t.is_empty() && !t.starts_with('#')
                    })) {
                        let (active, inert) = shell_positions(text);
                        prop_assert_eq!(active, 0, "accepted {:?} with an active $ ` or ;", text);
                        let in_value = entry.value.chars().filter(|c| matches!(c, '$' | '`' | ';')).count();
                        prop_assert!(in_value <= inert, "{:?} -> {:?}", text, entry.value);
                    }
                }
            }
        }
    }
}
