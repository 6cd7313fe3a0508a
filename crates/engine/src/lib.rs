//! wasmcell-engine: wasmtime and nothing else.
//!
//! - [`WasmEngine`] owns one wasmtime engine (configured in [`config`]) and, optionally, the
//!   on-disk compile cache (`cache`).
//! - [`WasmEngine::load`] turns wasm bytes into a [`Program`], from the cache when it can.
//! - [`WasmEngine::run`] runs a program to completion under WASI with a [`RunSpec`] and
//!   reports an [`ExitStatus`] (module: `wasi_snapshot_preview1`; component: the WASI 0.2
//!   command world).
//!
//! No containerd, OCI or process-management types here: the shim maps bundles and specs onto
//! a [`RunSpec`] and exit statuses onto process exits.

mod cache;
pub mod client;
pub mod config;
mod error;
mod handler_output;
pub mod host;
pub mod outbound;
mod preload;
mod run;
mod serve;
mod serve_p3;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use cache::{Cache, Kind, Lookup};
pub use config::Tier;
pub use error::{BoxError, EngineError};
pub use host::{HostWorld, Policy, World};
pub use preload::{PreloadBudget, PreloadScan};
pub use run::{ExitStatus, IdleTask, Preopen, RunSpec, Stdio};
pub use serve::{EPOCH_TICK, ServeLimits, ServeSpec, ServeSummary};
pub use serve_p3::InstanceReuse;

/// A program's wasm bytes with their sha256 (hex): the compile cache's key, and the OCI digest
/// of a layer holding exactly these bytes. Hashed once however many cache steps a start takes.
#[derive(Debug, Clone, Copy)]
pub struct Wasm<'a> {
    bytes: &'a [u8],
    sha256: [u8; 32],
}

impl<'a> Wasm<'a> {
    /// `bytes`, hashed here.
    pub fn new(bytes: &'a [u8]) -> Self {
        Wasm {
            bytes,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// `bytes` whose sha256 the caller has already verified (a layer read from containerd's
    /// content store against its digest, and not changed since), as 64 hex digits. `None` if
    /// `sha256` is not 64 hex digits. Entries are cached and looked up under it, so a wrong one
    /// would map another program's code: pass only a digest checked against these bytes.
    pub fn with_verified_sha256(bytes: &'a [u8], sha256: &str) -> Option<Self> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(sha256, &mut digest).ok()?;
        Some(Wasm {
            bytes,
            sha256: digest,
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The sha256 in lowercase hex.
    pub fn sha256(&self) -> String {
        hex::encode(self.sha256)
    }
}

impl<'a> From<&'a [u8]> for Wasm<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Wasm::new(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Wasm<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Wasm::new(bytes)
    }
}

/// Where the node keeps compiled code unless [`CACHE_DIR_ENV`] says otherwise: the shim's
/// guests read it, and `wasmcell import`/`pull` fill it ahead. Entries are keyed by content and
/// engine fingerprint and verified before use, so one cache can serve every containerd on the
/// host.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/wasmcell";
/// The environment variable that moves the compile cache (empty: no cache).
pub const CACHE_DIR_ENV: &str = "WASMCELL_CACHE_DIR";

/// The compile cache directory: [`CACHE_DIR_ENV`] (empty disables it) or [`DEFAULT_CACHE_DIR`].
pub fn cache_dir_from_env() -> Option<PathBuf> {
    match std::env::var_os(CACHE_DIR_ENV) {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from(DEFAULT_CACHE_DIR)),
    }
}

/// Fills the CPU-feature caches this crate's dependencies otherwise fill lazily, each with its
/// own `cpuid` instructions: std's (wasmtime and blake3 ask it), sha2's, blake3's and the ChaCha
/// generator's behind WASI's random. Under a hypervisor every `cpuid` traps to it, so a process
/// that forks many short-lived children (the shim's `start`, its guest launcher) calls this
/// once before forking and the children inherit the answers.
///
/// Nothing random or secret is made: the ChaCha generator is seeded with zeros and dropped, so
/// only the process-wide feature flags survive (a generator seeded before a fork would repeat
/// in every child).
pub fn detect_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("avx2");
    let _ = Sha256::digest(b"");
    let _ = blake3::hash(b"");
    let mut zeros = <rand::rngs::StdRng as rand::SeedableRng>::from_seed([0; 32]);
    let _ = rand::Rng::next_u32(&mut zeros);
}

/// Writes `line` and a newline to stderr in one `write`: `eprintln!` writes each piece of its
/// format separately on the unbuffered stderr, so a line could be split by output another
/// writer (the handlers' stdout, going to the same log) put between the pieces.
pub fn stderr_line(line: &str) {
    use std::io::Write as _;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&bytes);
}

/// How to build a [`WasmEngine`]. The default has no disk cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Root of the compile cache; `None` (the default) compiles every load in memory. The
    /// directory is created with mode 0700 if missing (and tightened to 0700 if not); it must
    /// belong to the process's effective uid.
    pub cache_dir: Option<PathBuf>,
    /// Compile on every core (wasmtime's parallel compilation). Default `false`: compiling never
    /// starts a thread, as a guest process must not carry a thread pool.
    pub compile_in_parallel: bool,
    /// Configure for serving `wasi:http/proxy` components ([`config::serve_config`]: epoch
    /// interruption, the pooling allocator). Its code differs, so it has its own fingerprint
    /// and cache directory. Default `false`: the command configuration.
    pub serve_http: bool,
    /// What the serving configuration's pooling allocator reserves (used only with
    /// `serve_http`). Default [`config::ServePool::default`].
    pub serve_pool: config::ServePool,
    /// Which compiler makes code ([`Tier`]). Default [`Tier::Optimized`]; ignored with
    /// `serve_http`, which always runs optimized code.
    pub tier: Tier,
}

/// The components among the preloaded programs.
fn preloaded_components(preloaded: &preload::Preloaded) -> Vec<&Component> {
    preloaded
        .entries
        .iter()
        .filter_map(|entry| match &entry.program {
            Program::Component(component) => Some(component),
            Program::Module(_) => None,
        })
        .collect()
}

/// What [`WasmEngine::optimize_stashed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptimizeOutcome {
    /// Compiled and stored; the stashed copy is removed.
    Compiled,
    /// The entry already exists (the copy is removed) or another process is compiling it.
    NotNeeded,
}

/// A compiled program, ready to run.
#[derive(Debug, Clone)]
pub enum Program {
    /// A core module, run under `wasi_snapshot_preview1`.
    Module(wasmtime::Module),
    /// A component, run as a WASI 0.2 command.
    Component(Component),
}

/// Where [`WasmEngine::load`] got the program from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Not in the cache: compiled and stored.
    Compiled,
    /// Loaded (mapped) from the cache without compiling.
    CacheHit,
    /// The cache entry failed its integrity check or did not load: compiled again and replaced.
    CacheCorruptRecompiled,
    /// No cache configured: compiled in memory.
    CacheDisabled,
    /// Another process was compiling the same wasm; waited for it and mapped its entry.
    CompiledConcurrently,
    /// Not in the cache: compiled into it by a helper process, then mapped.
    CompiledByHelper,
    /// Compiled, but the cache could not store it (full, read-only): run from memory.
    CompiledNotStored {
        /// Why the store failed.
        reason: String,
    },
}

impl LoadOutcome {
    /// What an operator should hear about, for the outcomes that mean a degraded cache.
    pub fn warning(&self) -> Option<String> {
        match self {
            LoadOutcome::CompiledNotStored { reason } => Some(format!(
                "the compile cache cannot store compiled code ({reason}); the guest runs from \
                 memory and every start compiles again"
            )),
            LoadOutcome::CacheCorruptRecompiled => {
                Some("a corrupt compile cache entry was replaced".to_owned())
            }
            _ => None,
        }
    }
}

impl fmt::Display for LoadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadOutcome::Compiled => "compiled",
            LoadOutcome::CacheHit => "cache hit",
            LoadOutcome::CacheCorruptRecompiled => "cache entry corrupt, recompiled",
            LoadOutcome::CacheDisabled => "compiled (cache disabled)",
            LoadOutcome::CompiledConcurrently => "compiled by a concurrent start, then mapped",
            LoadOutcome::CompiledByHelper => "compiled by a helper process, then mapped",
            LoadOutcome::CompiledNotStored { .. } => "compiled, not cached",
        })
    }
}

/// One wasmtime engine and its compile cache. A clone shares the engine, its linkers and its
/// preloaded programs.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    options: EngineOptions,
    fingerprint: String,
    cache: Option<Cache>,
    tier: Tier,
    linkers: Arc<run::CommandLinkers>,
    preloaded: Arc<Mutex<preload::Preloaded>>,
}

impl fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmEngine")
            .field("fingerprint", &self.fingerprint)
            .field("cache", &self.cache)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

impl WasmEngine {
    /// Creates the engine with [`config::engine_config`] and opens (creating if needed) the
    /// cache directory `<cache_dir>/<fingerprint>`.
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let mut config = match (options.serve_http, options.tier) {
            (true, _) => config::serve_config(options.serve_pool),
            (false, Tier::Optimized) => config::engine_config(),
            (false, Tier::Baseline) => config::baseline_config(),
        };
        config.parallel_compilation(options.compile_in_parallel);
        let engine = Engine::new(&config).map_err(|e| EngineError::Engine { source: e.into() })?;
        let tier = if options.serve_http {
            Tier::Optimized
        } else {
            options.tier
        };
        let fingerprint = config::fingerprint(&engine);
        let cache = match &options.cache_dir {
            Some(root) => Some(Cache::open(root, &fingerprint)?),
            None => None,
        };
        Ok(WasmEngine {
            engine,
            options,
            fingerprint,
            cache,
            tier,
            linkers: Arc::default(),
            preloaded: Arc::default(),
        })
    }

    /// The options this engine was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Keeps the most recently written programs of the cache that fit `budget` loaded, so that a process
    /// forked from this one finds them in memory ([`WasmEngine::load_if_cached`]): each entry
    /// verified as a lookup verifies it, mapped, and — a WASI 0.2 command — type-checked
    /// against the command linker, which is built here too. Rescans only when the cache
    /// directory changed since the last call; programs that are no longer among the newest are
    /// dropped. For a long-lived, single-threaded process that forks guests (the shim's
    /// starter); it never compiles.
    pub fn preload_recent(&self, budget: PreloadBudget) -> PreloadScan {
        let Some(cache) = &self.cache else {
            return PreloadScan {
                loaded: 0,
                changed: false,
            };
        };
        // Built here once rather than in every guest; a failure shows in the guest's run.
        if !self.options.serve_http {
            let _ = self.linkers.component(&self.engine);
        }
        let modified = preload::modified(cache.dir());
        let mut preloaded = self.lock_preloaded();
        let before = preloaded.entries.len();
        preloaded.entries.retain(preload::Entry::unchanged);
        if modified.is_some() && modified == preloaded.scanned && before == preloaded.entries.len()
        {
            return PreloadScan {
                loaded: before,
                changed: false,
            };
        }
        let mut entries = Vec::with_capacity(budget.count);
        for key in preload::recent_keys(cache.dir(), budget) {
            if let Some(index) = preloaded.entries.iter().position(|e| e.key == key) {
                entries.push(preloaded.entries.swap_remove(index));
                continue;
            }
            let Lookup::Verified { path, file } = cache.lookup(&key) else {
                continue;
            };
            let kind = match Engine::detect_precompiled_file(&path) {
                Ok(Some(wasmtime::Precompiled::Component)) => Kind::Component,
                Ok(Some(wasmtime::Precompiled::Module)) => Kind::Module,
                _ => continue,
            };
            let Some(identity) = preload::Identity::of_file(&file) else {
                continue;
            };
            match self.load_entry(kind, &path, &file) {
                Ok(program) => {
                    if let Program::Component(component) = &program
                        && matches!(
                            run::component_world_of(&self.engine, component),
                            Ok(HostWorld::Command)
                        )
                    {
                        // A component the linker refuses is still loaded: its guest reports
                        // the refusal as it would have.
                        let _ = self.linkers.command_pre(&self.engine, component);
                    }
                    entries.push(preload::Entry {
                        key,
                        program,
                        path,
                        identity,
                    });
                }
                Err(reason) => log::debug!("not preloading {}: {reason}", path.display()),
            }
        }
        preloaded.entries = entries;
        preloaded.scanned = modified;
        drop(
            self.linkers
                .take_checked_except(&preloaded_components(&preloaded)),
        );
        PreloadScan {
            loaded: preloaded.entries.len(),
            changed: true,
        }
    }

    /// Whether the program whose wasm hashes to `sha256` (hex) is preloaded.
    pub fn is_preloaded(&self, sha256: &str) -> bool {
        self.lock_preloaded().get(sha256).is_some()
    }

    /// Lets go of every preloaded program except the one whose wasm hashes to `keep`: for a
    /// process forked from the preloading one (a guest), which must keep nothing of other images
    /// mapped. Each other program's mapping is unmapped and its objects are leaked rather than
    /// freed — freeing would write to heap pages the process shares with its ancestors, copying
    /// each — so the caller must not use them again (they are gone from this engine) and should
    /// close the files they were mapped from: their paths are returned.
    pub fn forget_preloaded_except(&self, keep: Option<&str>) -> Vec<PathBuf> {
        let mut preloaded = self.lock_preloaded();
        let (kept, others): (Vec<_>, Vec<_>) = std::mem::take(&mut preloaded.entries)
            .into_iter()
            .partition(|entry| Some(entry.key.as_str()) == keep);
        preloaded.entries = kept;
        std::mem::forget(
            self.linkers
                .take_checked_except(&preloaded_components(&preloaded)),
        );
        others
            .into_iter()
            .map(preload::Entry::unmap_and_leak)
            .collect()
    }

    /// The preloaded program for `sha256` if its entry's file is still the one verified
    /// (one `stat`: a process forked long after the preload must not trust a changed entry).
    /// A changed one is taken out and leaked, as [`WasmEngine::forget_preloaded_except`] does,
    /// because this runs in forked processes.
    fn preloaded_program(&self, sha256: &str) -> Option<Program> {
        let mut preloaded = self.lock_preloaded();
        let index = preloaded.entries.iter().position(|e| e.key == sha256)?;
        if preloaded.entries[index].unchanged() {
            return Some(preloaded.entries[index].program.clone());
        }
        std::mem::forget(preloaded.entries.swap_remove(index));
        std::mem::forget(
            self.linkers
                .take_checked_except(&preloaded_components(&preloaded)),
        );
        None
    }

    fn lock_preloaded(&self) -> MutexGuard<'_, preload::Preloaded> {
        self.preloaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Compiles `wasm` (a core module or a component, as raw bytes) or loads it from the cache.
    ///
    /// With a cache, compiled code is always run from the mmapped cache file, so processes
    /// running the same program share its pages. Failing to write the cache (full disk,
    /// read-only file system) is logged and the freshly compiled code is used from memory.
    pub fn load(&self, wasm: &[u8]) -> Result<(Program, LoadOutcome), EngineError> {
        self.load_with(wasm, None)
    }

    /// [`WasmEngine::load`], where a miss is first handed to `compile_elsewhere`, which is to
    /// put the entry into this cache by other means (the shim runs a helper process that calls
    /// [`WasmEngine::compile_to_cache`], so the compiler's heap and code pages are not kept by
    /// a long-lived guest). It runs while this process holds the entry's compile lock, so it
    /// must not take that lock itself. If it fails or leaves no loadable entry, this process
    /// compiles itself, as `load` does.
    pub fn load_with<'a>(
        &self,
        wasm: impl Into<Wasm<'a>>,
        compile_elsewhere: Option<&dyn Fn() -> Result<(), String>>,
    ) -> Result<(Program, LoadOutcome), EngineError> {
        let wasm = wasm.into();
        let sha256 = wasm.sha256();
        let wasm = wasm.bytes();
        let kind = kind_of(wasm)?;
        let Some(cache) = &self.cache else {
            let program = match kind {
                Kind::Module => {
                    wasmtime::Module::from_binary(&self.engine, wasm).map(Program::Module)
                }
                Kind::Component => {
                    Component::from_binary(&self.engine, wasm).map(Program::Component)
                }
            }
            .map_err(|e| compile_error(kind, &sha256, e))?;
            return Ok((program, LoadOutcome::CacheDisabled));
        };

        let first = cache.lookup(&sha256);
        // On a miss, take the entry's compile lock and look again: a concurrent start may
        // have compiled it meanwhile.
        let lock = match &first {
            Lookup::Verified { .. } => None,
            _ => cache.compile_lock(&sha256, cache::COMPILE_LOCK_WAIT),
        };
        let lookup = match &lock {
            Some(lock) if lock.waited => match cache.lookup(&sha256) {
                Lookup::Verified { path, file } => {
                    if let Ok(program) = self.load_entry(kind, &path, &file) {
                        return Ok((program, LoadOutcome::CompiledConcurrently));
                    }
                    Lookup::Corrupt {
                        path: path.clone(),
                        reason: "the concurrently compiled entry does not load".into(),
                    }
                }
                other => other,
            },
            _ => first,
        };
        let outcome = match lookup {
            Lookup::Verified { path, file } => match self.load_entry(kind, &path, &file) {
                Ok(program) => {
                    log::debug!(
                        "cache hit for sha256:{sha256} (fingerprint {})",
                        self.fingerprint
                    );
                    return Ok((program, LoadOutcome::CacheHit));
                }
                Err(reason) => {
                    log::warn!(
                        "cache entry {} does not load ({reason}); recompiling",
                        path.display()
                    );
                    LoadOutcome::CacheCorruptRecompiled
                }
            },
            Lookup::Corrupt { path, reason } => {
                log::warn!(
                    "cache entry {} is corrupt ({reason}); recompiling",
                    path.display()
                );
                LoadOutcome::CacheCorruptRecompiled
            }
            Lookup::Missing => LoadOutcome::Compiled,
        };

        if let (Some(compile), Some(_)) = (compile_elsewhere, &lock) {
            match compile() {
                Ok(()) => match cache.lookup(&sha256) {
                    Lookup::Verified { path, file } => match self.load_entry(kind, &path, &file) {
                        Ok(program) if outcome == LoadOutcome::Compiled => {
                            return Ok((program, LoadOutcome::CompiledByHelper));
                        }
                        Ok(program) => return Ok((program, outcome)),
                        Err(reason) => log::warn!(
                            "the helper's entry {} does not load ({reason}); compiling here",
                            path.display()
                        ),
                    },
                    _ => log::warn!("the compile helper left no entry for sha256:{sha256}"),
                },
                Err(e) => log::debug!("compile helper failed ({e}); compiling here"),
            }
        }

        log::debug!(
            "compiling {} sha256:{sha256} (fingerprint {})",
            kind.name(),
            self.fingerprint
        );
        let code = match kind {
            Kind::Module => self.engine.precompile_module(wasm),
            Kind::Component => self.engine.precompile_component(wasm),
        }
        .map_err(|e| compile_error(kind, &sha256, e))?;
        let stored = cache.store(&sha256, &code);
        let (from, outcome) = match &stored {
            Ok(path) => (cache::Code::Entry { path, hashed: None }, outcome),
            Err(e) => {
                log::warn!("cannot store sha256:{sha256} in the compile cache: {e}");
                let reason = e.to_string();
                (
                    cache::Code::Fresh(&code),
                    LoadOutcome::CompiledNotStored { reason },
                )
            }
        };
        let program = cache::deserialize(&self.engine, kind, from).map_err(|reason| {
            EngineError::LoadCompiled {
                path: stored.as_ref().ok().cloned(),
                source: reason.into(),
            }
        })?;
        Ok((program, outcome))
    }

    /// The program from the cache if it is preloaded ([`WasmEngine::preload_recent`]) or its
    /// entry is there and loads; `None` otherwise (no cache, a miss, or an entry that
    /// [`WasmEngine::load`] would replace). Never compiles and takes no lock.
    pub fn load_if_cached<'a>(
        &self,
        wasm: impl Into<Wasm<'a>>,
    ) -> Result<Option<Program>, EngineError> {
        let wasm = wasm.into();
        let kind = kind_of(wasm.bytes())?;
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let sha256 = wasm.sha256();
        if let Some(program) = self.preloaded_program(&sha256) {
            return Ok(Some(program));
        }
        Ok(match cache.lookup(&sha256) {
            Lookup::Verified { path, file } => self.load_entry(kind, &path, &file).ok(),
            _ => None,
        })
    }

    /// Keeps a copy of `wasm` in this engine's cache directory for
    /// [`WasmEngine::optimize_stashed`] in another process, and returns its path.
    pub fn stash_for_optimizer<'a>(
        &self,
        wasm: impl Into<Wasm<'a>>,
    ) -> Result<PathBuf, EngineError> {
        let wasm = wasm.into();
        let cache = self.cache.as_ref().ok_or(EngineError::NoCache)?;
        let sha256 = wasm.sha256();
        cache
            .store_source(&sha256, wasm.bytes())
            .map_err(|source| EngineError::Store { sha256, source })
    }

    /// Compiles the copy [`WasmEngine::stash_for_optimizer`] left at `stashed` into this
    /// engine's cache, unless its entry exists or another process holds its compile lock, and
    /// removes the copy once it is not needed. The copy must hash to its name.
    pub fn optimize_stashed(&self, stashed: &Path) -> Result<OptimizeOutcome, EngineError> {
        let cache = self.cache.as_ref().ok_or(EngineError::NoCache)?;
        let key = cache
            .source_key(stashed)
            .map_err(|message| EngineError::Stash {
                path: stashed.to_owned(),
                message,
            })?;
        let Some(_lock) = cache.try_compile_lock(&key) else {
            return Ok(OptimizeOutcome::NotNeeded);
        };
        let remove = || {
            if let Err(e) = std::fs::remove_file(stashed) {
                log::warn!("cannot remove {}: {e}", stashed.display());
            }
        };
        if matches!(cache.lookup(&key), Lookup::Verified { .. }) {
            remove();
            return Ok(OptimizeOutcome::NotNeeded);
        }
        let wasm = std::fs::read(stashed).map_err(|e| EngineError::Stash {
            path: stashed.to_owned(),
            message: format!("cannot read: {e}"),
        })?;
        let actual = hex::encode(Sha256::digest(&wasm));
        if actual != key {
            remove();
            return Err(EngineError::Stash {
                path: stashed.to_owned(),
                message: format!("its content hashes to {actual}, not to its name"),
            });
        }
        let compiled = self.compile_to_cache(&wasm);
        // A program that does not compile now will not compile later either.
        remove();
        compiled.map(|_| OptimizeOutcome::Compiled)
    }

    /// Which compiler this engine's code comes from.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Maps a cache entry that [`Cache::lookup`] just verified.
    fn load_entry(&self, kind: Kind, path: &Path, file: &File) -> Result<Program, String> {
        let code = cache::Code::Entry {
            path,
            hashed: Some(file),
        };
        cache::deserialize(&self.engine, kind, code)
    }

    /// Compiles `wasm` and stores it in the cache, replacing any entry; takes no compile lock
    /// (the caller of [`WasmEngine::load_with`] holds it). For the compile helper process.
    pub fn compile_to_cache(&self, wasm: &[u8]) -> Result<PathBuf, EngineError> {
        let cache = self.cache.as_ref().ok_or(EngineError::NoCache)?;
        let kind = kind_of(wasm)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        let code = match kind {
            Kind::Module => self.engine.precompile_module(wasm),
            Kind::Component => self.engine.precompile_component(wasm),
        }
        .map_err(|e| compile_error(kind, &sha256, e))?;
        cache
            .store(&sha256, &code)
            .map_err(|source| EngineError::Store { sha256, source })
    }

    /// Checks that this host provides every import of `program` and `policy` allows it: by
    /// name first, reporting every refused import ([`EngineError::Refused`]), then by type
    /// with the same linker [`WasmEngine::run`] uses (semver-aware for components: an import
    /// of `@0.2.0` is satisfied by the host's `@0.2.x`). Nothing is instantiated.
    pub fn check_imports(&self, program: &Program, policy: &Policy) -> Result<(), EngineError> {
        run::check_imports(&self.engine, &self.linkers, program, policy)
    }

    /// The name-level part of [`WasmEngine::check_imports`] for import names decoded without
    /// compiling (`ns:pkg/iface@version` for a component, `module.function` for a module):
    /// every import the host lacks or `policy` denies. Types are not checked.
    pub fn check_import_names(
        &self,
        component: bool,
        imports: &[String],
        exports: &[String],
        policy: &Policy,
    ) -> Result<(), EngineError> {
        let kind = if component { "component" } else { "module" };
        let refused = |refusal| EngineError::Refused { kind, refusal };
        if component {
            let world = HostWorld::for_exports(exports.iter().map(String::as_str))
                .map_err(|message| EngineError::Unsatisfied { kind, message })?;
            return host::check_component_names(
                world,
                imports.iter().map(String::as_str),
                exports.iter().map(String::as_str),
                policy,
            )
            .map_err(refused);
        }
        let provided = run::preview1_functions(&self.engine, &self.linkers)?;
        let split = imports
            .iter()
            .map(|i| i.split_once('.').unwrap_or((i.as_str(), "")));
        host::check_module_names(split, &provided, policy).map_err(refused)
    }

    /// The top-level import names of `program`: `ns:pkg/iface@version` for components,
    /// `module.function` for modules, in the program's order.
    pub fn imports(&self, program: &Program) -> Vec<String> {
        match program {
            Program::Module(module) => module
                .imports()
                .map(|i| format!("{}.{}", i.module(), i.name()))
                .collect(),
            Program::Component(component) => run::component_import_names(&self.engine, component),
        }
    }

    /// The world `program` runs in: a module's is preview 1 (`None`); a component's is
    /// chosen by its exports ([`HostWorld::for_exports`]).
    pub fn world_of(&self, program: &Program) -> Result<Option<HostWorld>, EngineError> {
        match program {
            Program::Module(_) => Ok(None),
            Program::Component(component) => {
                run::component_world_of(&self.engine, component).map(Some)
            }
        }
    }

    /// The worlds this host runs guests in, from the linkers [`WasmEngine::run`] and
    /// [`WasmEngine::serve`] use: the command and HTTP worlds of WASI 0.2 and 0.3
    /// ([`HostWorld::ALL`]) for components, and `wasi_snapshot_preview1` for modules.
    pub fn worlds(&self) -> Result<Vec<World>, EngineError> {
        let preview1 = run::preview1_functions(&self.engine, &self.linkers)?;
        let components = HostWorld::ALL.iter().map(|world| world.world());
        Ok(components
            .chain([World {
                name: host::PREVIEW1_MODULE.to_owned(),
                kind: "module",
                provides: preview1
                    .into_iter()
                    .map(|f| format!("{}.{f}", host::PREVIEW1_MODULE))
                    .collect(),
            }])
            .collect())
    }

    /// Runs `program` to completion on the current thread and returns how the guest ended.
    /// Errors are reserved for failures to start it (bad preopen, missing import, missing
    /// entry point, ...).
    pub fn run(&self, program: &Program, spec: &RunSpec) -> Result<ExitStatus, EngineError> {
        match program {
            Program::Module(module) => run::run_module(&self.engine, &self.linkers, module, spec),
            Program::Component(component) => {
                run::run_component(&self.engine, &self.linkers, component, spec)
            }
        }
    }

    /// Serves a `wasi:http/proxy` component on `listener` (see [`ServeSpec`]) with `workers`
    /// threads, each its own single-threaded tokio runtime, until the future `shutdown` makes
    /// (on the calling thread, itself one of the workers) resolves; then drains and returns. The engine must have been created with
    /// [`EngineOptions::serve_http`].
    pub fn serve<F>(
        &self,
        program: &Program,
        listener: std::net::TcpListener,
        spec: ServeSpec,
        workers: usize,
        shutdown: impl FnOnce() -> F,
    ) -> Result<ServeSummary, EngineError>
    where
        F: std::future::Future<Output = ()>,
    {
        let Program::Component(component) = program else {
            return Err(EngineError::Unsatisfied {
                kind: "module",
                message: "only components can serve wasi:http".to_owned(),
            });
        };
        serve::serve(&self.engine, component, listener, spec, workers, shutdown)
    }

    /// Hex sha256 identifying the engine configuration and wasmtime version; the name of this
    /// engine's directory in the cache.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

fn kind_of(wasm: &[u8]) -> Result<Kind, EngineError> {
    if wasmparser::Parser::is_component(wasm) {
        Ok(Kind::Component)
    } else if wasmparser::Parser::is_core_wasm(wasm) {
        Ok(Kind::Module)
    } else {
        Err(EngineError::NotWasm {
            found: wasm.iter().take(8).copied().collect(),
        })
    }
}

fn compile_error(kind: Kind, sha256: &str, error: wasmtime::Error) -> EngineError {
    EngineError::Compile {
        kind: kind.name(),
        sha256: sha256.to_owned(),
        source: error.into(),
    }
}
