//! POSIX shell quoting of an argv for the remote side. Pure: no I/O here.
//!
//! The SSH `exec` request carries one string, and sshd always runs it as
//! `$SHELL -c '<string>'` with the remote user's login shell (sshd(8), "LOGIN PROCESS"). So an
//! argv must be turned into a shell command line whose words are exactly the argv again: every
//! argument that is not made of plainly safe characters is wrapped in single quotes, inside
//! which a POSIX shell treats every byte literally except `'` itself, written as `'\''`.

/// Bytes that need no quoting in any POSIX shell context (no globbing, expansion, separators).
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c)
}

/// One argument as a single shell word that the remote shell reads back unchanged.
///
/// `'` becomes `'\''` (close quote, escaped quote, reopen). The empty string becomes `''`.
pub fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(is_plain) {
        return arg.to_owned();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The whole argv as one command line for the remote shell; `Err` says why it cannot be sent.
///
/// Refused: an empty argv (that would start a login shell instead of a command) and NUL bytes
/// (a C string, which is what the remote `execve` gets, cannot hold them).
pub fn quote_command<S: AsRef<str>>(argv: &[S]) -> Result<String, &'static str> {
    if argv.is_empty() {
        return Err("no command given");
    }
    if argv.iter().any(|a| a.as_ref().contains('\0')) {
        return Err("an argument contains a NUL byte");
    }
    Ok(argv
        .iter()
        .map(|a| quote_arg(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_unquoted() {
        assert_eq!(quote_arg("kubectl"), "kubectl");
        assert_eq!(
            quote_arg("/etc/rancher/k3s/k3s.yaml"),
            "/etc/rancher/k3s/k3s.yaml"
        );
        assert_eq!(quote_arg("--node-ip=fdaa::3"), "--node-ip=fdaa::3");
    }

    #[test]
    fn specials_are_single_quoted() {
        assert_eq!(quote_arg("a b"), "'a b'");
        assert_eq!(quote_arg("$(id)"), "'$(id)'");
        assert_eq!(quote_arg("x;y"), "'x;y'");
        assert_eq!(quote_arg("*"), "'*'");
        assert_eq!(quote_arg("~"), "'~'");
        assert_eq!(quote_arg(""), "''");
        assert_eq!(quote_arg("a\nb"), "'a\nb'");
    }

    #[test]
    fn single_quote_is_closed_escaped_reopened() {
        assert_eq!(quote_arg("it's"), "'it'\\''s'");
        assert_eq!(quote_arg("'"), "''\\'''");
    }

    #[test]
    fn command_joins_quoted_words() {
        assert_eq!(
            quote_command(&["echo", "a b", "$HOME"]).as_deref(),
            Ok("echo 'a b' '$HOME'")
        );
    }

    #[test]
    fn command_refuses_empty_argv_and_nul() {
        assert!(quote_command::<&str>(&[]).is_err());
        assert!(quote_command(&["echo", "a\0b"]).is_err());
    }

    /// The real check: a local POSIX shell splits the quoted line back into the same argv.
    #[test]
    fn sh_reads_back_the_same_argv() {
        let argv = [
            "printf",
            "%s\\n",
            "a b",
            "it's",
            "$(echo pwned)",
            "`id`",
            "x; echo injected",
            "\"double\"",
            "",
            "back\\slash",
            "*",
            "new\nline",
            "é ü",
        ];
        let line = quote_command(&argv).expect("valid argv");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("run /bin/sh");
        assert!(out.status.success());
        let expected: String = argv[2..].iter().map(|a| format!("{a}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}
