//! The front's allocator: a bump arena in `.bss`, never freed.
//!
//! The front lives for a few milliseconds and then exits or execs, twice per container (`start`,
//! and the `delete` containerd runs after every shim). musl's allocator hands every freed page
//! back at once, so parsing the bundle's spec cost the front a dozen `mmap`/`munmap` pairs and
//! their page faults per exec. Here an allocation is a pointer bump in a static arena whose
//! untouched pages cost nothing, a free is a no-op, and whatever does not fit goes to the
//! system allocator (a spec of several hundred KiB still parses).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in the arena: enough for what `start` and `delete` allocate for a large spec.
const ARENA_BYTES: usize = 1 << 20;

#[repr(C, align(4096))]
struct Space(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: the arena's bytes are only reached through pointers `Arena::alloc` hands out, each
// to a range no other allocation overlaps (the bump is one atomic step).
#[allow(unsafe_code)]
unsafe impl Sync for Space {}

static SPACE: Space = Space(UnsafeCell::new([0; ARENA_BYTES]));
/// Bytes of the arena handed out so far.
static USED: AtomicUsize = AtomicUsize::new(0);

/// The bump allocator (see the module docs).
pub struct Arena;

impl Arena {
    fn contains(pointer: *mut u8) -> bool {
        let start = SPACE.0.get() as usize;
        (start..start + ARENA_BYTES).contains(&(pointer as usize))
    }
}

// SAFETY: every pointer returned is either a fresh, suitably aligned range of the arena that no
// earlier allocation overlaps, or System's; `dealloc` gives System back only what System gave.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = SPACE.0.get() as usize;
        let mut used = USED.load(Ordering::Relaxed);
        loop {
            // `align` is a power of two; the arena's start is page-aligned.
            let start = (base + used).next_multiple_of(layout.align()) - base;
            let Some(end) = start
                .checked_add(layout.size())
                .filter(|&end| end <= ARENA_BYTES)
            else {
                // SAFETY: `layout` is the caller's, as `GlobalAlloc::alloc` requires.
                return unsafe { System.alloc(layout) };
            };
            match USED.compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed) {
                // SAFETY: `start..end` lies inside the arena (checked above).
                Ok(_) => return unsafe { (SPACE.0.get() as *mut u8).add(start) },
                Err(now) => used = now,
            }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if !Arena::contains(pointer) {
            // SAFETY: not the arena's, so System allocated it with this layout.
            unsafe { System.dealloc(pointer, layout) }
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code, clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_disjoint_and_overflow_to_the_system() {
        let arena = Arena;
        let small = Layout::from_size_align(24, 8).unwrap();
        let page = Layout::from_size_align(100, 4096).unwrap();
        // SAFETY: valid layouts; every pointer is freed with its own layout below.
        unsafe {
            let a = arena.alloc(small);
            let b = arena.alloc(page);
            let c = arena.alloc(small);
            assert!(Arena::contains(a) && Arena::contains(b) && Arena::contains(c));
            assert_eq!(b as usize % 4096, 0);
            assert!(b as usize >= a as usize + 24 && c as usize >= b as usize + 100);
            let huge = Layout::from_size_align(ARENA_BYTES, 8).unwrap();
            let d = arena.alloc(huge);
            assert!(!d.is_null() && !Arena::contains(d));
            d.write_bytes(1, ARENA_BYTES);
            for (pointer, layout) in [(a, small), (b, page), (c, small), (d, huge)] {
                arena.dealloc(pointer, layout);
            }
        }
    }
}
