//! The compile helper: a guest whose program is not in the compile cache does not compile it
//! itself but runs this binary as `__wasmcell-compile PROGRAM CACHE_DIR PARENT_PID run|serve`
//! and waits, holding the entry's compile lock, then maps the entry like any cache hit.
//!
//! Why a process of its own: a compile leaves the compiling process with Cranelift's heap
//! (about 10 MiB for the demo component, which glibc keeps after it is freed) and the
//! compiler's code pages, which no other process shares; a guest that compiled kept both for
//! its whole life, so a pod of cold-started containers used about twice runc's memory. The
//! helper also compiles on every core (wasmtime's parallel compilation), which a guest must not
//! do: guests carry no thread pool. It runs before the guest confines itself, in the guest's
//! cgroup (its memory counts against the container's limit) and PID namespace, and dies with
//! the guest (parent-death signal). If it fails for any reason the guest compiles itself, so
//! the helper can only make a start cheaper, never fail it.

use std::path::Path;
use std::process::{Command, Stdio};

use wasmcell_engine::{EngineOptions, WasmEngine};

/// First argument that selects compile-helper mode.
pub const COMPILE_ARG: &str = "__wasmcell-compile";
/// Last argument: compile for running a command.
const RUN: &str = "run";
/// Last argument: compile for serving HTTP (the engine configuration differs).
const SERVE: &str = "serve";

/// Runs the helper for `program` into the cache at `cache_dir` and waits for it; with
/// `serve_http` it compiles for the HTTP serving configuration.
pub fn compile_in_helper(program: &Path, cache_dir: &Path, serve_http: bool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let output = Command::new(exe)
        .arg(COMPILE_ARG)
        .arg(program)
        .arg(cache_dir)
        .arg(std::process::id().to_string())
        .arg(if serve_http { SERVE } else { RUN })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("starting the compile helper: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the compile helper {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Entry point of compile-helper mode; returns the process exit code.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let [program, cache_dir, parent, purpose] = args else {
        eprintln!(
            "usage: containerd-shim-wasmcell-v1 {COMPILE_ARG} PROGRAM CACHE_DIR PARENT_PID run|serve"
        );
        return 2;
    };
    let serve_http = match purpose.to_str() {
        Some(RUN) => false,
        Some(SERVE) => true,
        _ => {
            eprintln!("the purpose must be {RUN} or {SERVE}, not {purpose:?}");
            return 2;
        }
    };
    // Die with the guest that waits for us; if it is already gone we were re-parented.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("cannot set the parent-death signal: {e}");
        return 1;
    }
    if parent.to_str() != Some(&std::os::unix::process::parent_id().to_string()) {
        eprintln!("the guest that started the compile helper is gone");
        return 1;
    }
    let program = Path::new(program);
    let result = std::fs::read(program)
        .map_err(|e| format!("reading {}: {e}", program.display()))
        .and_then(|wasm| {
            let engine = WasmEngine::new(EngineOptions {
                cache_dir: Some(cache_dir.into()),
                compile_in_parallel: true,
                serve_http,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
            engine.compile_to_cache(&wasm).map_err(|e| e.to_string())
        });
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
