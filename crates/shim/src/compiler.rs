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

//!
//! The background optimizer is the same binary as `__wasmcell-optimize COPY CACHE_DIR`: a
//! guest that started on baseline code leaves a copy of its wasm in the cache, and the shim
//! starts this detached, idle-priority process to compile it with Cranelift, so the next start
//! maps optimized code. It runs outside every container (a container's PID namespace and
//! cgroup end with it) and outlives a shim that exits first; one compile of a program runs at
//! a time (the entry's compile lock), and the copy is removed when done.

use std::path::Path;
use std::process::{Command, Stdio};

use log::{info, warn};
use wasmcell_engine::{EngineOptions, OptimizeOutcome, Tier, WasmEngine};

/// First argument that selects compile-helper mode.
pub const COMPILE_ARG: &str = "__wasmcell-compile";
/// First argument that selects background-optimizer mode.
pub const OPTIMIZE_ARG: &str = "__wasmcell-optimize";

/// What the helper compiles for: the last argument of compile-helper mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Optimized code for running a command.
    Run,
    /// Optimized code for serving HTTP (the engine configuration differs).
    Serve,
    /// Baseline (Winch) code for a command's cold start.
    Baseline,
}

impl Purpose {
    const ALL: [Purpose; 3] = [Purpose::Run, Purpose::Serve, Purpose::Baseline];

    fn arg(self) -> &'static str {
        match self {
            Purpose::Run => "run",
            Purpose::Serve => "serve",
            Purpose::Baseline => "baseline",
        }
    }
}

/// Runs the helper for `program` into the cache at `cache_dir` and waits for it.
pub fn compile_in_helper(program: &Path, cache_dir: &Path, purpose: Purpose) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let output = Command::new(exe)
        .arg(COMPILE_ARG)
        .arg(program)
        .arg(cache_dir)
        .arg(std::process::id().to_string())
        .arg(purpose.arg())
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
            "usage: containerd-shim-wasmcell-v1 {COMPILE_ARG} PROGRAM CACHE_DIR PARENT_PID run|serve|baseline"
        );
        return 2;
    };
    let Some(purpose) = Purpose::ALL
        .into_iter()
        .find(|p| purpose.to_str() == Some(p.arg()))
    else {
        eprintln!("the purpose must be run, serve or baseline, not {purpose:?}");
        return 2;
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
                serve_http: purpose == Purpose::Serve,
                tier: if purpose == Purpose::Baseline {
                    Tier::Baseline
                } else {
                    Tier::Optimized
                },
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

/// Starts the background optimizer for the wasm copy at `copy` (see the module docs), unless
/// `copy` is not in `cache_dir`. Does not wait: the shim's reaper collects it.
pub fn optimize_in_background(exe: &Path, copy: &Path, cache_dir: &Path) {
    if !copy.starts_with(cache_dir) {
        warn!(
            "not optimizing {}: it is not in the compile cache {}",
            copy.display(),
            cache_dir.display()
        );
        return;
    }
    let started = Command::new(exe)
        .arg(OPTIMIZE_ARG)
        .arg(copy)
        .arg(cache_dir)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match started {
        Ok(child) => info!(
            "compiling {} to optimized code in the background (pid {})",
            copy.display(),
            child.id()
        ),
        Err(e) => warn!("cannot start the background optimizer: {e}"),
    }
}

/// Entry point of background-optimizer mode; returns the process exit code.
pub fn optimize_main(args: &[std::ffi::OsString]) -> i32 {
    let [copy, cache_dir] = args else {
        eprintln!("usage: containerd-shim-wasmcell-v1 {OPTIMIZE_ARG} WASM_COPY CACHE_DIR");
        return 2;
    };
    // Its own session, so a signal to the shim's process group does not reach it, and idle
    // priority, so it only ever uses CPU that starting and running containers leave.
    let _ = nix::unistd::setsid();
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the one sched_param we pass by reference for the
    // duration of the call; pid 0 is this process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
    if rc != 0 {
        eprintln!(
            "cannot lower this process to idle priority: {}",
            std::io::Error::last_os_error()
        );
    }
    let result = WasmEngine::new(EngineOptions {
        cache_dir: Some(cache_dir.into()),
        compile_in_parallel: true,
        ..Default::default()
    })
    .and_then(|engine| engine.optimize_stashed(Path::new(copy)));
    match result {
        Ok(OptimizeOutcome::Compiled | OptimizeOutcome::NotNeeded) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
