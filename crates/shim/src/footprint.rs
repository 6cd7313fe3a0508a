//! What a long-lived guest keeps resident once its program runs.
//!
//! Starting a guest runs far more of the shim binary than running the program does afterwards:
//! the plan, the cache lookup, wasmtime's deserializer, the linker and the import checks. The
//! kernel maps every touched code page, and 64 KiB around each (fault-around), so a guest that
//! then sleeps or waits for I/O would keep ~7 MiB of the binary's text mapped, and its share of
//! it counted against the pod, for its whole life. Loading also leaves freed heap behind.
//!
//! So, once the program has run for [`SETTLE_DELAY`], the guest ([`settle`]):
//! - drops the guest's mappings of the binary's read-only segments (`MADV_DONTNEED` on the
//!   `PT_LOAD` segments without write permission: code and read-only data, clean and backed by
//!   the file; the relocated, writable ones are left alone). Nothing is lost: the pages stay in
//!   the page cache, and whatever the guest runs next is mapped again by a minor fault;
//! - returns the heap's free pages to the kernel (`malloc_trim`).
//!
//! A command does it on its own thread the first time it waits after that (the engine's
//! [`IdleTask`](wasmcell_engine::IdleTask)): a command that ends sooner never pays for it, and
//! the guest stays single-threaded (a second thread would make every unmap and the exit
//! itself a cross-CPU TLB shootdown). A server, which has worker threads anyway, starts a
//! short-lived thread for it ([`settle_later`]).
//!
//! The long-lived shim does the same each time it goes idle after work
//! ([`settle_when_idle`]).
//!
//! The segments are found with `dl_iterate_phdr`, not `/proc/self/maps`, because a confined
//! guest may have no `/proc`. Failures (a seccomp profile that denies `madvise`) change
//! nothing but the footprint and are not reported.

use std::time::Duration;

/// How long the program runs before the guest lets go of what starting it touched: long enough
/// that the start-up path is over, short against a long-lived container's life.
pub const SETTLE_DELAY: Duration = Duration::from_millis(500);

/// Lets go of the start-up code and free heap ([`release_code_pages`], [`release_free_heap`]).
pub fn settle() {
    release_code_pages();
    release_free_heap();
}

/// Starts the thread that [`settle`]s the guest after [`SETTLE_DELAY`]; the thread then exits.
pub fn settle_later() {
    let spawned = std::thread::Builder::new()
        .name("settle".to_owned())
        .stack_size(64 << 10)
        .spawn(|| {
            std::thread::sleep(SETTLE_DELAY);
            settle();
        });
    if let Err(e) = spawned {
        log::debug!("no settle thread: {e}");
    }
}

/// How often the shim looks at whether it has gone idle.
pub const IDLE_CHECK: Duration = Duration::from_secs(2);

/// CPU time below which an [`IDLE_CHECK`] interval counts as idle (the check itself costs
/// microseconds).
const IDLE_CPU: Duration = Duration::from_millis(2);

/// The shim's version of the same: each time it goes idle after work (containers created,
/// started, deleted), it lets go of the code and heap that work touched. Runs for the shim's
/// life on its runtime; the next task API call maps what it needs again.
pub async fn settle_when_idle() {
    let mut last = cpu_time();
    let mut settled_at = None;
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        let now = cpu_time();
        let idle = now.saturating_sub(last) < IDLE_CPU;
        if idle && settled_at != Some(now) {
            settle();
            settled_at = Some(cpu_time());
        }
        last = cpu_time();
    }
}

/// User and system CPU time of the whole process.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    #[allow(unsafe_code)]
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let of = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    of(usage.ru_utime) + of(usage.ru_stime)
}

/// Gives the heap pages the allocator holds free back to the kernel.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas; it touches no
    // memory this program uses.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops this process's page mappings of the executable's read-only segments; returns the
/// bytes advised.
pub fn release_code_pages() -> usize {
    let mut released = 0usize;
    // SAFETY: dl_iterate_phdr calls `each_object` synchronously, with a pointer to a valid
    // dl_phdr_info for each loaded object, and `released` outlives the call.
    #[allow(unsafe_code)]
    unsafe {
        libc::dl_iterate_phdr(
            Some(each_object),
            (&raw mut released).cast::<libc::c_void>(),
        );
    }
    released
}

/// `dl_iterate_phdr`'s callback: the first object is the executable; advise its read-only
/// `PT_LOAD` segments, then stop (returning non-zero ends the iteration).
#[allow(unsafe_code)]
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid `info` whose `dlpi_phdr` points at `dlpi_phnum`
    // program headers, and `data` is the `usize` release_code_pages handed over.
    let (info, released) = unsafe { (&*info, &mut *data.cast::<usize>()) };
    let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: as above: dlpi_phnum headers at dlpi_phdr, alive during the callback.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let page = page_size();
    for header in headers {
        if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).saturating_add(header.p_vaddr as usize);
        let end = start.saturating_add(header.p_memsz as usize);
        // Whole pages inside the segment only: a page it shares with a writable neighbour
        // may hold relocated data.
        let first = start.div_ceil(page) * page;
        let last = end / page * page;
        if last <= first {
            continue;
        }
        // SAFETY: the range lies inside a read-only, file-backed segment of this executable,
        // which no code writes; MADV_DONTNEED only drops the mappings, and the next access
        // maps the same file pages again.
        let advised = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_DONTNEED,
            )
        };
        if advised == 0 {
            *released += last - first;
        }
    }
    1
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own code: dropped mappings, and the code still runs afterwards.
    /// Resident file-backed KiB of this process.
    fn resident_file_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn the_executable_keeps_running_after_its_code_pages_are_dropped() {
        let before = resident_file_kib();
        let released = release_code_pages();
        let after = resident_file_kib();
        assert!(released > 0, "the executable has read-only segments");
        assert!(
            after < before,
            "file-backed resident memory went from {before} to {after} KiB"
        );
        // Code and read-only data come back on use.
        let text = format!("{:?}", (1..=3).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(text, "[2, 4, 6]");
        release_free_heap();
        assert_eq!(release_code_pages(), released);
    }
}
