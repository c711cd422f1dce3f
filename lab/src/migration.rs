//! Host migration, as Fly does it (reference fly-runtime.md §4 "Migration"; Fly docs
//! `reference/machine-migration` and `volumes/volume-states`): the machine is stopped with its
//! stop signal and kill_timeout like any stop, its volume is forked to a new volume id with the
//! data kept, and it starts again with the same machine id and a new 6PN address.
//!
//! What this file owns: starting a migration ([`begin`], from the `/lab/v1` endpoint and the
//! `migrate` fault), copying a volume's data to its fork ([`fork_data`]) and rewriting the
//! records once the machine is stopped ([`land`]). `lifecycle::drive` calls the last two
//! between `stopped` and the new start, so the move survives a lab restart like any other
//! transition. No HTTP here, and never a secret.
//!
//! Modelled from Fly's documentation:
//! - the source volume goes `created` → `pending_destroy` and is detached; the fork is a new
//!   volume id with the same name, size and region (volumes/volume-states: "Migrate a volume to
//!   a new host: source volume created → pending_destroy; destination volume [Fork a volume
//!   transitions]"). Fly keeps the soft-deleted source a week; the lab keeps its record in
//!   `pending_destroy` but removes its data once the fork holds it (the lab has no recovery);
//! - the fork passes `hydrating` on Fly (mountable while blocks arrive); the lab copies the data
//!   before the start, so the fork is `created` at once;
//! - the machine gets a new instance id and creation time and a fresh event log whose first
//!   event is `launch` / `created` / source `flyd`, which flyctl's `machine status` shows as
//!   `migrated=true` (reference/machine-migration example; flyctl
//!   internal/command/machine/status.go);
//! - Fly lands the machine on another host; the lab keeps the zone (volumes of one cluster are
//!   spread over distinct zones and must stay spread, and a zone is the lab's failure domain)
//!   and moves the machine to the next host of that zone, whose 6PN host bits differ
//!   (reference fly-runtime.md §4: 6PN = network | host | machine).
//! - Unknown, so not modelled: which host or zone Fly picks, and whether a stopped machine is
//!   migrated while stopped. The lab migrates started machines only.

use crate::error::ApiError;
use crate::lifecycle::{drive, enter};
use crate::model::{Machine, Migration, Record, State};
use crate::{clock, ids, runner, Lab};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors forking a volume's data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("forking volume {from} to {to}: {op} {path}")]
    Io {
        from: String,
        to: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("forking volume {from} to {to}: the copy task panicked")]
    Join {
        from: String,
        to: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Who asked for a migration (kept in the record, logged).
pub const CAUSE_API: &str = "lab api";
/// The `migrate` fault.
pub const CAUSE_FAULT: &str = "lab fault";

/// A volume fork prepared for a migration: the data of `from` copied to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub from: String,
    pub to: String,
}

/// Begin migrating machine `id` of `app`: it must be `started` with nothing else under way.
/// It goes `stopping` (source `flyd`) with the machine's own stop signal and kill_timeout, and
/// `lifecycle::drive` moves it once stopped. Returns the machine as recorded.
pub fn begin(lab: &Arc<Lab>, app: &str, id: &str, cause: &str) -> Result<Machine, ApiError> {
    let m = {
        let mut guard = lab.core();
        let core = &mut *guard;
        let mut m = crate::api::find_machine(&core.state, app, id)?.clone();
        if m.state != "started" || m.target.is_some() || m.migration.is_some() {
            let doing = match (&m.migration, &m.target) {
                (Some(_), _) => "already migrating".to_string(),
                (None, Some(t)) => format!("{} (on its way to {t})", m.state),
                (None, None) => m.state.clone(),
            };
            return Err(ApiError::precondition(format!(
                "failed_precondition: machine {id} is {doing}: the lab migrates started machines only"
            )));
        }
        m.migration = Some(Migration {
            instance_id: m.instance_id.clone(),
            cause: cause.to_string(),
        });
        enter(&mut m, "stopping", "flyd", &mut core.rng);
        m.target = Some("stopped".into());
        core.commit(Record::Machine(Box::new(m.clone())))?;
        m
    };
    tracing::info!(
        app,
        machine = id,
        cause,
        "migrating a machine to another host"
    );
    if let Some(r) = &lab.runner {
        // A normal stop: the machine's stop_config signal and timeout (reference §1.5:
        // "Deploys, machine stop, autostop and migration all use this sequence").
        r.request_stop(id, None, None);
    }
    lab.notify();
    drive(lab, app, id);
    Ok(m)
}

/// Prepare the volume fork of a stopping machine: pick the new volume id and copy the data
/// (when the old volume has any on disk; API-only labs may have none). `None` when the
/// machine mounts no volume.
pub async fn fork_data(lab: &Arc<Lab>, app: &str, id: &str) -> Result<Option<Fork>, Error> {
    let fork = {
        let mut guard = lab.core();
        let core = &mut *guard;
        let Some(a) = core.state.app(app) else {
            return Ok(None);
        };
        let Some(from) = a.machines.get(id).and_then(Machine::mounted_volume) else {
            return Ok(None);
        };
        let to = loop {
            let v = ids::volume_id(&mut core.rng);
            if !a.volumes.contains_key(&v) {
                break v;
            }
        };
        Fork { from, to }
    };
    let (src, dst) = (
        runner::volume_dir(&lab.opts.state_dir, &fork.from),
        runner::volume_dir(&lab.opts.state_dir, &fork.to),
    );
    let f = fork.clone();
    tokio::task::spawn_blocking(move || {
        if !src.exists() {
            return Ok(());
        }
        let r = copy_tree(&src, &dst);
        if r.is_err() {
            // A partial fork is of no use to anyone.
            let _ = std::fs::remove_dir_all(&dst);
        }
        r.map_err(|(op, path, source)| Error::Io {
            from: f.from.clone(),
            to: f.to.clone(),
            op,
            path,
            source,
        })
    })
    .await
    .map_err(|source| Error::Join {
        from: fork.from.clone(),
        to: fork.to.clone(),
        source,
    })??;
    Ok(Some(fork))
}

/// Remove the data of a fork that was not used (the machine changed while it was copied).
pub fn discard(lab: &Lab, fork: &Fork) {
    let dir = runner::volume_dir(&lab.opts.state_dir, &fork.to);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove an unused volume fork");
        }
    }
}

/// Remove the source's data once the fork is recorded (the source stays `pending_destroy`).
pub fn drop_source(lab: &Lab, fork: &Fork) {
    let dir = runner::volume_dir(&lab.opts.state_dir, &fork.from);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a migrated volume's old data");
        }
    }
}

/// Move the stopped machine `m` to the next host of its zone: a new 6PN address, the volume
/// fork in `config.mounts[0].volume` (source `pending_destroy`, fork attached), a new instance
/// id, and a fresh event log starting with the `launch` event flyctl shows as
/// `migrated=true`. The machine is then `created` on its way to `started`. Returns the volume
/// records to commit before the machine's.
pub fn land(
    state: &State,
    m: &mut Machine,
    fork: Option<&Fork>,
    rng: &mut impl rand::Rng,
) -> Vec<Record> {
    let network = state
        .app(&m.app)
        .and_then(|a| a.app.as_ref())
        .map(|a| a.network.clone().unwrap_or_else(|| a.org_slug.clone()))
        .unwrap_or_default();
    let taken = |ip: &str| {
        state
            .apps
            .values()
            .flat_map(|a| a.machines.values())
            .any(|o| o.private_ip == ip)
    };
    m.host += 1;
    let old_ip = m.private_ip.clone();
    m.private_ip = loop {
        let ip = ids::private_ip_on_host(&network, &m.zone, m.host, rng).to_string();
        if ip != old_ip && !taken(&ip) {
            break ip;
        }
    };
    let now = clock::now_ms();
    let mut records = Vec::new();
    if let Some(f) = fork {
        if let Some(src) = state.app(&m.app).and_then(|a| a.volumes.get(&f.from)) {
            let mut fork_vol = src.clone();
            fork_vol.id = f.to.clone();
            fork_vol.state = "created".into();
            fork_vol.attached_machine_id = Some(m.id.clone());
            fork_vol.created_at_ms = now;
            let mut gone = src.clone();
            gone.state = "pending_destroy".into();
            gone.attached_machine_id = None;
            records.push(Record::Volume(gone));
            records.push(Record::Volume(fork_vol));
        }
        if let Some(mount) = m.config.mounts.first_mut() {
            mount.volume = f.to.clone();
        }
    }
    m.instance_id = ids::ulid(rng, now);
    m.created_at_ms = now;
    m.events.clear();
    enter(m, "created", "flyd", rng);
    m.target = Some("started".into());
    m.migration = None;
    records
}

type CopyError = (&'static str, PathBuf, std::io::Error);

/// Copy `from` (a directory tree) to `to`, which must not exist: regular files, directories,
/// symlinks, FIFOs and device nodes with their modes and owners, as a block-level volume fork
/// carries them. Sockets are skipped: nothing listens on them once the machine stopped.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), CopyError> {
    let at = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| (op, p, e)
    };
    let meta = std::fs::symlink_metadata(from).map_err(at("reading", from))?;
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        std::fs::create_dir(to).map_err(at("creating", to))?;
        for e in std::fs::read_dir(from).map_err(at("listing", from))? {
            let e = e.map_err(at("listing", from))?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        std::fs::set_permissions(to, meta.permissions()).map_err(at("setting the mode of", to))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(from).map_err(at("reading the link", from))?;
        std::os::unix::fs::symlink(target, to).map_err(at("creating the link", to))?;
    } else if ft.is_file() {
        std::fs::copy(from, to).map_err(at("copying to", to))?;
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_fifo() {
            nix::sys::stat::SFlag::S_IFIFO
        } else if ft.is_char_device() {
            nix::sys::stat::SFlag::S_IFCHR
        } else {
            nix::sys::stat::SFlag::S_IFBLK
        };
        let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
        nix::sys::stat::mknod(to, kind, mode, meta.rdev()).map_err(|e| {
            (
                "creating the node",
                to.to_path_buf(),
                std::io::Error::from(e),
            )
        })?;
        // mknod applies the umask; the fork keeps the source's mode exactly.
        std::fs::set_permissions(to, meta.permissions()).map_err(at("setting the mode of", to))?;
    } else {
        // A socket.
        return Ok(());
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(at("setting the owner of", to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copy_tree_keeps_files_modes_links_and_nesting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("vol_a");
        std::fs::create_dir_all(src.join("k3s/server")).expect("mkdir");
        std::fs::write(src.join("k3s/server/token"), "K10abc\n").expect("write");
        std::fs::set_permissions(
            src.join("k3s/server/token"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::set_permissions(src.join("k3s"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::os::unix::fs::symlink("server/token", src.join("k3s/link")).expect("symlink");
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .expect("mkfifo");
        let dst = dir.path().join("vol_b");
        copy_tree(&src, &dst).expect("copy");
        assert_eq!(
            std::fs::read_to_string(dst.join("k3s/server/token")).expect("read"),
            "K10abc\n"
        );
        let mode = |p: &Path| std::fs::symlink_metadata(p).expect("meta").mode() & 0o7777;
        assert_eq!(mode(&dst.join("k3s/server/token")), 0o600);
        assert_eq!(mode(&dst.join("k3s")), 0o700);
        assert_eq!(
            std::fs::read_link(dst.join("k3s/link")).expect("link"),
            PathBuf::from("server/token")
        );
        use std::os::unix::fs::FileTypeExt;
        let fifo = std::fs::symlink_metadata(dst.join("fifo")).expect("fifo");
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);
        // The source is untouched, and copying onto an existing tree is refused.
        assert!(src.join("k3s/server/token").is_file());
        assert!(copy_tree(&src, &dst).is_err());
    }
}
