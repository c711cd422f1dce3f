//! Persistence of the lab state in `--state-dir`: a snapshot (`state.json`) plus an
//! append-only journal (`journal.jsonl`, one JSON record a line) of every mutation since.
//! Owns the files only; it decides nothing about the API.
//!
//! Durability: every record is written with one `write(2)` before the HTTP answer is sent.
//! No fsync: the lab must survive `kill -9`, not a power cut, and data written to the page
//! cache survives the death of the process. A record torn by a kill in the middle of a write
//! (no trailing newline, or not parseable as the last line) is discarded at replay.
//! Compaction writes the snapshot to a temp file and renames it over the old one, then empties
//! the journal; replaying a journal over a snapshot that already holds it is harmless because
//! records are whole upserts.

use crate::model::{Record, State};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing snapshot {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal {path} line {line} is corrupt (not the last record, so not a torn write)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding a journal record")]
    Encode(#[source] serde_json::Error),
}

/// Compact after this many records, so replay at start stays short.
pub const COMPACT_EVERY: u64 = 50_000;

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    records: u64,
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal.jsonl")
}

/// Load the state from `dir` (snapshot, then the journal, discarding a torn last record),
/// write a fresh snapshot and open an empty journal.
pub fn open(dir: &Path) -> Result<(State, Journal), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let snap = snapshot_path(dir);
    let mut state = match fs::read(&snap) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Snapshot {
            path: snap.clone(),
            source,
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
        Err(source) => return Err(Error::Read { path: snap, source }),
    };
    let jpath = journal_path(dir);
    match fs::read(&jpath) {
        Ok(bytes) => replay(&mut state, &bytes, &jpath)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Read {
                path: jpath,
                source,
            })
        }
    }
    write_snapshot(dir, &state)?;
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&jpath)
        .map_err(|source| Error::Write {
            path: jpath.clone(),
            source,
        })?;
    // Reopen in append mode so every write lands at the end even after compaction truncates.
    drop(file);
    let file = OpenOptions::new()
        .append(true)
        .open(&jpath)
        .map_err(|source| Error::Write {
            path: jpath,
            source,
        })?;
    Ok((
        state,
        Journal {
            dir: dir.to_path_buf(),
            file,
            records: 0,
        },
    ))
}

fn replay(state: &mut State, bytes: &[u8], path: &Path) -> Result<(), Error> {
    // Each record is written with its newline in one call, so a write cut short is exactly a
    // last segment without a newline; every newline-terminated line must parse.
    let mut segments: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let tail = segments.pop().unwrap_or_default();
    if !tail.is_empty() {
        tracing::warn!(path = %path.display(), bytes = tail.len(), "discarding torn last journal record");
    }
    for (i, line) in segments.into_iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let rec = serde_json::from_slice::<Record>(line).map_err(|source| Error::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        state.apply(rec);
    }
    Ok(())
}

fn write_snapshot(dir: &Path, state: &State) -> Result<(), Error> {
    let path = snapshot_path(dir);
    let tmp = dir.join("state.json.tmp");
    let bytes = serde_json::to_vec(state).map_err(Error::Encode)?;
    fs::write(&tmp, bytes).map_err(|source| Error::Write {
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, &path).map_err(|source| Error::Write { path, source })
}

impl Journal {
    /// Append one record (one write call), compacting when the journal has grown long.
    pub fn append(&mut self, record: &Record, state: &State) -> Result<(), Error> {
        let mut line = serde_json::to_vec(record).map_err(Error::Encode)?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| Error::Write {
            path: journal_path(&self.dir),
            source,
        })?;
        self.records += 1;
        if self.records >= COMPACT_EVERY {
            self.compact(state)?;
        }
        Ok(())
    }

    /// Write the whole state as the snapshot and empty the journal.
    pub fn compact(&mut self, state: &State) -> Result<(), Error> {
        write_snapshot(&self.dir, state)?;
        self.file.set_len(0).map_err(|source| Error::Write {
            path: journal_path(&self.dir),
            source,
        })?;
        self.records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::App;

    fn app(name: &str) -> Record {
        Record::App(App {
            id: format!("id-{name}"),
            name: name.into(),
            org_slug: "personal".into(),
            network: None,
            created_at_ms: 1,
        })
    }

    #[test]
    fn torn_last_record_is_discarded_and_rest_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (state, mut j) = open(dir.path()).expect("open");
            j.append(&app("one"), &state).expect("append");
            j.append(&app("two"), &state).expect("append");
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(journal_path(dir.path()))
            .expect("open");
        f.write_all(b"{\"App\":{\"id\":\"x\",\"na")
            .expect("write torn");
        drop(f);
        let (state, _j) = open(dir.path()).expect("reopen");
        assert!(state.app("one").is_some());
        assert!(state.app("two").is_some());
        assert_eq!(state.apps.len(), 2);
    }

    #[test]
    fn complete_last_line_without_newline_is_discarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (state, mut j) = open(dir.path()).expect("open");
            j.append(&app("one"), &state).expect("append");
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(journal_path(dir.path()))
            .expect("open");
        f.write_all(&serde_json::to_vec(&app("two")).expect("json"))
            .expect("write");
        drop(f);
        let (state, _j) = open(dir.path()).expect("reopen");
        assert!(state.app("one").is_some());
        assert!(state.app("two").is_none());
    }

    #[test]
    fn corrupt_middle_record_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            journal_path(dir.path()),
            b"garbage\n{\"Boot\":{\"boots\":1}}\n",
        )
        .expect("write");
        assert!(matches!(
            open(dir.path()),
            Err(Error::Corrupt { line: 1, .. })
        ));
    }

    #[test]
    fn compaction_keeps_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut state, mut j) = open(dir.path()).expect("open");
            let r = app("one");
            state.apply(r.clone());
            j.append(&r, &state).expect("append");
            j.compact(&state).expect("compact");
            let r = app("two");
            state.apply(r.clone());
            j.append(&r, &state).expect("append");
        }
        let (state, _j) = open(dir.path()).expect("reopen");
        assert_eq!(state.apps.len(), 2);
    }
}
