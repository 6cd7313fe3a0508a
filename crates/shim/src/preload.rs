//! The starter's preloaded engine: the command engine for this containerd's compile cache with
//! the programs the cache received last already verified, mapped and type-checked
//! ([`WasmEngine::preload_recent`]). Every server the starter forks inherits it, and so do the
//! guests its launcher forks: a guest of a preloaded program creates no engine, reads nothing
//! of the cache and checks nothing twice (measured in the README's performance section).
//!
//! A guest takes it ([`take`]) and uses it ([`for_options`]) only if it is the engine the guest
//! would build itself — the same options, so the same cache directory and configuration — and,
//! before it is confined, drops every program but its own
//! ([`WasmEngine::forget_preloaded_except`]), so nothing of another image stays mapped in a
//! guest. Servers and launchers leave it as inherited, so their copies stay shared with the
//! starter's pages — except a spare server, which refreshes it when it is handed a container
//! ([`refresh`]: what the cache received while it waited is then its own).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use wasmcell_engine::{EngineOptions, PreloadBudget, WasmEngine};

/// What the starter keeps loaded: the most recently compiled programs, at most 4 and 4 MiB of
/// compiled code together (the demo command's is 1 MiB). Every preloaded program's metadata
/// lives in the starter's heap, which each server, launcher and guest shares until it writes
/// near it, so the budget bounds what preloading can cost in memory; a node's few hot images
/// fit, a 10 MiB component does not.
pub const PRELOAD_BUDGET: PreloadBudget = PreloadBudget {
    count: 4,
    bytes: 4 << 20,
};

static PRELOADED: Mutex<Option<WasmEngine>> = Mutex::new(None);

/// The files the preloaded programs are mapped from stay open: wasmtime maps a module's
/// initial heap from its file when it is first instantiated, in the guest. Every process
/// between the starter and the guest keeps these fds when it closes what it inherited
/// ([`crate::forked::close_from`]).
static INHERITED_FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn preloaded() -> MutexGuard<'static, Option<WasmEngine>> {
    PRELOADED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The fds of the preloaded programs' files (empty outside the starter's descendants).
pub fn inherited_fds() -> Vec<RawFd> {
    INHERITED_FDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The options of the engine a guest of a command builds for `cache_dir`.
pub fn command_options(cache_dir: Option<std::path::PathBuf>) -> EngineOptions {
    EngineOptions {
        cache_dir,
        ..EngineOptions::default()
    }
}

/// In the starter, once: the command engine for the cache this environment names (none when
/// the cache is disabled or cannot be opened: guests then build their own, as before).
pub fn start() {
    let Some(cache_dir) = crate::shim::cache_dir() else {
        return;
    };
    if let Ok(engine) = WasmEngine::new(command_options(Some(cache_dir))) {
        *preloaded() = Some(engine);
    }
    refresh();
    crate::footprint::settle();
}

/// In the starter, before it forks a server, and in a spare handed a container: loads what the
/// cache received since the last call, and records which fds its programs' files have (only
/// when that may have changed: this runs before every fork).
pub fn refresh() {
    let _held = hold_low_fds();
    let mut engine = preloaded();
    let Some(cache_dir) = engine.as_ref().and_then(|loaded| {
        let scan = loaded.preload_recent(PRELOAD_BUDGET);
        scan.changed.then(|| loaded.options().cache_dir.clone())?
    }) else {
        return;
    };
    let fds = fds_under(&cache_dir);
    // A guest's fds 0–4 are its stdio and handshake pipes, set with dup2: a file there would be
    // replaced under wasmtime. The starter's own 0–4 are taken, so this does not happen; if it
    // did, nothing is preloaded rather than something broken.
    if fds.iter().any(|&fd| fd <= crate::guest::STATUS_FD) {
        *engine = None;
        INHERITED_FDS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        return;
    }
    let mut inherited = INHERITED_FDS.lock().unwrap_or_else(PoisonError::into_inner);
    if *inherited != fds {
        *inherited = fds;
        // Loading ran code no child needs from here (a fork copies no page-table entries of
        // the binary's code): let go of it, and of the heap it freed, as a settled guest does.
        crate::footprint::settle();
    }
}

/// Takes every free fd up to a guest's handshake fds (opening `/dev/null`), to be held while
/// programs' files are opened so that none of those files gets a number where a guest's stdio
/// or pipes are put with `dup2` (which would make [`refresh`] drop the engine). The starter has
/// 0–4 open already; a spare has some free once it has let go of its last container's streams
/// and connections.
fn hold_low_fds() -> Vec<OwnedFd> {
    let mut held = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        let fd = OwnedFd::from(file);
        if fd.as_raw_fd() > crate::guest::STATUS_FD {
            break;
        }
        held.push(fd);
    }
    held
}

/// This process's open fds whose files lie under `dir`.
fn fds_under(dir: &Path) -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            std::fs::read_link(entry.path())
                .ok()?
                .starts_with(dir)
                .then_some(fd)
        })
        .collect()
}

/// In a guest, first thing: the inherited engine, taken so that whatever the guest does with
/// it — use it ([`for_options`]) or not — nothing else keeps it.
pub fn take() -> Option<WasmEngine> {
    preloaded().take()
}

/// `inherited` if it was built with `options`; otherwise its programs are let go of
/// ([`keep_only`] with none kept) and the rest is leaked, not freed (see
/// [`WasmEngine::forget_preloaded_except`]).
pub fn for_options(inherited: Option<WasmEngine>, options: &EngineOptions) -> Option<WasmEngine> {
    let engine = inherited?;
    if engine.options() == options {
        return Some(engine);
    }
    keep_only(&engine, None);
    std::mem::forget(engine);
    None
}

/// In a guest: lets go of every preloaded program but the one whose wasm hashes to `sha256`
/// ([`WasmEngine::forget_preloaded_except`]: unmapped and leaked) and closes their files.
pub fn keep_only(engine: &WasmEngine, sha256: Option<&str>) {
    let gone = engine.forget_preloaded_except(sha256);
    if gone.is_empty() {
        return;
    }
    for fd in inherited_fds() {
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        if gone.contains(&target) {
            // SAFETY: the fd belongs to a file wasmtime opened for a program that was just
            // leaked: the owning `File` is never dropped, so this is the only close.
            #[allow(unsafe_code)]
            unsafe {
                libc::close(fd);
            }
        }
    }
}
