//! TLS material and tokens: the cluster CA, serving and admin client certificates (rcgen), the
//! CA hash and the `K10<hash>::<user>:<password>` token format (reference/k3s.md §4).
//!
//! Owns key generation and the token text. Must not log or print a token or key; must not do
//! network I/O.

use std::fmt::Write as _;
use std::net::IpAddr;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};

/// Errors from certificate generation and token parsing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate generation for {what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid SAN {0}")]
    San(String),
    #[error("invalid token CA hash length")]
    HashLength,
    #[error("invalid token format")]
    Format,
    #[error("bootstrap tokens are not supported by the k3s stand-in")]
    BootstrapToken,
}

/// The CA's subject CN; fixed so a CA loaded from disk can be rebuilt as an issuer.
const CA_CN: &str = "k3s-standin-server-ca";

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Rcgen { what, source }
}

/// The etcd server CA's subject CN (k3s: `etcd-server-ca`, pkg/daemons/control/deps).
pub const ETCD_SERVER_CA_CN: &str = "k3s-standin-etcd-server-ca";
/// The etcd peer CA's subject CN (k3s: `etcd-peer-ca`).
pub const ETCD_PEER_CA_CN: &str = "k3s-standin-etcd-peer-ca";

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A new self-signed cluster CA (`server-ca.crt` / `server-ca.key`).
pub fn new_ca() -> Result<Pair, Error> {
    new_named_ca(CA_CN)
}

/// A new self-signed CA with subject CN `cn` (the etcd server and peer CAs).
pub fn new_named_ca(cn: &str) -> Result<Pair, Error> {
    let key = KeyPair::generate().map_err(rc("server-ca"))?;
    let cert = ca_params(cn).self_signed(&key).map_err(rc("server-ca"))?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Sign a leaf with the CA whose key is `ca.key_pem`. The issuer is rebuilt from the fixed CA
/// parameters and the stored key: only its subject and key enter the leaf.
fn sign(ca: &Pair, params: CertificateParams, what: &'static str) -> Result<Pair, Error> {
    sign_by(ca, CA_CN, params, what)
}

fn sign_by(
    ca: &Pair,
    ca_cn: &str,
    mut params: CertificateParams,
    what: &'static str,
) -> Result<Pair, Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rc(what))?;
    let issuer = ca_params(ca_cn).self_signed(&ca_key).map_err(rc(what))?;
    let key = KeyPair::generate().map_err(rc(what))?;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(rc(what))?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The SANs k3s always puts on the serving certificate (reference/k3s.md §4 "tls-san / SANs")
/// plus the configured `tls-san` entries, deduplicated in order.
pub fn serving_sans(
    tls_sans: &[String],
    node_name: &str,
    node_ips: &[IpAddr],
    extra_ips: &[IpAddr],
    cluster_domain: &str,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for s in tls_sans {
        push(s.clone());
    }
    push("127.0.0.1".into());
    push("::1".into());
    push("localhost".into());
    push(node_name.into());
    for ip in node_ips.iter().chain(extra_ips) {
        push(ip.to_string());
    }
    push("kubernetes".into());
    push("kubernetes.default".into());
    push("kubernetes.default.svc".into());
    push(format!("kubernetes.default.svc.{cluster_domain}"));
    out
}

/// A serving certificate for `sans` (IP literals become IP SANs, the rest DNS SANs).
pub fn serving(ca: &Pair, sans: &[String]) -> Result<Pair, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "k3s-standin");
    p.distinguished_name
        .push(DnType::OrganizationName, "k3s-standin");
    for s in sans {
        let san = match s.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(s.clone().try_into().map_err(|_| Error::San(s.clone()))?),
        };
        p.subject_alt_names.push(san);
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(ca, p, "serving certificate")
}

/// The admin client certificate (`system:admin` in `system:masters`, as k3s's client-admin).
pub fn admin_client(ca: &Pair) -> Result<Pair, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "system:admin");
    p.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(ca, p, "admin client certificate")
}

/// An etcd leaf certificate signed by the etcd CA `ca` (subject CN `ca_cn`): k3s's
/// `server-client` and `peer-server-client` (server and client auth, IP and DNS SANs) or its
/// `client` (client auth only, `sans` empty). k3s-io/k3s pkg/daemons/control/deps/deps.go.
pub fn etcd_leaf(ca: &Pair, ca_cn: &str, cn: &str, sans: &[String]) -> Result<Pair, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    for s in sans {
        let san = match s.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(s.clone().try_into().map_err(|_| Error::San(s.clone()))?),
        };
        p.subject_alt_names.push(san);
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = if sans.is_empty() {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    sign_by(ca, ca_cn, p, "etcd certificate")
}

/// Lower-case hex sha256 of the CA file's bytes (one certificate: the raw PEM bytes,
/// reference/k3s.md §4 `hashCA`).
pub fn ca_hash(pem: &[u8]) -> String {
    let digest = Sha256::digest(pem);
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// 16 random bytes as 32 hex characters, as k3s's `util.Random(16)`.
pub fn random_password() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().fold(String::with_capacity(32), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// `K10<ca-hash>::<user>:<password>` (reference/k3s.md §4 `FormatToken`).
pub fn format_token(ca_hash: &str, user: &str, password: &str) -> String {
    format!("K10{ca_hash}::{user}:{password}")
}

/// A parsed token. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The CA hash, empty for a short token (the CA is then trusted blindly).
    pub ca_hash: String,
    /// Empty for a short token: the caller's default user (`server` or `node`) applies.
    pub username: String,
    /// The password part.
    pub password: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

fn is_bootstrap_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    s.split_once('.')
        .is_some_and(|(a, b)| ok(a, 6) && ok(b, 16))
}

/// Parse a token in the secure (`K10...`) or short form (reference/k3s.md §4 "Token format").
pub fn parse_token(s: &str) -> Result<Token, Error> {
    let s = s.trim();
    let Some(rest) = s.strip_prefix("K10") else {
        if is_bootstrap_token(s) {
            return Err(Error::BootstrapToken);
        }
        if s.is_empty() {
            return Err(Error::Format);
        }
        return Ok(Token {
            ca_hash: String::new(),
            username: String::new(),
            password: s.to_owned(),
        });
    };
    let (hash, creds) = rest.split_once("::").ok_or(Error::Format)?;
    if !hash.is_empty() && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(Error::HashLength);
    }
    if is_bootstrap_token(creds) {
        return Err(Error::BootstrapToken);
    }
    let (user, pw) = creds.split_once(':').unwrap_or(("", creds));
    if pw.is_empty() {
        return Err(Error::Format);
    }
    Ok(Token {
        ca_hash: hash.to_ascii_lowercase(),
        username: user.to_owned(),
        password: pw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_short_form_is_a_password() {
        let h = ca_hash(b"pem");
        let t = parse_token(&format_token(&h, "server", "abc")).unwrap();
        assert_eq!(
            (t.ca_hash.as_str(), t.username.as_str(), t.password.as_str()),
            (h.as_str(), "server", "abc")
        );
        let t = parse_token("server:pw").unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("", "server:pw")
        );
        assert!(matches!(
            parse_token("K10abc::server:pw"),
            Err(Error::HashLength)
        ));
        assert!(matches!(
            parse_token(&format!("K10{h}::server:")),
            Err(Error::Format)
        ));
        assert!(matches!(
            parse_token("abcdef.0123456789abcdef"),
            Err(Error::BootstrapToken)
        ));
        assert!(!format!("{t:?}").contains("server:pw"));
    }

    #[test]
    fn random_password_is_32_hex() {
        let p = random_password();
        assert_eq!(p.len(), 32);
        assert!(p.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn serving_sans_include_the_fixed_names() {
        let s = serving_sans(
            &["fks.internal".into()],
            "n1",
            &["fdaa::2".parse().unwrap()],
            &[],
            "cluster.local",
        );
        for want in [
            "fks.internal",
            "127.0.0.1",
            "::1",
            "localhost",
            "n1",
            "fdaa::2",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(s.contains(&want.to_owned()), "{want} in {s:?}");
        }
    }

    #[test]
    fn leaf_certificates_are_signed_by_a_reloaded_ca() {
        let ca = new_ca().unwrap();
        let leaf = serving(&ca, &["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let admin = admin_client(&ca).unwrap();
        assert!(admin.key_pem.contains("PRIVATE KEY"));
    }
}
