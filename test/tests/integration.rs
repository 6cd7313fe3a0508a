//! wasmcell's integration tests: one binary, modules by subject, helpers in `wasmcell-tests`.
//! They use the real `wasmcell` binary, skopeo and private containerd instances.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod cli;
mod demo_images;
mod shim;
