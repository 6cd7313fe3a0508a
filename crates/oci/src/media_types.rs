//! Every media type and annotation key wasmcell reads or writes, in one place.
//!
//! Other crates must name media types through these constants so that a new format is added
//! here once and recognised everywhere.

/// OCI image index (`index.json` and nested indexes).
pub const OCI_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest; also used by CNCF wasm artifacts.
pub const OCI_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image configuration.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI tar layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed OCI tar layer.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd-compressed OCI tar layer (recognised, not extracted).
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image configuration.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip tar layer.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed tar layer (as written by `docker save`).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The CNCF wasm artifact's single layer: the raw module or component.
pub const WASM_LAYER: &str = "application/wasm";
/// runwasi's wasm-layer images: a component (or module) as a layer of an ordinary image.
pub const WASM_COMPONENT_LAYER_V0: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// Content layer of the wasm-content format (raw wasm bytes).
pub const WASM_CONTENT_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The CNCF wasm artifact configuration.
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";

/// Index annotation containerd uses as the image name on import.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// Index annotation the OCI image-layout spec uses for the reference (we write the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifest annotation on an artifact made runnable: the original artifact manifest's digest.
pub const ANNOTATION_CONVERTED_FROM: &str = "dev.wasmcell.converted-from";
/// Manifest annotation on an artifact made runnable whose config was not a wasm config: that
/// config's media type (the shim warns, as `wasmcell import` did).
pub const ANNOTATION_FOREIGN_CONFIG: &str = "dev.wasmcell.foreign-config";
/// containerd image label set by `wasmcell pull` when it stored one manifest of a registry
/// index: the index's digest (what the registry served for the reference, and what a signature
/// names).
pub const LABEL_PULLED_FROM: &str = "dev.wasmcell.pulled-from";
/// Standard creation-time annotation.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// What a layer's media type says about how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A filesystem tar, with the given compression.
    Tar(Compression),
    /// Raw wasm bytes (module or component).
    Wasm,
}

/// Compression of a tar layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Classifies a layer media type; `None` for types wasmcell does not understand.
pub fn layer_kind(media_type: &str) -> Option<LayerKind> {
    match media_type {
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Some(LayerKind::Tar(Compression::None)),
        OCI_LAYER_TAR_GZIP | DOCKER_LAYER_TAR_GZIP => Some(LayerKind::Tar(Compression::Gzip)),
        OCI_LAYER_TAR_ZSTD => Some(LayerKind::Tar(Compression::Zstd)),
        WASM_LAYER | WASM_COMPONENT_LAYER_V0 | WASM_CONTENT_LAYER_V1 => Some(LayerKind::Wasm),
        _ => None,
    }
}

/// Whether a layer media type carries raw wasm bytes.
pub fn is_wasm_layer(media_type: &str) -> bool {
    layer_kind(media_type) == Some(LayerKind::Wasm)
}

/// Whether a media type names an image index (OCI or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_IMAGE_INDEX | DOCKER_MANIFEST_LIST)
}

/// Whether a media type names an image manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_IMAGE_MANIFEST | DOCKER_MANIFEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_layers_are_recognised_and_tar_layers_are_not_wasm() {
        for mt in [WASM_LAYER, WASM_COMPONENT_LAYER_V0, WASM_CONTENT_LAYER_V1] {
            assert!(is_wasm_layer(mt), "{mt}");
        }
        assert_eq!(
            layer_kind(OCI_LAYER_TAR_GZIP),
            Some(LayerKind::Tar(Compression::Gzip))
        );
        assert!(!is_wasm_layer(OCI_LAYER_TAR));
        assert_eq!(layer_kind("application/x-unknown"), None);
    }
}
