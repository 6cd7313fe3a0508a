//! The on-disk compile cache, and [`deserialize`], one of the crate's two `unsafe` blocks (the
//! other unmaps a preloaded program a forked process does not run: `preload`).
//!
//! Layout: `<cache_dir>/<fingerprint>/<wasm-sha256>.cwasm` holds the output of
//! `Engine::precompile_*`, and `<wasm-sha256>.blake3` beside it holds the hex BLAKE3 hash of
//! those bytes (every start hashes the code it maps: BLAKE3 does it in a quarter of sha256's time
//! here, SIMD against the CPU's SHA extensions; the key stays the wasm's sha256, its OCI
//! digest); `<wasm-sha256>.lock` is an empty file whose `flock` serialises compiles of one wasm;
//! `<wasm-sha256>.wasm`, while it exists, is a copy of the wasm waiting for a background compile
//! of this directory's entry (a cold start ran baseline code meanwhile). Directories are mode
//! 0700 and must belong to this process's effective uid; files are 0600.
//!
//! Writes go to a temporary file in the same directory, are fsynced and renamed into place
//! (sidecar first, then the `.cwasm`, then the directory is fsynced). The `.cwasm` rename is
//! the commit point: a crash leaves at most a sidecar without code, which reads as a miss.
//! Entries are never modified in place, only replaced by rename, so a process that has an
//! entry mapped keeps its (unlinked) inode intact.
//!
//! Concurrent cold starts compile once: a process that misses takes an exclusive `flock` on
//! `<wasm-sha256>.lock` ([`Cache::compile_lock`]) before compiling and looks the entry up again
//! once it holds it, so the others wait for the first compile and map its result. The kernel
//! drops a `flock` when its holder dies, so a guest killed while compiling leaves no stale lock
//! (and, because of the rename, no partial entry). A waiter gives up after
//! [`COMPILE_LOCK_WAIT`] and compiles itself.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{EngineError, Program};

/// Which kind of program an entry holds; the wasm's sha256 already determines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Module,
    Component,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }
}

/// One fingerprint's directory of the cache.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
    dir: PathBuf,
}

/// The result of looking an entry up.
pub(crate) enum Lookup {
    /// The entry exists and its `.cwasm` hashes to the sidecar's value; the open file is the one
    /// that was hashed.
    Verified { path: PathBuf, file: File },
    /// No `.cwasm` (a lone sidecar from an interrupted write counts as missing).
    Missing,
    /// The entry exists but cannot be trusted.
    Corrupt { path: PathBuf, reason: String },
}

impl Cache {
    /// Creates (or secures) `<root>/<fingerprint>`, both mode 0700 and owned by the effective uid.
    pub(crate) fn open(root: &Path, fingerprint: &str) -> Result<Self, EngineError> {
        secure_dir(root)?;
        let dir = root.join(fingerprint);
        secure_dir(&dir)?;
        Ok(Cache {
            root: root.to_owned(),
            dir,
        })
    }

    /// Makes the directories again, as [`Cache::open`] does, if the fingerprint's directory is
    /// gone: an engine can outlive them — the starter's preloaded one, inherited by every guest,
    /// lives as long as the starter, and an operator may empty the cache meanwhile — and what it
    /// compiles after that must still be stored. Called before anything is written (one `stat`).
    fn ensure_dir(&self) -> io::Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        secure_dir(&self.root)
            .and_then(|()| secure_dir(&self.dir))
            .map_err(io::Error::other)
    }

    /// The fingerprint's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn cwasm_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.cwasm"))
    }

    fn sidecar_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.blake3"))
    }

    /// Opens the entry for `key` (the wasm's hex sha256) and checks the `.cwasm` against its
    /// sidecar.
    pub(crate) fn lookup(&self, key: &str) -> Lookup {
        let path = self.cwasm_path(key);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => return corrupt(path, format!("cannot open: {e}")),
        };
        let expected = match fs::read_to_string(self.sidecar_path(key)) {
            Ok(text) => text.trim().to_owned(),
            Err(e) => return corrupt(path, format!("cannot read the .blake3 sidecar: {e}")),
        };
        match blake3_of(&mut file) {
            Ok(actual) if actual == expected => Lookup::Verified { path, file },
            Ok(actual) => corrupt(
                path,
                format!("content hashes to {actual}, the sidecar says {expected:?}"),
            ),
            Err(e) => corrupt(path, format!("cannot read: {e}")),
        }
    }

    /// Atomically stores `code` as the entry for `key` and returns the `.cwasm` path.
    pub(crate) fn store(&self, key: &str, code: &[u8]) -> io::Result<PathBuf> {
        let sum = format!("{}\n", blake3::hash(code).to_hex());
        self.write_atomically(&self.sidecar_path(key), sum.as_bytes())?;
        let path = self.cwasm_path(key);
        self.write_atomically(&path, code)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.ensure_dir()?;
        // tempfile creates the file with O_EXCL and mode 0600, and removes it if we fail.
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// How long a cold start waits for another process's compile of the same wasm before it
/// compiles itself: longer than any compile takes here (a 10 MiB component compiles in about 6 s
/// on two cores), short enough that a stuck holder cannot stall containers for long.
pub(crate) const COMPILE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// An exclusive claim on compiling one entry; released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct CompileLock {
    _file: File,
    /// Whether another process held the lock first (so the entry may exist now).
    pub(crate) waited: bool,
}

impl Cache {
    /// The compile lock of `key` if no other process holds it; `None` when one does or the
    /// lock cannot be taken at all. For background work that another process already covers.
    pub(crate) fn try_compile_lock(&self, key: &str) -> Option<CompileLock> {
        let file = self.lock_file(key)?;
        file.try_lock().ok()?;
        Some(CompileLock {
            _file: file,
            waited: false,
        })
    }

    fn lock_file(&self, key: &str) -> Option<File> {
        let path = self.dir.join(format!("{key}.lock"));
        self.ensure_dir()
            .and_then(|()| {
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(&path)
            })
            // A cache that cannot take a lock file cannot store the entry either; the store
            // failure is the one warning.
            .map_err(|e| log::debug!("cannot open the compile lock {}: {e}", path.display()))
            .ok()
    }

    fn source_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.wasm"))
    }

    /// Keeps a copy of the wasm whose entry a background compile is to make
    /// (`<wasm-sha256>.wasm`), written atomically; an existing copy is kept.
    pub(crate) fn store_source(&self, key: &str, wasm: &[u8]) -> io::Result<PathBuf> {
        let path = self.source_path(key);
        if !path.exists() {
            self.write_atomically(&path, wasm)?;
        }
        Ok(path)
    }

    /// The key of a source copy made by [`Cache::store_source`] in this directory, or why
    /// `path` is not one.
    pub(crate) fn source_key(&self, path: &Path) -> Result<String, String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        match name {
            Some(key) if path.parent() == Some(self.dir.as_path()) => Ok(key.to_owned()),
            _ => Err(format!(
                "{} is not a wasm copy in the compile cache directory {}",
                path.display(),
                self.dir.display()
            )),
        }
    }

    /// Waits (up to `wait`) for the exclusive compile lock of `key`. `None` when the lock cannot
    /// be taken at all (for example an unwritable cache): the caller compiles unlocked.
    pub(crate) fn compile_lock(&self, key: &str, wait: std::time::Duration) -> Option<CompileLock> {
        let path = self.dir.join(format!("{key}.lock"));
        let file = self.lock_file(key)?;
        let deadline = std::time::Instant::now() + wait;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Some(CompileLock {
                        _file: file,
                        waited,
                    });
                }
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    waited = true;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    log::warn!(
                        "another process has held {} for over {:?}; compiling without it",
                        path.display(),
                        wait
                    );
                    return None;
                }
                Err(fs::TryLockError::Error(e)) => {
                    log::warn!("cannot lock {}: {e}", path.display());
                    return None;
                }
            }
        }
    }
}

fn corrupt(path: PathBuf, reason: String) -> Lookup {
    Lookup::Corrupt { path, reason }
}

fn blake3_of(file: &mut File) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Creates `dir` with mode 0700 if missing; otherwise requires it to be a directory owned by the
/// effective uid and tightens its mode to 0700.
fn secure_dir(dir: &Path) -> Result<(), EngineError> {
    let err = |action, source| EngineError::CacheDir {
        path: dir.to_owned(),
        action,
        source,
    };
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) => return Err(err("create", e)),
    }
    let meta = fs::metadata(dir).map_err(|e| err("inspect", e))?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(EngineError::CacheDirNotOwned {
            path: dir.to_owned(),
            owner: meta.uid(),
            euid,
        });
    }
    if meta.mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| err("set mode 0700", e))?;
    }
    Ok(())
}

/// Compiled code to turn into a [`Program`].
pub(crate) enum Code<'a> {
    /// A cache entry. `hashed` is the open file whose content [`Cache::lookup`] verified, or
    /// `None` for an entry this process has just written.
    Entry {
        path: &'a Path,
        hashed: Option<&'a File>,
    },
    /// Output of `Engine::precompile_*` from this process, kept in memory because it could not
    /// be stored.
    Fresh(&'a [u8]),
}

/// Loads compiled code: a cache entry is mapped from its file, fresh bytes are copied.
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, kind: Kind, code: Code<'_>) -> Result<Program, String> {
    // SAFETY: wasmtime trusts the bytes to be unmodified output of `Engine::precompile_*` for a
    // compatible engine, and a mapped file to stay unchanged for as long as the code is mapped.
    // - Content: `Fresh` bytes and a just-written entry come from `precompile_*` in this
    //   process. A looked-up entry was hashed just now and equals the sidecar written together
    //   with it. wasmtime itself also checks the header, version and engine compatibility.
    // - Provenance: the cache directory and the fingerprint directory are mode 0700 and owned by
    //   our effective uid (checked in `Cache::open`), so only this uid (root, for the shim) can
    //   have put anything there.
    // - Stability: entries are never written in place, only replaced by rename, so a mapped
    //   inode never changes. Below we check that the path still names the inode we hashed (we
    //   hold it open, so its number cannot be reused), ruling out a swap between hashing and
    //   mapping.
    let loaded = unsafe {
        match (kind, &code) {
            (Kind::Module, Code::Entry { path, .. }) => {
                wasmtime::Module::deserialize_file(engine, path).map(Program::Module)
            }
            (Kind::Component, Code::Entry { path, .. }) => {
                Component::deserialize_file(engine, path).map(Program::Component)
            }
            (Kind::Module, Code::Fresh(bytes)) => {
                wasmtime::Module::deserialize(engine, bytes).map(Program::Module)
            }
            (Kind::Component, Code::Fresh(bytes)) => {
                Component::deserialize(engine, bytes).map(Program::Component)
            }
        }
    }
    .map_err(|e| format!("{e:#}"))?;
    if let Code::Entry {
        path,
        hashed: Some(file),
    } = code
    {
        let hashed = file.metadata().map_err(|e| e.to_string())?;
        let now = fs::metadata(path).map_err(|e| e.to_string())?;
        if (hashed.dev(), hashed.ino()) != (now.dev(), now.ino()) {
            return Err("the entry was replaced between verification and mapping".to_owned());
        }
    }
    Ok(loaded)
}
