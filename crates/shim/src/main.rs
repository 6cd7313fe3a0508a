//! `containerd-shim-wasmcell-v1`: containerd's shim for wasm containers.
//!
//! One binary, three modes. Started by containerd it is the shim (task service over ttrpc, on a
//! single-threaded tokio runtime). Exec'd by the shim with `__wasmcell-guest PLAN` it is a guest
//! process that runs exactly one wasm program; exec'd by a guest with `__wasmcell-compile …` it
//! compiles that program into the cache and exits; started by the shim with
//! `__wasmcell-optimize …` it compiles a cold-started program's optimized code in the
//! background. The mode is decided before any runtime or
//! thread exists.

mod bootstrap;
mod cgroup;
mod compiler;
mod confine;
mod container;
mod content;
#[cfg(debug_assertions)]
mod drill;
mod footprint;
mod group;
mod guest;
mod http;
mod plan;
mod policy;
mod process;
mod rootfs;
mod service;
mod shim;
mod shim_log;
mod signatures;
mod stdio;
mod zygote;

use std::path::Path;

fn main() {
    let mut args = std::env::args_os().skip(1);
    if let Some(first) = args.next()
        && first == guest::GUEST_ARG
    {
        let code = match args.next() {
            Some(plan) => guest::main(Path::new(&plan)),
            None => {
                eprintln!(
                    "usage: containerd-shim-wasmcell-v1 {} PLAN",
                    guest::GUEST_ARG
                );
                guest::EXIT_SETUP
            }
        };
        std::process::exit(code);
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == compiler::COMPILE_ARG)
    {
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        std::process::exit(compiler::main(&args));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == compiler::OPTIMIZE_ARG)
    {
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        std::process::exit(compiler::optimize_main(&args));
    }
    let zygote = serving().then(|| match zygote::Zygote::fork() {
        Ok(zygote) => Some(zygote),
        Err(e) => {
            eprintln!("{}: {e}; guests will be exec'd", shim::RUNTIME_ID);
            None
        }
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", shim::RUNTIME_ID);
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bootstrap::run(zygote.flatten())) {
        eprintln!("{}: {e:#}", shim::RUNTIME_ID);
        std::process::exit(1);
    }
}

/// Whether containerd started this process as the long-running server (not `start`, `delete`
/// or `-info`): only the server forks guests, so only it wants a [`zygote`] — unless
/// containerd's environment has `WASMCELL_GUEST_START=exec` (every guest a fresh exec).
fn serving() -> bool {
    if std::env::var_os(zygote::GUEST_START_ENV).is_some_and(|v| v == "exec") {
        return false;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    containerd_shim::parse(&args)
        .is_ok_and(|flags| flags.action.is_empty() && !flags.info && !flags.socket.is_empty())
}
