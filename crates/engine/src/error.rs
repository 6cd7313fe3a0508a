//! [`EngineError`]: everything that stops the engine from producing a program or an exit
//! status. What the guest itself does (exit codes, traps, hitting its memory limit) is not an
//! error but an [`ExitStatus`](crate::ExitStatus).

use std::io;
use std::path::PathBuf;

/// A boxed wasmtime error (wasmtime's own error type does not implement `std::error::Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the engine could not set up, compile, load or start a program.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the engine configuration (e.g. the host CPU lacks a required feature).
    #[error("cannot create the wasmtime engine")]
    Engine {
        #[source]
        source: BoxError,
    },
    /// The cache directory could not be created, inspected or secured.
    #[error("cache directory {path}: {action}")]
    CacheDir {
        path: PathBuf,
        /// What was being done, e.g. "create" or "set mode 0700".
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The cache directory belongs to another user, so its entries cannot be trusted.
    #[error("cache directory {path} is owned by uid {owner}, not by this process's uid {euid}")]
    CacheDirNotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    /// The bytes start with neither the core-module nor the component preamble.
    #[error(
        "not a WebAssembly binary: expected a module or component preamble, found {found:02x?}"
    )]
    NotWasm {
        /// Up to the first 8 bytes of the input.
        found: Vec<u8>,
    },
    /// Validation or compilation failed (invalid wasm, unsupported proposal, ...).
    #[error("cannot compile the {kind} (sha256:{sha256})")]
    Compile {
        /// "module" or "component".
        kind: &'static str,
        sha256: String,
        #[source]
        source: BoxError,
    },
    /// The HTTP listener could not be handed to the runtime.
    #[error("cannot serve on the listening socket")]
    Listen {
        #[source]
        source: std::io::Error,
    },
    /// [`crate::WasmEngine::compile_to_cache`] on an engine without a cache.
    #[error("no compile cache is configured to compile into")]
    NoCache,
    /// A wasm copy left for a background compile is not one, or is not what its name says.
    #[error("wasm copy {path} for the background compile: {message}")]
    Stash {
        /// The copy.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Compiled code could not be written to the cache.
    #[error("cannot store sha256:{sha256} in the compile cache")]
    Store {
        sha256: String,
        #[source]
        source: std::io::Error,
    },
    /// Code this process just compiled could not be loaded back.
    #[error(
        "cannot load freshly compiled code{}",
        path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default()
    )]
    LoadCompiled {
        /// The cache entry, or `None` when the code could not be stored and was kept in memory.
        path: Option<PathBuf>,
        #[source]
        source: BoxError,
    },
    /// WASI could not be added to the linker.
    #[error("cannot link WASI {world}")]
    Link {
        /// "preview1" or "0.2".
        world: &'static str,
        #[source]
        source: BoxError,
    },
    /// Imports the host does not provide by name, or that the operator's policy denies; every
    /// one is listed.
    #[error("the {kind} cannot run on this host: {refusal}")]
    Refused {
        /// "module" or "component".
        kind: &'static str,
        refusal: crate::host::Refusal,
    },
    /// An import the host provides by name, but with another type.
    #[error("the {kind} cannot run on this host: {message}")]
    Unsatisfied {
        /// "module" or "component".
        kind: &'static str,
        /// wasmtime's type-check message, naming the import.
        message: String,
    },
    /// A preopened directory could not be opened on the host.
    #[error("cannot preopen host directory {host} as {guest}")]
    Preopen {
        host: PathBuf,
        guest: String,
        #[source]
        source: BoxError,
    },
    /// A stdio file given in [`Stdio::Files`](crate::Stdio::Files) could not be duplicated.
    #[error("cannot duplicate the {stream} file descriptor")]
    Stdio {
        /// "stdin", "stdout" or "stderr".
        stream: &'static str,
        #[source]
        source: io::Error,
    },
    /// The I/O runtime WASI needs could not be started.
    #[error("cannot start the WASI I/O runtime")]
    Runtime {
        #[source]
        source: io::Error,
    },
    /// Instantiation failed for a reason other than a trap, an exit or the memory limit, most
    /// often an import the host does not provide.
    #[error("cannot instantiate the {kind}")]
    Instantiate {
        /// "module" or "component".
        kind: &'static str,
        #[source]
        source: BoxError,
    },
    /// The requested entry point is not exported.
    #[error("the {kind} exports no function {name:?}")]
    EntryNotFound {
        /// "module" or "component".
        kind: &'static str,
        name: String,
    },
    /// The entry point exists but is not a function without parameters and results.
    #[error("export {name:?} is not a function without parameters and results")]
    EntryType {
        name: String,
        #[source]
        source: BoxError,
    },
}
