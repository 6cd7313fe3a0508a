//! The empty network namespace shared by guests that cannot use a network.
//!
//! A spec that asks for a new network namespace gets one per container from runc. The kernel
//! pays about 1.4 ms of CPU for each (creating its loopback under the RTNL lock, the
//! `cleanup_net` worker that destroys it, an expedited RCU grace period), serialised across the
//! node — more than the rest of a short wasm guest's start. A guest whose program imports no
//! networking interface cannot do anything with a namespace of its own, so it joins one that the
//! starter makes once ([`create`]): a loopback that is down and nothing else. Every guest that
//! joins it stacks [`SeccompFilters::no_new_sockets`] on its filter, so nothing inside can make
//! the netlink socket any change to the namespace needs, nor reach another guest through an
//! abstract UNIX socket or the loopback: each guest sees exactly what a namespace of its own
//! would show it.
//!
//! Who joins: a guest whose plan says [`NetworkMode::Empty`] (the spec asks for a new namespace
//! and the container is not a pod's sandbox, sets no `net.*` sysctl and is not privileged, see
//! [`crate::plan`]) launched by a launcher forked from a starter ([`enter_at_launch`]). Once
//! the guest has read its program it decides ([`leave_if`]): a program that
//! imports `wasi:sockets` or `wasi:http` (or preview 1's `sock_*`), or serves HTTP, moves to a
//! namespace of its own before it is confined (a used one from the starter's pool,
//! [`crate::network_pool`], or a new one: `unshare`), and a server before it binds its socket.
//! Without a starter (an exec'd server or guest) every such guest gets a new namespace, as
//! before.
//!
//! [`SeccompFilters::no_new_sockets`]: crate::confine::SeccompFilters::no_new_sockets
//! [`NetworkMode::Empty`]: crate::plan::NetworkMode::Empty

use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sched::CloneFlags;

use crate::confine::SeccompFilters;

/// The starter's namespace, inherited by every server and launcher it forks (`-1`: none).
static SHARED: AtomicI32 = AtomicI32::new(-1);
/// In a guest: it is in the shared namespace (set by [`enter_at_launch`]).
static JOINED: AtomicBool = AtomicBool::new(false);

/// Import prefixes that need a network of the guest's own: the interfaces a deny policy's
/// `wasi:sockets/*` and `wasi:http/*` match, preview 1's `sock_*` functions included (they
/// only use sockets the host hands over, which a guest in the shared namespace could not have).
const NETWORK_IMPORTS: [&str; 3] = [
    "wasi:sockets/",
    "wasi:http/",
    "wasi_snapshot_preview1.sock_",
];

/// In the starter, once, while it has a single thread: makes the empty namespace and keeps an
/// fd to it (close-on-exec: an exec'd process never holds it). On failure the starter goes on
/// without one and its guests get namespaces of their own.
pub fn create() -> std::io::Result<()> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
    let empty = std::fs::File::open("/proc/thread-self/ns/net");
    if let Err(e) = nix::sched::setns(own.as_fd(), CloneFlags::CLONE_NEWNET) {
        // Every server forked from here would be in the wrong network: no starter at all.
        eprintln!("wasmcell starter: cannot return to its network namespace: {e}");
        // SAFETY: `_exit` ends the process without running anything else.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(1)
        }
    }
    // Compiled here so that every guest clones it instead of compiling it.
    let _ = SeccompFilters::no_new_sockets();
    SHARED.store(empty?.into_raw_fd(), Ordering::Relaxed);
    Ok(())
}

/// The fd servers and launchers keep when they close what they inherited.
pub fn inherited_fd() -> Option<RawFd> {
    let fd = SHARED.load(Ordering::Relaxed);
    (fd >= 0).then_some(fd)
}

/// In a launcher's child for a guest whose plan says [`crate::plan::NetworkMode::Empty`]:
/// joins the shared namespace if this process descends from a starter, else makes a new one.
/// Closes the inherited fd either way: a guest holds no namespace but its own.
pub fn enter_at_launch() -> nix::Result<()> {
    let Some(shared) = take_inherited() else {
        return nix::sched::unshare(CloneFlags::CLONE_NEWNET);
    };
    nix::sched::setns(shared.as_fd(), CloneFlags::CLONE_NEWNET)?;
    JOINED.store(true, Ordering::Relaxed);
    Ok(())
}

/// In a launcher's child, whatever its network: closes the inherited fd if it is still open.
pub fn close_inherited() {
    drop(take_inherited());
}

/// Takes this process's inherited fd of the shared namespace, if it has one.
fn take_inherited() -> Option<OwnedFd> {
    let fd = SHARED.swap(-1, Ordering::Relaxed);
    // SAFETY: a non-negative value is the starter's namespace fd, which every process between
    // the starter and this one kept open (`crate::forked::close_from_but`); the swap leaves
    // this the only owner of it in this process.
    #[allow(unsafe_code)]
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// In a guest: it is in the shared namespace, and must stack the socket filter.
pub fn joined() -> bool {
    JOINED.load(Ordering::Relaxed)
}

/// In a guest about to be confined: stacks the socket filter on `seccomp` if it is in the
/// shared namespace.
pub fn stack_socket_filter(seccomp: &mut SeccompFilters) {
    if joined() {
        seccomp.stack(SeccompFilters::no_new_sockets());
    }
}

/// Whether a program with these imports (as [`wasmcell_engine::WasmEngine::imports`] names
/// them) needs a network namespace of its own.
pub fn needs_network(imports: &[String]) -> bool {
    imports.iter().any(|name| {
        NETWORK_IMPORTS
            .iter()
            .any(|prefix| name.starts_with(prefix))
    })
}

/// In a guest, before it is confined: leaves the shared namespace if it `needs_network`,
/// for a used one from the starter's `pool` ([`crate::network_pool`]) or else a new one. A
/// no-op for a guest that is not in it.
pub fn leave_if(needs_network: bool, pool: Option<&std::path::Path>) -> Result<(), String> {
    if !needs_network || !joined() {
        return Ok(());
    }
    // `setns` checks that what the pool lent is a network namespace; if it is not, or none
    // was lent, the guest makes its own.
    let joined_a_used_one = pool
        .and_then(crate::network_pool::borrow)
        .is_some_and(|used| nix::sched::setns(used, CloneFlags::CLONE_NEWNET).is_ok());
    if !joined_a_used_one {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("creating the guest's network namespace (unshare): {e}"))?;
    }
    JOINED.store(false, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networking_imports_are_the_sockets_and_http_interfaces() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(!needs_network(&names(&[
            "wasi:cli/environment@0.2.0",
            "wasi:filesystem/types@0.2.0",
            "wasi:io/streams@0.2.0",
            "wasi_snapshot_preview1.fd_write",
            "wasi_snapshot_preview1.poll_oneoff",
        ])));
        assert!(needs_network(&names(&[
            "wasi_snapshot_preview1.sock_accept"
        ])));
        assert!(needs_network(&names(&[
            "wasi:cli/stdout@0.2.0",
            "wasi:sockets/instance-network@0.2.0",
        ])));
        assert!(needs_network(&names(&["wasi:http/outgoing-handler@0.2.0"])));
        assert!(needs_network(&names(&[
            "wasi:sockets/types@0.3.0-rc-2025-09-16"
        ])));
        assert!(!needs_network(&[]));
    }
}
