//! Compiling ahead: `import` and `pull` leave every wasm program they store compiled in the
//! node's compile cache, so the first container of an image starts as fast as the hundredth.
//!
//! The entry is the one a guest would write: same cache directory (`--cache-dir`, else
//! `WASMCELL_CACHE_DIR`, else `/var/cache/wasmcell`), same engine configuration and fingerprint
//! (the serving configuration for a `wasi:http/proxy` component), keyed by the wasm's sha256,
//! under the entry's compile lock. Compiling here uses every core: this process is short-lived,
//! so its compiler threads and heap cost nothing afterwards. A program that cannot be compiled
//! is not an import error: the image is stored all the same, and the shim refuses it at create
//! with the reason, as it would have without this step.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use wasmcell_engine::{EngineOptions, HostWorld, LoadOutcome, WasmEngine};
use wasmcell_oci::Image;
use wasmcell_oci::wasm::{decode_wasm_interface, has_wasm_magic};

use crate::program::program;

/// Where `import` and `pull` compile ahead.
#[derive(Debug, Clone, Args)]
pub struct CompileArgs {
    /// The compile cache the shim reads (the shim's `WASMCELL_CACHE_DIR`).
    #[arg(
        long,
        value_name = "DIR",
        env = wasmcell_engine::CACHE_DIR_ENV,
        default_value = wasmcell_engine::DEFAULT_CACHE_DIR
    )]
    pub cache_dir: PathBuf,
    /// Store the image without compiling its program ahead (the first container compiles it).
    #[arg(long)]
    pub no_compile: bool,
}

/// Compiles the program of every wasm image among `images` into the cache, reporting each on
/// stdout (or, when it cannot be compiled, warning on stderr).
pub fn compile_images(images: &[Image], args: &CompileArgs) {
    if args.no_compile || args.cache_dir.as_os_str().is_empty() {
        return;
    }
    for image in images.iter().filter(|i| i.runs_wasm()) {
        let name = image
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| image.manifest_descriptor.digest().to_string());
        match compile(image, args) {
            Ok((outcome, seconds)) => {
                let done = match outcome {
                    LoadOutcome::CacheHit => "already compiled".to_owned(),
                    _ => format!("compiled ahead in {seconds:.2} s"),
                };
                println!("{name}: {done} ({})", args.cache_dir.display());
            }
            Err(reason) => eprintln!(
                "wasmcell: warning: {name}: not compiled ahead ({reason}); its first container \
                 compiles it"
            ),
        }
    }
}

fn compile(image: &Image, args: &CompileArgs) -> Result<(LoadOutcome, f64), String> {
    let wasm = program(image)?;
    if !has_wasm_magic(&wasm) {
        return Err("the program is not a wasm binary".to_owned());
    }
    // The guest serves a component that exports the HTTP handler, with the serving engine
    // configuration, whose compiled code (and cache fingerprint) differs.
    let serve_http = match decode_wasm_interface(&wasm) {
        Ok(info) => HostWorld::for_exports(info.exports.iter().map(String::as_str))?,
        Err(e) => return Err(e.to_string()),
    }
    .is_served();
    let engine = WasmEngine::new(EngineOptions {
        cache_dir: Some(args.cache_dir.clone()),
        compile_in_parallel: true,
        serve_http,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (_, outcome) = engine.load(&wasm).map_err(|e| e.to_string())?;
    if let Some(warning) = outcome.warning() {
        return Err(warning);
    }
    Ok((outcome, started.elapsed().as_secs_f64()))
}
