//! The one wasmtime [`Config`] wasmcell runs with, and the fingerprint that names it.
//!
//! Everything that decides whether compiled code may be reused lives here: a setting changed in
//! [`engine_config`] changes [`fingerprint`], which moves the compile cache to a fresh
//! directory instead of loading code built for another configuration.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;

use sha2::{Digest as _, Sha256};
use wasmtime::{Config, Engine, OptLevel, Strategy, WasmBacktraceDetails};

/// The wasmtime release this crate is built against (the workspace pins it with `=`); a unit
/// test checks it against `Cargo.lock`.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Bumped whenever the cache layout or the meaning of an entry changes.
const CACHE_FORMAT: &str = "wasmcell-engine cache v2";

/// The engine configuration. Settings, with wasmtime's defaults where not stated otherwise:
///
/// - Cranelift, `OptLevel::Speed` (wasmtime's default).
/// - Serial compilation (`parallel_compilation(false)`), so compiling never starts threads;
///   the short-lived compile helper turns it on (`EngineOptions::compile_in_parallel`). Both
///   produce the same code and the same [`fingerprint`].
/// - Component model on (the default with the `component-model` feature), with its async ABI
///   (`wasm_component_model_async`: streams, futures and async lifts), which WASI 0.3
///   components are built on; 0.2 components do not use it and run as before.
/// - `memory_init_cow(true)` (the default): a module's initial heap image is mapped
///   copy-on-write from the mmapped compiled code, so instantiation copies nothing and
///   processes running the same cached code share those pages.
/// - Memory reservation left at wasmtime's 64-bit defaults: 4 GiB of *virtual* address space
///   per linear memory plus a 32 MiB guard, which removes bounds checks from 32-bit memories.
///   Only touched pages cost resident memory; do not put the guest under an `RLIMIT_AS`.
/// - Backtraces of at most 20 frames (wasmtime's default) so traps carry a wasm backtrace;
///   `wasm_backtrace_details(Disable)` so the `WASMTIME_BACKTRACE_DETAILS` environment variable
///   cannot change behaviour between processes (no DWARF is parsed).
/// - Signals-based traps (default): wasmtime installs SIGSEGV/SIGBUS/SIGILL/SIGFPE handlers in
///   the process when the first engine is created.
/// - No epoch interruption or fuel: a guest is stopped by signalling its process.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .parallel_compilation(false)
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        .memory_init_cow(true)
        .wasm_backtrace_max_frames(NonZeroUsize::new(20))
        .wasm_backtrace_details(WasmBacktraceDetails::Disable);
    config
}

/// Which compiler makes a program's code. Each tier has its own [`fingerprint`], so their cache
/// entries never mix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift at `OptLevel::Speed` ([`engine_config`]): the code every program runs with
    /// once it is compiled. The default.
    #[default]
    Optimized,
    /// Winch, wasmtime's single-pass baseline compiler ([`baseline_config`]): code in a fraction
    /// of Cranelift's time that runs slower. Only for a command's first start while the
    /// optimized code is compiled in the background; never for serving HTTP.
    Baseline,
}

/// [`engine_config`] with Winch in place of Cranelift, every other setting the same. Winch
/// compiles in one pass without optimizing (measured on the demo component: see the README's
/// performance section), so a cold start does not wait for Cranelift. Its code is slower, which
/// is why it is only ever a stand-in until the optimized entry exists.
pub fn baseline_config() -> Config {
    let mut config = engine_config();
    config.strategy(Strategy::Winch);
    config
}

/// What the pooling allocator of a serving engine reserves: slots for the instances that can
/// be alive at once, and how far each linear memory may grow. Neither changes compiled code,
/// so engines sized differently share a cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServePool {
    /// Component instances alive at once: the server's concurrency limit. Default 64.
    pub instances: u32,
    /// Bytes one linear memory may grow to; `None` leaves wasmtime's 4 GiB. Default `None`
    /// (the shim passes the per-instance memory cap, itself bounded by the container's limit).
    pub max_memory: Option<u64>,
}

impl Default for ServePool {
    fn default() -> Self {
        ServePool {
            instances: 64,
            max_memory: None,
        }
    }
}

impl ServePool {
    /// Core instances, memories and tables one component may hold: a Rust or C component is
    /// its module plus a few adapter and shim modules, with one memory and a table or two;
    /// this leaves room for larger compositions. A component past it fails to instantiate with
    /// wasmtime's message, answered 500.
    pub const PER_COMPONENT: u32 = 16;
}

/// [`engine_config`] for serving `wasi:http/proxy` components: epoch interruption (the
/// server advances the epoch every [`crate::EPOCH_TICK`], so a busy handler yields and its
/// deadline can stop it) and the pooling allocator sized by `pool` (instances come from
/// pre-reserved slots, and a module's initial heap is mapped copy-on-write, so a fresh instance
/// per request costs microseconds). Slots are reserved address space, not memory: only touched
/// pages are resident.
///
/// Between requests a slot is reset by finding the pages the request dirtied (the
/// `PAGEMAP_SCAN` ioctl, Linux 6.7 and later; elsewhere the lowest pages) and copying the
/// heap image or zeros back over them, up to [`KEEP_RESIDENT`] bytes a slot; only what lies
/// beyond is given back with `madvise`. An `madvise` per request unmaps pages, which costs a
/// TLB shootdown on every CPU the server runs on (measured: a tenth of the guest's CPU time at
/// 50 connections); a copy does not, and the next instance finds the pages already mapped.
/// What this keeps resident is bounded by what requests dirty, at most [`KEEP_RESIDENT`] per
/// slot in use.
pub fn serve_config(pool: ServePool) -> Config {
    let mut config = engine_config();
    let instances = pool.instances.max(1);
    let core = instances.saturating_mul(ServePool::PER_COMPONENT);
    let mut pooling = wasmtime::PoolingAllocationConfig::default();
    pooling
        .total_component_instances(instances)
        .total_core_instances(core)
        .total_memories(core)
        .total_tables(core)
        .total_stacks(instances)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    if let Some(max) = pool.max_memory {
        pooling.max_memory_size(usize::try_from(max).unwrap_or(usize::MAX));
    }
    config
        .epoch_interruption(true)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
    config
}

/// Bytes of each pooled memory and table reset by copying rather than unmapped between
/// instances (see [`serve_config`]).
pub const KEEP_RESIDENT: usize = 512 << 10;

/// Hex sha256 over the cache format, the wasmtime version and
/// [`Engine::precompile_compatibility_hash`] (target, Cranelift and ISA flags, tunables, wasm
/// features). Deterministic across processes on one machine; differs between CPUs with
/// different detected ISA features, so hosts sharing a cache directory never mix code.
pub fn fingerprint(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(CACHE_FORMAT.as_bytes());
    hasher.write(&[0]);
    hasher.write(WASMTIME_VERSION.as_bytes());
    hasher.write(&[0]);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(hasher.0.finalize())
}

/// Feeds a [`Hash`] implementation into sha256, so the result is stable across processes (std's
/// `DefaultHasher` is not meant to be persisted).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Not used for the fingerprint (which takes the whole digest); the first 8 bytes of the
    /// digest so far.
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_hex() -> wasmtime::Result<()> {
        let a = fingerprint(&Engine::new(&engine_config())?);
        let b = fingerprint(&Engine::new(&engine_config())?);
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        Ok(())
    }

    #[test]
    fn the_compile_helper_writes_code_guests_load() -> wasmtime::Result<()> {
        let mut parallel = engine_config();
        parallel.parallel_compilation(true);
        assert_eq!(
            fingerprint(&Engine::new(&engine_config())?),
            fingerprint(&Engine::new(&parallel)?)
        );
        Ok(())
    }

    #[test]
    fn servers_sized_differently_share_compiled_code() -> wasmtime::Result<()> {
        let small = ServePool {
            instances: 2,
            max_memory: Some(16 << 20),
        };
        assert_eq!(
            fingerprint(&Engine::new(&serve_config(ServePool::default()))?),
            fingerprint(&Engine::new(&serve_config(small))?)
        );
        Ok(())
    }

    #[test]
    fn fingerprint_follows_the_configuration() -> wasmtime::Result<()> {
        let mut other = engine_config();
        other.cranelift_opt_level(OptLevel::None);
        assert_ne!(
            fingerprint(&Engine::new(&engine_config())?),
            fingerprint(&Engine::new(&other)?)
        );
        Ok(())
    }

    #[test]
    fn the_baseline_tier_has_a_fingerprint_of_its_own() -> wasmtime::Result<()> {
        assert_ne!(
            fingerprint(&Engine::new(&engine_config())?),
            fingerprint(&Engine::new(&baseline_config())?)
        );
        Ok(())
    }

    #[test]
    fn wasmtime_version_matches_the_lock_file() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap_or_default();
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"').to_owned());
        assert_eq!(locked.as_deref(), Some(WASMTIME_VERSION));
    }
}
