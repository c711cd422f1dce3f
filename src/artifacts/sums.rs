//! The release's `sha256sum-<arch>.txt`: plain `sha256sum` output, `<64 hex>  <name>` per
//! line, directory already stripped (reference/k3s.md §5). Pure: no I/O here.

use std::collections::BTreeMap;

use super::{Error, Result};

/// Asset name → lower-case hex sha256.
pub type Sums = BTreeMap<String, String>;

/// Parses checksum text. Blank lines are skipped; `*name` (sha256sum's binary mode) is read as
/// `name`; any other malformed line is an error naming its number, since a checksum file that
/// does not parse cannot be trusted to verify anything.
pub fn parse_sha256sums(text: &str) -> Result<Sums> {
    let mut sums = Sums::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason| Error::SumsLine {
            line: i + 1,
            reason,
        };
        if line.trim().is_empty() {
            continue;
        }
        let Some((hash, rest)) = line.split_once(' ') else {
            return Err(bad("expected `<sha256>  <file name>`"));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the hash is not 64 hex digits"));
        }
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .unwrap_or(rest)
            .trim_end_matches('\r');
        if name.is_empty() {
            return Err(bad("no file name after the hash"));
        }
        if sums
            .insert(name.to_string(), hash.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad("a second line for the same file"));
        }
    }
    Ok(sums)
}

/// The expected hash of `asset`, matched by exact name as install.sh's
/// `grep " k3s${SUFFIX}$"` does: `k3s` never matches `k3s-arm64` or `k3s-airgap-images-*`.
pub fn expected_hash<'a>(sums: &'a Sums, asset: &str) -> Option<&'a str> {
    sums.get(asset).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn parses_a_release_sums_file_and_matches_exact_names() {
        let text = format!(
            "{A}  k3s-airgap-images-amd64.tar\n{A}  k3s-airgap-images-amd64.tar.gz\n\
             {A}  k3s-airgap-images-amd64.tar.zst\n{}  k3s\n",
            B.to_uppercase()
        );
        let sums = parse_sha256sums(&text).expect("parse");
        assert_eq!(sums.len(), 4);
        assert_eq!(expected_hash(&sums, "k3s"), Some(B));
        assert_eq!(expected_hash(&sums, "k3s-arm64"), None);
        assert_eq!(expected_hash(&sums, "k3s-airgap-images-amd64"), None);
    }

    #[test]
    fn binary_mode_and_crlf_lines_are_read() {
        let sums = parse_sha256sums(&format!("{A} *k3s-arm64\r\n\n")).expect("parse");
        assert_eq!(expected_hash(&sums, "k3s-arm64"), Some(A));
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        for (text, line) in [
            (format!("{A}  k3s\nnot a sum line\n"), 2),
            ("abc  k3s\n".to_string(), 1),
            (format!("{A}  \n"), 1),
            (format!("{A}  k3s\n{B}  k3s\n"), 2),
            (format!("{A}k3s\n"), 1),
        ] {
            match parse_sha256sums(&text) {
                Err(Error::SumsLine { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
