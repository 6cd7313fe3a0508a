//! Links the shim as a position-dependent executable.
//!
//! Every shim and guest process is this binary. As a PIE, the loader relocates its ~450 KiB of
//! relocated read-only data in each process, leaving those pages private and dirty — about
//! 0.9 MiB of every container's footprint across its two processes (measured with `make
//! bench`). Linked without PIE, the addresses are fixed at link time and the pages stay shared.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
