//! wasmcell-oci: the OCI formats wasmcell reads and writes, and nothing else.
//!
//! - [`media_types`]: every media type and annotation key, in one place.
//! - [`read`]: OCI image layouts (tar or directory) and `docker save` archives, every blob
//!   verified before use; CNCF wasm artifacts checked against the spec.
//! - [`write`]: reproducible image-layout tars in three forms (classic image, wasm-layer image,
//!   CNCF artifact).
//! - [`extract`]: safe extraction of filesystem layers.
//! - [`wasm`] and [`wasm_config`]: what a binary imports and exports, and the artifact config.
//!
//! No wasmtime and no containerd here: those live in the engine and shim crates.

pub mod digest;
pub mod extract;
pub mod media_types;
pub mod read;
pub mod reference;
pub mod wasm;
pub mod wasm_config;
pub mod write;

/// The largest manifest or index any part of wasmcell reads (from a registry or containerd).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Descriptors appear in this crate's public types; re-exported so users need no oci-spec.
pub use oci_spec::image::Descriptor;
pub use read::{
    Archive, ArchiveFormat, Config, Image, Layer, MAX_LAYERS, MAX_MANIFESTS, ReadError, ReadLimits,
    TooManyLayers, check_layer_count, foreign_config_warning, read_archive,
};
pub use wasm::{WasmInfo, WasmKind, inspect_wasm};
pub use wasm_config::WasmConfig;
pub use write::{
    PackageFormat, PackageSpec, PackageSummary, build_package, layout_of_pulled,
    runnable_from_artifact, write_package,
};
