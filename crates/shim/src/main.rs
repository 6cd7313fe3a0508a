//! `containerd-shim-wasmcell-v1-core`: containerd's shim for wasm containers, exec'd by its
//! front (`containerd-shim-wasmcell-v1`, crate `wasmcell-shim-front`) with containerd's
//! arguments.
//!
//! One binary, several modes. As the shim: the server (task service over ttrpc, on a
//! single-threaded tokio runtime), spawned by the front with `-socket` — which first forks the
//! [`starter`] that forks later servers — or forked by `start` when the front could not decide;
//! `delete` cleans up after one that left a cgroup.
//! Forked by the server's launcher, or exec'd with `__wasmcell-guest PLAN`, it is a guest process
//! that runs exactly one wasm program; exec'd by a guest with `__wasmcell-compile …` it compiles
//! that program into the cache and exits; started by the shim with `__wasmcell-optimize …` it
//! compiles a cold-started program's optimized code in the background. The mode is decided
//! before any runtime or thread exists.

mod bootstrap;
mod cgroup;
mod compiler;
mod confine;
mod container;
mod content;
#[cfg(debug_assertions)]
mod drill;
mod empty_network;
mod events;
mod footprint;
mod forked;
mod guest;
mod http;
mod network_pool;
mod plan;
mod policy;
mod preload;
mod process;
mod rootfs;
mod rootfs_mount;
mod service;
mod shim;
mod shim_log;
mod signatures;
mod spare;
mod starter;
mod stdio;
mod zygote;

use std::path::Path;

use wasmcell_shim_front::group;

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
        guest::exit(code);
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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = bootstrap::act_if_asked(&args) {
        std::process::exit(code);
    }
    let server = server_flags(&args);
    if let Some(flags) = &server {
        // First, while the heap is nearly empty: every server it forks inherits it.
        starter::start_if_absent(&flags.address);
    }
    let zygote = server
        .is_some()
        .then(|| launcher_if_wanted(args.clone()))
        .flatten();
    std::process::exit(bootstrap::run(&args, zygote));
}

/// Forks the guest launcher for a server whose command line is `server_args` — for a lone
/// container's server, one that becomes its guest, if this process may make a PID namespace —
/// unless containerd's environment has `WASMCELL_GUEST_START=exec` (every guest a fresh exec;
/// `launcher`: no launcher becomes a guest, for comparing); `None` (guests will be exec'd)
/// then, or if the fork fails. Call only while this process has a single thread.
fn launcher_if_wanted(server_args: Vec<std::ffi::OsString>) -> Option<zygote::Zygote> {
    let start = std::env::var_os(zygote::GUEST_START_ENV);
    if start.as_ref().is_some_and(|v| v == "exec") {
        return None;
    }
    if group::serves_a_lone_container()
        && start.as_ref().is_none_or(|v| v != "launcher")
        && let Ok(zygote) = zygote::Zygote::fork_to_become_the_guest(server_args.clone())
    {
        return Some(zygote);
    }
    match zygote::Zygote::fork(server_args) {
        Ok(zygote) => Some(zygote),
        Err(e) => {
            eprintln!("{}: {e}; guests will be exec'd", shim::RUNTIME_ID);
            None
        }
    }
}

/// The flags of a server exec'd with `-socket` (`start` forks its own); `None` for any other
/// mode. Only a server forks guests, so only it wants a [`zygote`] (see [`launcher_if_wanted`]),
/// and only an exec'd one pays the loader's start-up that a [`starter`] saves the next.
fn server_flags(args: &[std::ffi::OsString]) -> Option<containerd_shim::Flags> {
    containerd_shim::parse(args.get(1..).unwrap_or_default())
        .ok()
        .filter(|flags| flags.action.is_empty() && !flags.info && !flags.socket.is_empty())
}
