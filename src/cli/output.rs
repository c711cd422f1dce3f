//! Result formatting shared by the operator commands: aligned text tables and JSON documents,
//! written to stdout.
//!
//! Must not: decide what a command shows or print progress (that goes to stderr, by the
//! command itself).

use std::io::Write;

use anyhow::Context;

/// An aligned text table: a header row and data rows, columns separated by two spaces, the
/// last column not padded (no trailing blanks).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `value` as pretty JSON with a final newline.
pub fn json<T: serde::Serialize>(value: &T) -> Result<String, super::Error> {
    let mut text = serde_json::to_string_pretty(value)
        .context("serializing the output as JSON")
        .map_err(super::Error::Failed)?;
    text.push('\n');
    Ok(text)
}

/// Writes `text` to stdout (a closed pipe is a failure, exit 1).
pub fn stdout(text: &str) -> Result<(), super::Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
        .map_err(super::Error::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_leaves_no_trailing_blanks() {
        let rows = vec![
            vec!["ctrl-0".to_string(), "a".to_string(), "x".to_string()],
            vec!["c".to_string(), "longer".to_string(), String::new()],
        ];
        let t = table(&["NAME", "ID", "LAST"], &rows);
        assert_eq!(
            t,
            "NAME    ID      LAST\nctrl-0  a       x\nc       longer\n"
        );
    }

    #[test]
    fn table_with_no_rows_is_the_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }
}
