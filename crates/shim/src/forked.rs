//! What a process of this binary that was forked rather than exec'd sets up for itself: the fds
//! an exec would have closed, and the command line `ps` shows. Two kinds of process are forked:
//! the shim server (by `start`, see [`crate::bootstrap`]) and each guest and the launcher
//! itself (by [`crate::zygote`]).
//!
//! A forked process inherits its parent's command line; [`set_command_line`] gives it its own.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

/// Closes every fd from `first` up but the starter's preloaded programs' files
/// ([`crate::preload::inherited_fds`]), which wasmtime still reads from, and in a spare
/// server's children the async runtime's signal pipe ([`crate::spare::runtime_fds`]).
pub fn close_from(first: RawFd) -> std::io::Result<()> {
    close_from_but(first, &[])
}

/// Closes every fd from `first` up but `keep` and the preloaded programs' files.
pub fn close_from_but(first: RawFd, keep: &[RawFd]) -> std::io::Result<()> {
    let mut kept: Vec<libc::c_uint> = keep
        .iter()
        .copied()
        .chain(crate::preload::inherited_fds())
        .chain(crate::empty_network::inherited_fd())
        .chain(crate::spare::runtime_fds().iter().copied())
        .filter_map(|fd| libc::c_uint::try_from(fd).ok())
        .collect();
    kept.sort_unstable();
    kept.dedup();
    let first = libc::c_uint::try_from(first).unwrap_or(0);
    // The ranges between the kept fds, from `first` to the last possible fd.
    let mut ranges = Vec::with_capacity(kept.len() + 1);
    let mut low = first;
    for &fd in kept.iter().filter(|&&fd| fd >= first) {
        if fd > low {
            ranges.push((low, fd - 1));
        }
        low = fd.saturating_add(1);
    }
    ranges.push((low, libc::c_uint::MAX));
    // SAFETY: close_range takes plain integers; every fd it closes is one this process owns
    // and no longer uses (callers drop their OwnedFds first, and keep what they still use).
    #[allow(unsafe_code)]
    let closed = ranges
        .iter()
        .all(|&(low, high)| unsafe { libc::syscall(libc::SYS_close_range, low, high, 0) } == 0);
    if closed {
        return Ok(());
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd: &RawFd| {
            libc::c_uint::try_from(fd)
                .is_ok_and(|fd| fd >= first && kept.binary_search(&fd).is_err())
        })
        .collect();
    for fd in open {
        // SAFETY: as above; EBADF for the listing's own, already closed fd is harmless.
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fd);
        }
    }
    Ok(())
}

/// Points stdin, stdout and stderr at `/dev/null`: a process that outlives whatever gave it
/// its streams must not hold them (a pipe's reader waits until every writer has closed it).
pub fn null_stdio() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// Sets the command line `ps` and `/proc/PID/cmdline` show to `args`.
///
/// The kernel reads a command line from the range it records for argv, which for a fresh exec
/// is the argv strings on the initial stack. Here the range is pointed at a copy of `args` on
/// the heap (kept for the process's life), which needs `CAP_SYS_RESOURCE` — a shim has it —
/// and leaves the original strings, environment included, untouched. Without the capability
/// the original argv strings are overwritten as far as they reach (the rest is cut: only
/// cosmetic); std's `env::args` reads those strings, so they must have been parsed before.
pub fn set_command_line(args: &[OsString]) {
    let mut title = Vec::new();
    for arg in args {
        title.extend_from_slice(arg.as_bytes());
        title.push(0);
    }
    if title.is_empty() {
        return;
    }
    let title: &'static [u8] = title.leak();
    let (start, end) = (
        title.as_ptr() as usize,
        title.as_ptr() as usize + title.len(),
    );
    // The kernel keeps start <= end at every step, so moving the start first fails when the
    // copy lies above the current range: then the end goes first. Trying beats reading the
    // current range from /proc on every guest's launch.
    if set_argv_bound(libc::PR_SET_MM_ARG_START, start) {
        set_argv_bound(libc::PR_SET_MM_ARG_END, end);
    } else if !(set_argv_bound(libc::PR_SET_MM_ARG_END, end)
        && set_argv_bound(libc::PR_SET_MM_ARG_START, start))
    {
        overwrite_original_argv(title);
    }
}

/// The kernel's argv range (`/proc/self/stat` fields 48 and 49).
fn argv_range() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may itself contain spaces, start at field 3.
    let mut fields = stat.rsplit_once(") ")?.1.split_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    (start != 0 && start < end).then_some((start, end))
}

/// Moves one end of the kernel's argv range; whether it did.
fn set_argv_bound(which: libc::c_int, address: usize) -> bool {
    // SAFETY: prctl(PR_SET_MM) takes plain integers; the kernel checks the address lies in this
    // process's memory and only uses it to read /proc/PID/cmdline.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            which as libc::c_ulong,
            address as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    rc == 0
}

/// Writes `title` (NUL-separated arguments) over the argv range, cut to fit, padded with NULs.
fn overwrite_original_argv(title: &[u8]) {
    let Some((start, end)) = argv_range() else {
        return;
    };
    let mut bytes = title[..title.len().min(end - start)].to_vec();
    if let Some(last) = bytes.last_mut() {
        *last = 0;
    }
    bytes.resize(end - start, 0);
    // SAFETY: [start, end) is the kernel's argv range, which (the capability being absent) is
    // still this process's argv strings on its initial stack, mapped writable; nothing reads
    // them after this (the caller's promise: it parsed them before).
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, bytes.len());
    }
}
