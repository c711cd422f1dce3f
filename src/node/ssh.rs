//! The node's SSH server as a task of `node init` (it replaced an OpenSSH sshd child: the
//! node image carries no sshd). Fly's init already serves SSH on `[<6PN>]:22`
//! (reference/fly-runtime.md §1.6), so this one listens on the cluster's `SSH_PORT`.
//!
//! This module only finds the delivered files below the root and keeps the server listening
//! (it binds again after a failure); the protocol is `crate::ssh::server`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ssh::server::{self, ChildExits, Server, Settings};

/// How long to wait before binding again after the listener failed.
const RETRY: Duration = Duration::from_secs(5);

/// The delivered files the server reads, below a root (`/` on a machine).
#[derive(Debug, Clone)]
pub struct Paths {
    /// The pinned host key, delivered from an app secret as a machine file.
    pub host_key: PathBuf,
    /// The operator's public key, delivered the same way.
    pub authorized_keys: PathBuf,
    /// The login shell and home of the SSH user come from here.
    pub passwd: PathBuf,
}

impl Paths {
    /// The standard paths below `root`.
    pub fn under(root: &Path) -> Paths {
        Paths {
            host_key: super::under(root, crate::ssh::HOST_KEY_PATH),
            authorized_keys: super::under(root, crate::ssh::AUTHORIZED_KEYS_PATH),
            passwd: super::under(root, "/etc/passwd"),
        }
    }
}

/// The server for the delivered files, or `None` when no host key was delivered (then
/// nothing listens: a server with another key would fail every pinned check anyway).
pub fn prepare(paths: &Paths, exits: ChildExits) -> Result<Option<Server>, server::Error> {
    if !paths.host_key.is_file() {
        return Ok(None);
    }
    Server::new(Settings {
        host_key: paths.host_key.clone(),
        authorized_keys: paths.authorized_keys.clone(),
        passwd: paths.passwd.clone(),
        exits,
    })
    .map(Some)
}

/// Serve on `[::]:port` for as long as the process runs; a failed bind or listener is
/// logged and retried, never fatal (k3s keeps running without SSH).
pub async fn serve_forever(server: Server, port: u16) {
    {
        loop {
            match server::bind(port).await {
                Ok(listener) => {
                    info!("ssh: listening on [::]:{port}");
                    let e = server.serve(listener).await;
                    warn!(
                        "ssh: {}; listening again in {}",
                        super::chain(&e),
                        super::human_duration(RETRY)
                    );
                }
                Err(e) => warn!(
                    "ssh: {}; trying again in {}",
                    super::chain(&e),
                    super::human_duration(RETRY)
                ),
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_served_without_a_delivered_host_key() {
        let root = tempfile::tempdir().expect("tempdir");
        let paths = Paths::under(root.path());
        assert!(prepare(&paths, ChildExits::own())
            .expect("prepare")
            .is_none());
    }

    #[test]
    fn a_delivered_key_that_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let paths = Paths::under(root.path());
        let keys = crate::ssh::ClusterKeys::open(root.path(), "demo").expect("keys");
        let file = keys
            .node_files("ctrl-0")
            .expect("files")
            .into_iter()
            .find(|f| f.guest_path == crate::ssh::HOST_KEY_PATH)
            .expect("host key file");
        std::fs::create_dir_all(paths.host_key.parent().expect("parent")).expect("mkdir");
        std::fs::write(&paths.host_key, &file.contents).expect("write");
        std::fs::set_permissions(&paths.host_key, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let e = prepare(&paths, ChildExits::own()).err().expect("refused");
        assert!(
            super::super::chain(&e).contains("other users can read it"),
            "{}",
            super::super::chain(&e)
        );
        std::fs::set_permissions(&paths.host_key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let server = prepare(&paths, ChildExits::own())
            .expect("ok")
            .expect("server");
        assert_eq!(
            server.host_public_key().expect("key"),
            keys.host_key("ctrl-0").expect("host").public_key()
        );
    }
}
