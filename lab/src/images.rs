//! The lab's image table: `config.image` names an entry whose directories go first on the
//! guest's PATH (ARCHITECTURE "Images"). Entries live in `<state>/images.json`, written by
//! `fks-lab image add` whether the lab runs or not, and read again at every guest start. The
//! built-in `lab/base` is the host's own PATH. This file only reads and writes the table; it
//! must not start guests or know about the Machines API.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The built-in image: the host's own programs.
pub const BASE_IMAGE: &str = "lab/base";

/// The table's file name inside the state dir.
const FILE: &str = "images.json";

/// Errors reading or writing the image table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the image table {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the image table {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the image table {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {name}: {reason}")]
    Invalid { name: String, reason: String },
}

/// One entry: the directories put first on PATH, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub bins: Vec<PathBuf>,
}

/// The stored entries (without the built-in one).
pub fn load(state_dir: &Path) -> Result<BTreeMap<String, Image>, Error> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// Add or replace `name` with these directories (absolute, existing); written atomically.
pub fn add(state_dir: &Path, name: &str, bins: &[PathBuf]) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid {
        name: name.to_string(),
        reason,
    };
    if name.trim().is_empty() || name == BASE_IMAGE {
        return Err(invalid(format!(
            "the name must be non-empty and not the built-in {BASE_IMAGE}"
        )));
    }
    if bins.is_empty() {
        return Err(invalid("give at least one --bin DIR".into()));
    }
    let mut abs = Vec::with_capacity(bins.len());
    for b in bins {
        let b = std::path::absolute(b)
            .map_err(|e| invalid(format!("cannot resolve {}: {e}", b.display())))?;
        // Guests get private, empty /tmp and /run: programs there would not be found.
        if b.starts_with("/tmp") || b.starts_with("/run") {
            return Err(invalid(format!(
                "{} is under /tmp or /run, which guests see as private empty directories",
                b.display()
            )));
        }
        if !b.is_dir() {
            return Err(invalid(format!("{} is not a directory", b.display())));
        }
        abs.push(b);
    }
    let mut table = load(state_dir)?;
    table.insert(name.to_string(), Image { bins: abs });
    let path = state_dir.join(FILE);
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(&table).map_err(|e| Error::Write {
        path: tmp.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, bytes).map_err(|source| Error::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| Error::Write { path, source })
}

/// The PATH directories of image `name`, or `None` when the table has no such entry.
/// `lab/base` is the host's PATH as this process sees it.
pub fn resolve(state_dir: &Path, name: &str) -> Result<Option<Vec<PathBuf>>, Error> {
    if name == BASE_IMAGE {
        let host = std::env::var_os("PATH").unwrap_or_default();
        return Ok(Some(std::env::split_paths(&host).collect()));
    }
    Ok(load(state_dir)?.remove(name).map(|i| i.bins))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_images_resolve_and_unknown_ones_do_not() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        assert_eq!(resolve(dir.path(), "lab/k3s").expect("resolve"), None);
        add(dir.path(), "lab/k3s", std::slice::from_ref(&bin)).expect("add");
        assert_eq!(
            resolve(dir.path(), "lab/k3s").expect("resolve"),
            Some(vec![bin.clone()])
        );
        assert!(resolve(dir.path(), BASE_IMAGE)
            .expect("base")
            .is_some_and(|d| !d.is_empty() || std::env::var_os("PATH").is_none()));
        assert!(add(dir.path(), "x", &[dir.path().join("missing")]).is_err());
        assert!(add(dir.path(), BASE_IMAGE, &[bin]).is_err());
        assert!(add(dir.path(), "y", &[PathBuf::from("/tmp")]).is_err());
    }
}
