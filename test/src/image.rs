//! Hand-made image tars for tests that need content `wasmcell package` refuses to write (a
//! program that is not wasm, symlinks pointing out of the rootfs).

use std::path::Path;

use sha2::{Digest, Sha256};

/// One rootfs entry.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file with this content and mode.
    File(Vec<u8>, u32),
    /// A symlink to this target.
    Symlink(String),
    /// A character device node with this major and minor number (mode 0666), as a layer may
    /// carry and containerd, unpacking as root, creates.
    CharDevice(u32, u32),
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, path, bytes)
        .expect("tar entry");
}

/// Writes an OCI layout tar for platform wasm/wasip2 named `name`, whose single tar layer
/// holds `entries`.
pub fn write_image_tar(path: &Path, name: &str, entries: &[(&str, Entry)]) {
    write_platform_image_tar(path, name, ("wasm", "wasip2"), entries);
}

/// [`write_image_tar`] for platform `(architecture, os)`, e.g. a native `("amd64", "linux")`
/// image for runc to compare against.
pub fn write_platform_image_tar(
    path: &Path,
    name: &str,
    (architecture, os): (&str, &str),
    entries: &[(&str, Entry)],
) {
    let mut layer = tar::Builder::new(Vec::new());
    for (entry_path, entry) in entries {
        let mut header = tar::Header::new_ustar();
        match entry {
            Entry::File(bytes, mode) => {
                header.set_size(bytes.len() as u64);
                header.set_mode(*mode);
                layer
                    .append_data(&mut header, entry_path, bytes.as_slice())
                    .expect("file");
            }
            Entry::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                layer
                    .append_link(&mut header, entry_path, target)
                    .expect("symlink");
            }
            Entry::CharDevice(major, minor) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_size(0);
                header.set_mode(0o666);
                header.set_device_major(*major).expect("major");
                header.set_device_minor(*minor).expect("minor");
                layer
                    .append_data(&mut header, entry_path, std::io::empty())
                    .expect("device node");
            }
        }
    }
    let layer = layer.into_inner().expect("layer");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture, "os": os,
        "config": {"Cmd": ["/app.wasm"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}]
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "platform": {"architecture": architecture, "os": os},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
        }]
    }))
    .expect("index");
    write_layout(path, &index, &[&layer, &config, &manifest]);
}

/// Writes an OCI layout tar: `oci-layout`, `index.json` and `blobs` under their digests.
fn write_layout(path: &Path, index: &[u8], blobs: &[&[u8]]) {
    let mut out = tar::Builder::new(Vec::new());
    append(&mut out, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    append(&mut out, "index.json", index);
    for blob in blobs {
        let name = format!("blobs/sha256/{}", &digest(blob)[7..]);
        append(&mut out, &name, blob);
    }
    std::fs::write(path, out.into_inner().expect("tar")).expect("writing the layout tar");
}

/// Writes a CNCF wasm artifact (OCI layout tar) named `name` whose config is `config` as
/// given (its `layerDigests` filled in), so tests can make configs that lie about the binary.
pub fn write_artifact_tar(path: &Path, name: &str, wasm: &[u8], mut config: serde_json::Value) {
    config["layerDigests"] = serde_json::json!([digest(wasm)]);
    let config = serde_json::to_vec(&config).expect("config");
    write_found_artifact_tar(
        path,
        name,
        wasm,
        &config,
        "application/vnd.wasm.config.v0+json",
    );
}

/// Writes an artifact as tools other than wasmcell leave them (OCI layout tar, named `name`):
/// one `application/wasm` layer, `artifactType` set, and `config` as the config blob of type
/// `config_media_type` — the OCI 1.1 empty config, a CRD, anything.
pub fn write_found_artifact_tar(
    path: &Path,
    name: &str,
    wasm: &[u8],
    config: &[u8],
    config_media_type: &str,
) {
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/wasm",
        "config": {"mediaType": config_media_type, "digest": digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": digest(wasm), "size": wasm.len()}]
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest), "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
        }]
    }))
    .expect("index");
    write_layout(path, &index, &[wasm, config, &manifest]);
}
