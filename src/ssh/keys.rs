//! A cluster's SSH key material on the operator's machine: one ed25519 user key pair for the
//! cluster and one ed25519 host key pair per node, under
//! `<config dir>/clusters/<cluster>/`, plus the machine `files` that deliver them to a node.
//! Must not overwrite a key that exists: losing a host key would lock the operator out of a
//! running node, losing the user key out of every node.
//!
//! Layout (directories 0700, files 0600; private keys in OpenSSH format, public keys as
//! `authorized_keys` lines, `known_hosts` keyed by node name for `ssh -o HostKeyAlias=<node>`):
//! ```text
//! clusters/<cluster>/id_ed25519            cluster user key
//! clusters/<cluster>/id_ed25519.pub
//! clusters/<cluster>/hosts/<node>/ssh_host_ed25519_key
//! clusters/<cluster>/hosts/<node>/ssh_host_ed25519_key.pub
//! clusters/<cluster>/known_hosts           derived from hosts/*/ (rewritten when it differs)
//! ```

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::TryRngCore as _;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{HashAlg, LineEnding};
use russh::keys::{Algorithm, PrivateKey, PublicKey};

use super::Error;
use crate::fly::types::MachineFile;

pub use crate::contract::path::{
    AUTHORIZED_KEYS as AUTHORIZED_KEYS_PATH, SSH_HOST_KEY as HOST_KEY_PATH,
    SSH_HOST_PUBLIC_KEY as HOST_PUBLIC_KEY_PATH,
};

const USER_KEY: &str = "id_ed25519";
const HOST_KEY: &str = "ssh_host_ed25519_key";

/// `$XDG_CONFIG_HOME/fks-bootstrap`, else `$HOME/.config/fks-bootstrap`: the base directory
/// for [`ClusterKeys::open`].
pub fn config_dir() -> Result<PathBuf, Error> {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // The XDG spec says relative values are invalid and must be ignored.
    let base = match nonempty("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
        Some(p) => p,
        None => nonempty("HOME").ok_or(Error::NoConfigDir)?.join(".config"),
    };
    Ok(base.join("fks-bootstrap"))
}

/// `SHA256:<base64>`, the fingerprint form `ssh-keygen -l` and OpenSSH's warnings print.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// A `known_hosts` line pinning `key` for `hosts` (names or addresses; a non-22 port is
/// written `[addr]:port`, as OpenSSH does).
pub fn known_hosts_line(hosts: &[String], key: &PublicKey) -> Result<String, Error> {
    let mut key = key.clone();
    key.set_comment("");
    let encoded = key.to_openssh().map_err(|source| Error::KeyEncode {
        what: "host public".into(),
        source,
    })?;
    Ok(format!("{} {}", hosts.join(","), encoded.trim_end()))
}

/// A file to put into a machine's guest (Fly `config.files[]`). `Debug` hides the contents:
/// one of these carries a host private key.
#[derive(Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub guest_path: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
    /// Permission bits (e.g. 0o600).
    pub mode: u32,
}

impl GuestFile {
    /// The Fly Machines API form, content inline as base64 (`raw_value`).
    pub fn to_machine_file(&self) -> MachineFile {
        MachineFile {
            guest_path: self.guest_path.clone(),
            raw_value: Some(base64::engine::general_purpose::STANDARD.encode(&self.contents)),
            mode: Some(self.mode),
            ..MachineFile::default()
        }
    }
}

impl fmt::Debug for GuestFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestFile")
            .field("guest_path", &self.guest_path)
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// The cluster's user key pair: what the operator authenticates with on every node. `Debug`
/// shows only the fingerprint.
#[derive(Clone)]
pub struct UserKey {
    key: PrivateKey,
    path: PathBuf,
}

impl UserKey {
    /// Load an existing private key file (OpenSSH format, unencrypted ed25519, mode 0600).
    pub fn load(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            key: load_private(path)?,
            path: path.to_owned(),
        })
    }

    /// The private key, for authentication.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Where the private key is stored (e.g. for `ssh -i`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `authorized_keys` line (`ssh-ed25519 AAAA... comment`) with a trailing newline.
    pub fn authorized_keys_line(&self) -> Result<String, Error> {
        public_line(self.key.public_key(), "user public")
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey")
            .field("path", &self.path)
            .field("fingerprint", &fingerprint(self.key.public_key()))
            .finish()
    }
}

/// One node's host key pair. `Debug` shows only the node and fingerprint.
#[derive(Clone)]
pub struct HostKey {
    node: String,
    key: PrivateKey,
    path: PathBuf,
}

impl HostKey {
    /// The node this key belongs to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The public key the node must present: what [`super::Client::connect`] pins.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// Where the private key is stored on the operator's machine.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The private key in OpenSSH format, as sshd reads it.
    pub fn private_openssh(&self) -> Result<Vec<u8>, Error> {
        let pem = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|source| Error::KeyEncode {
                what: format!("host private key of node {}", self.node),
                source,
            })?;
        Ok(pem.as_bytes().to_vec())
    }

    /// The public key as a `.pub` line with a trailing newline.
    pub fn public_line(&self) -> Result<String, Error> {
        public_line(self.key.public_key(), "host public")
    }
}

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKey")
            .field("node", &self.node)
            .field("fingerprint", &fingerprint(self.key.public_key()))
            .finish()
    }
}

/// The key store of one cluster. Opening it creates the user key if absent; host keys are
/// created per node on first use. Loading never regenerates, creating never overwrites.
#[derive(Debug, Clone)]
pub struct ClusterKeys {
    cluster: String,
    dir: PathBuf,
    user: UserKey,
}

/// The key files of one cluster and node, as laid out by [`ClusterKeys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    /// `<base>/clusters/<cluster>`.
    pub dir: PathBuf,
    /// The cluster user key.
    pub user_key: PathBuf,
    /// The node's host key.
    pub host_key: PathBuf,
}

impl ClusterKeys {
    /// Open (creating as needed) `<base>/clusters/<cluster>/` and its user key. `base` is
    /// usually [`config_dir()`]; tests pass a temporary directory.
    pub fn open(base: &Path, cluster: &str) -> Result<Self, Error> {
        check_name("cluster", cluster)?;
        let dir = base.join("clusters").join(cluster);
        create_dir(&dir)?;
        let path = dir.join(USER_KEY);
        let key = load_or_create(&path, &format!("fks-bootstrap@{cluster}"))?;
        Ok(Self {
            cluster: cluster.to_owned(),
            dir,
            user: UserKey { key, path },
        })
    }

    /// Where `open(base, cluster)` keeps the cluster's user key and where `host_key(node)`
    /// keeps that node's host key, without creating or reading anything: for callers that
    /// must not mint keys (connecting to an existing node needs the pinned key it was given).
    pub fn existing_paths(base: &Path, cluster: &str, node: &str) -> Result<KeyPaths, Error> {
        check_name("cluster", cluster)?;
        check_name("node", node)?;
        let dir = base.join("clusters").join(cluster);
        Ok(KeyPaths {
            user_key: dir.join(USER_KEY),
            host_key: dir.join("hosts").join(node).join(HOST_KEY),
            dir,
        })
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `<base>/clusters/<cluster>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster user key.
    pub fn user_key(&self) -> &UserKey {
        &self.user
    }

    /// The `known_hosts` file with one line per node that has a host key, keyed by node name.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The host key of `node`, created (and added to `known_hosts`) if it has none yet.
    pub fn host_key(&self, node: &str) -> Result<HostKey, Error> {
        check_name("node", node)?;
        let node_dir = self.dir.join("hosts").join(node);
        create_dir(&node_dir)?;
        let path = node_dir.join(HOST_KEY);
        let key = load_or_create(&path, &format!("{node}.{}", self.cluster))?;
        self.sync_known_hosts()?;
        Ok(HostKey {
            node: node.to_owned(),
            key,
            path,
        })
    }

    /// Everything to deliver to `node` as machine `files`: its host key pair, the cluster's
    /// authorized_keys (the node's SSH server, `ssh::server`, uses only those).
    pub fn node_files(&self, node: &str) -> Result<Vec<GuestFile>, Error> {
        let host = self.host_key(node)?;
        Ok(vec![
            GuestFile {
                guest_path: HOST_KEY_PATH.into(),
                contents: host.private_openssh()?,
                mode: 0o600,
            },
            GuestFile {
                guest_path: HOST_PUBLIC_KEY_PATH.into(),
                contents: host.public_line()?.into_bytes(),
                mode: 0o644,
            },
            GuestFile {
                guest_path: AUTHORIZED_KEYS_PATH.into(),
                contents: self.user.authorized_keys_line()?.into_bytes(),
                mode: 0o600,
            },
        ])
    }

    /// Rewrite `known_hosts` from `hosts/*/` when its content differs.
    fn sync_known_hosts(&self) -> Result<(), Error> {
        let hosts = self.dir.join("hosts");
        let entries = fs::read_dir(&hosts).map_err(|e| io_err(&hosts, "listing", e))?;
        let mut nodes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&hosts, "listing", e))?;
            if let Some(name) = entry.file_name().to_str() {
                if check_name("node", name).is_ok() {
                    nodes.push(name.to_owned());
                }
            }
        }
        nodes.sort();
        let mut content = String::new();
        for node in nodes {
            let path = hosts.join(&node).join(HOST_KEY);
            if !path.exists() {
                continue;
            }
            let key = load_private(&path)?;
            content.push_str(&known_hosts_line(&[node], key.public_key())?);
            content.push('\n');
        }
        let path = self.known_hosts_path();
        match fs::read_to_string(&path) {
            Ok(old) if old == content => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "reading", e)),
        }
        let tmp = temp_path(&path);
        write_new(&tmp, content.as_bytes())?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, "replacing", e))
    }
}

/// Node and cluster names become directory names: keep them to a portable, traversal-free set.
fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

fn io_err(path: &Path, action: &'static str, source: std::io::Error) -> Error {
    Error::KeyFile {
        path: path.to_owned(),
        action,
        source,
    }
}

fn public_line(key: &PublicKey, what: &str) -> Result<String, Error> {
    let line = key.to_openssh().map_err(|source| Error::KeyEncode {
        what: what.into(),
        source,
    })?;
    Ok(format!("{}\n", line.trim_end()))
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, "creating directory", e))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Create `path` with mode 0600 and write `bytes`; fails if it exists.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, "creating", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(path, "writing", e))
}

/// Write `bytes` to `path` only if nothing is there: written to a temporary file first and
/// hard-linked into place, so `path` is either absent or complete, and an existing file
/// (another process won the race) is never replaced. Returns false if `path` existed.
fn publish_new(path: &Path, bytes: &[u8]) -> Result<bool, Error> {
    let tmp = temp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, "removing stale", e)),
    }
    write_new(&tmp, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    let removed = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(io_err(path, "creating", e)),
    }
    removed.map_err(|e| io_err(&tmp, "removing", e))?;
    Ok(true)
}

/// Load the private key at `path`, or generate an ed25519 key there if there is none; make
/// sure `<path>.pub` exists too (it is derived from the private key, so recreating a missing
/// one loses nothing).
fn load_or_create(path: &Path, comment: &str) -> Result<PrivateKey, Error> {
    let key = match fs::symlink_metadata(path) {
        Ok(_) => load_private(path)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let key = generate(comment)?;
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|source| Error::KeyEncode {
                    what: comment.into(),
                    source,
                })?;
            if publish_new(path, pem.as_bytes())? {
                key
            } else {
                load_private(path)?
            }
        }
        Err(e) => return Err(io_err(path, "reading", e)),
    };
    let pub_path = path.with_extension("pub");
    if !pub_path.exists() {
        publish_new(
            &pub_path,
            public_line(key.public_key(), comment)?.as_bytes(),
        )?;
    }
    Ok(key)
}

/// A fresh ed25519 key from the operating system CSPRNG.
fn generate(comment: &str) -> Result<PrivateKey, Error> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(Error::Random)?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    key.set_comment(comment);
    Ok(key)
}

/// Load an unencrypted ed25519 private key that other users cannot read (the node's SSH
/// server loads its delivered host key with this).
pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKey, Error> {
    load_private(path)
}

fn load_private(path: &Path) -> Result<PrivateKey, Error> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, "reading", e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileMode {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read(path).map_err(|e| io_err(path, "reading", e))?;
    let key = PrivateKey::from_openssh(&text).map_err(|source| Error::KeyFormat {
        path: path.to_owned(),
        source: Some(source),
    })?;
    if key.is_encrypted() || key.algorithm() != Algorithm::Ed25519 {
        return Err(Error::KeyFormat {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn open_creates_user_key_with_private_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = ClusterKeys::open(tmp.path(), "demo").expect("open");
        let dir = tmp.path().join("clusters/demo");
        assert_eq!(keys.dir(), dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("id_ed25519")), 0o600);
        assert_eq!(mode(&dir.join("id_ed25519.pub")), 0o600);
        let text = fs::read_to_string(dir.join("id_ed25519")).expect("read");
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let line = fs::read_to_string(dir.join("id_ed25519.pub")).expect("read");
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" fks-bootstrap@demo\n"), "{line}");
    }

    #[test]
    fn second_open_loads_the_same_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = ClusterKeys::open(tmp.path(), "demo").expect("open");
        let ha = a.host_key("ctrl-1").expect("host key");
        let before = fs::read(a.user_key().path()).expect("read");
        let b = ClusterKeys::open(tmp.path(), "demo").expect("reopen");
        let hb = b.host_key("ctrl-1").expect("host key");
        assert_eq!(a.user_key().public_key(), b.user_key().public_key());
        assert_eq!(ha.public_key(), hb.public_key());
        assert_eq!(before, fs::read(b.user_key().path()).expect("read"));
    }

    #[test]
    fn every_node_gets_its_own_host_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = ClusterKeys::open(tmp.path(), "demo").expect("open");
        let a = keys.host_key("ctrl-1").expect("a");
        let b = keys.host_key("ctrl-2").expect("b");
        assert_ne!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), keys.user_key().public_key());
        let known = fs::read_to_string(keys.known_hosts_path()).expect("known_hosts");
        let lines: Vec<&str> = known.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ctrl-1 ssh-ed25519 AAAA"), "{known}");
        assert!(lines[1].starts_with("ctrl-2 ssh-ed25519 AAAA"), "{known}");
    }

    #[test]
    fn readable_private_key_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = ClusterKeys::open(tmp.path(), "demo").expect("open");
        let path = keys.user_key().path().to_owned();
        let before = fs::read(&path).expect("read");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ClusterKeys::open(tmp.path(), "demo").expect_err("refused");
        assert!(
            matches!(err, Error::KeyFileMode { mode: 0o644, .. }),
            "{err}"
        );
        assert_eq!(before, fs::read(&path).expect("read"));
    }

    #[test]
    fn garbage_key_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("clusters/demo");
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("id_ed25519");
        write_new(&path, b"not a key").expect("write");
        let err = ClusterKeys::open(tmp.path(), "demo").expect_err("refused");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(fs::read(&path).expect("read"), b"not a key");
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(ClusterKeys::open(tmp.path(), "../x").is_err());
        let keys = ClusterKeys::open(tmp.path(), "demo").expect("open");
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(keys.host_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_files_carry_host_key_and_authorized_keys() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = ClusterKeys::open(tmp.path(), "demo").expect("open");
        let files = keys.node_files("ctrl-1").expect("files");
        let paths: Vec<(&str, u32)> = files
            .iter()
            .map(|f| (f.guest_path.as_str(), f.mode))
            .collect();
        assert_eq!(
            paths,
            [
                (HOST_KEY_PATH, 0o600),
                (HOST_PUBLIC_KEY_PATH, 0o644),
                (AUTHORIZED_KEYS_PATH, 0o600),
            ]
        );
        let host = PrivateKey::from_openssh(&files[0].contents).expect("host key parses");
        assert_eq!(
            host.public_key(),
            keys.host_key("ctrl-1").expect("host").public_key()
        );
        let auth = String::from_utf8(files[2].contents.clone()).expect("utf8");
        assert_eq!(auth, keys.user_key().authorized_keys_line().expect("line"));
        let wire = files[0].to_machine_file();
        assert_eq!(wire.mode, Some(384));
        assert!(!format!("{:?}", files[0]).contains("PRIVATE"));
        assert!(!format!("{wire:?}").contains("PRIVATE"));
    }

    #[test]
    fn known_hosts_line_brackets_are_the_callers_choice() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let keys = ClusterKeys::open(tmp.path(), "demo").expect("open");
        let host = keys.host_key("ctrl-1").expect("host");
        let line = known_hosts_line(&["[127.0.0.1]:2222".into()], host.public_key()).expect("line");
        assert!(
            line.starts_with("[127.0.0.1]:2222 ssh-ed25519 AAAA"),
            "{line}"
        );
        assert_eq!(line.split(' ').count(), 3, "no comment: {line}");
    }

    #[test]
    fn fingerprint_is_sha256_form() {
        let key = generate("t").expect("key");
        let fp = fingerprint(key.public_key());
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(fp.len(), "SHA256:".len() + 43, "{fp}");
    }
}
