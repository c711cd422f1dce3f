//! Error helpers shared by the operator, `node init` and the lab: one way to put an error and
//! its causes on one line.
//!
//! Pure: formatting only.

/// An error and its causes on one line, `: `-separated: `a: b: c`. For logs and for the
/// places that report an error without returning it (the binary prints returned errors once).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading config")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_every_cause_in_order() {
        let e = Outer(std::io::Error::other("disk gone"));
        assert_eq!(chain(&e), "reading config: disk gone");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}
