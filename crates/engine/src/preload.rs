//! Programs a long-lived process keeps loaded so that the processes it forks start without
//! opening, hashing, mapping or type-checking them ([`crate::WasmEngine::preload_recent`]),
//! and [`Entry::unmap_and_leak`], with which a forked process lets go of the ones it does not run.
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
    /// Replaces the program's compiled image with an inaccessible reservation and leaks the
    /// program; returns the file it was mapped from (still open: the caller closes it). The
    /// address range stays reserved, not freed: wasmtime's process-wide code registry still
    /// names it, and a later mapping of code at the same address would collide with it.
    pub(crate) fn unmap_and_leak(self) -> PathBuf {
        let image = match &self.program {
            Program::Component(component) => component.image_range(),
            Program::Module(module) => module.image_range(),
        };
        let start = image.start as usize;
        let len = (image.end as usize).saturating_sub(start);
        let path = self.path.clone();
        std::mem::forget(self);
        // SAFETY: wasmtime maps a cache entry whole, from a page-aligned start, so the range
        // rounded up to whole pages is that mapping and nothing else; MAP_FIXED replaces it
        // with inaccessible anonymous memory in one step. Nothing uses it again: the program
        // is leaked above (never dropped, so wasmtime never unmaps it), it is no longer in
        // this engine, its code never ran in this process, and its type-checked instance was
        // leaked with it (`leak_checked_except`).
        #[allow(unsafe_code)]
        let replaced = unsafe {
            rustix::mm::mmap_anonymous(
                image.start as *mut std::ffi::c_void,
                len,
                rustix::mm::ProtFlags::empty(),
                rustix::mm::MapFlags::PRIVATE
                    | rustix::mm::MapFlags::FIXED
                    | rustix::mm::MapFlags::NORESERVE,
            )
        };
        if let Err(e) = replaced {
            log::debug!("cannot unmap {} at {start:#x}: {e}", path.display());
        }
        path
    }

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

/// What a long-lived process keeps preloaded: the newest entries, at most `count` of them and
/// at most `bytes` of compiled code together. An entry's in-memory metadata grows with its
/// code, and every process forked below the preloading one shares those pages — until it writes
/// to them — so the budget bounds what preloading costs in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreloadBudget {
    /// Most entries kept.
    pub count: usize,
    /// Most bytes of `.cwasm` kept, summed; a larger entry is skipped, not truncated.
    pub bytes: u64,
}

/// What [`crate::WasmEngine::preload_recent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreloadScan {
    /// How many programs are loaded now.
    pub loaded: usize,
    /// Whether the cache was scanned again, so the loaded programs (and the files they keep
    /// open) may differ from before; `false` when nothing changed since the last scan.
    pub changed: bool,
}

/// The keys (wasm sha256) of the most recently modified `.cwasm` entries in `dir` that fit
/// `budget`, newest first. Unreadable entries are skipped: they would fail a lookup too.
pub(crate) fn recent_keys(dir: &Path, budget: PreloadBudget) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(SystemTime, u64, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let key = name.strip_suffix(".cwasm")?;
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let meta = entry.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), key.to_owned()))
        })
        .collect();
    found.sort_by_key(|(modified, _, _)| std::cmp::Reverse(*modified));
    let mut left = budget.bytes;
    found
        .into_iter()
        .filter(|(_, len, _)| {
            let fits = *len <= left;
            if fits {
                left -= len;
            }
            fits
        })
        .take(budget.count)
        .map(|(_, _, key)| key)
        .collect()
}

/// The directory's modification time, `None` if it cannot be read.
pub(crate) fn modified(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir).ok()?.modified().ok()
}
