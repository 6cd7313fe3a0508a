//! Programs a long-lived process keeps loaded so that the processes it forks start without
//! opening, hashing, mapping or type-checking them ([`crate::WasmEngine::preload_recent`]).
//!
//! Which programs: the most recently written entries of the engine's cache directory — the
//! programs this host compiled last, which on a node are the images it runs. A scan happens
//! only when the directory changed since the last one (one `stat` otherwise). Each entry is
//! verified exactly as a lookup verifies it, so a forked process may use it as if it had
//! looked it up itself.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::Program;

/// One loaded program.
pub(crate) struct Entry {
    /// The hex sha256 of its wasm: the cache key.
    pub(crate) key: String,
    pub(crate) program: Program,
    /// The `.cwasm` file it was mapped from, and that file when it was verified.
    pub(crate) path: PathBuf,
    pub(crate) identity: Identity,
}

/// What tells a file changed: inode, size, modification and change times. Entries are only
/// ever replaced by rename (a new inode); anything else — a write in place, a removal — also
/// shows here, and the program is dropped rather than trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub(crate) fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    pub(crate) fn of_file(file: &File) -> Option<Self> {
        file.metadata().ok().map(|meta| Identity::of(&meta))
    }
}

impl Entry {
    /// Whether its file is still the one that was verified (one `stat`).
    pub(crate) fn unchanged(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|meta| Identity::of(&meta) == self.identity)
    }
}

/// The loaded programs.
#[derive(Default)]
pub(crate) struct Preloaded {
    pub(crate) entries: Vec<Entry>,
    /// The cache directory's modification time at the last scan.
    pub(crate) scanned: Option<SystemTime>,
}

impl Preloaded {
    /// The entry whose wasm hashes to `sha256`, if loaded.
    pub(crate) fn get(&self, sha256: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == sha256)
    }
}

/// The keys (wasm sha256) of the `limit` most recently modified `.cwasm` entries in `dir`,
/// newest first. Unreadable entries are skipped: they would fail a lookup too.
pub(crate) fn recent_keys(dir: &Path, limit: usize) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(SystemTime, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name.strip_suffix(".cwasm")?;
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, key.to_owned()))
        })
        .collect();
    found.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    found.truncate(limit);
    found.into_iter().map(|(_, key)| key).collect()
}

/// The directory's modification time, `None` if it cannot be read.
pub(crate) fn modified(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir).ok()?.modified().ok()
}
