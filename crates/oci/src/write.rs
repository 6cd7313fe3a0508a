//! Writing OCI image-layout tars for a wasm program, in the three forms wasmcell runs.
//!
//! Output is reproducible: the same inputs give a byte-identical tar (fixed entry order,
//! timestamps, owners and modes; JSON with sorted keys). The tar is written to a temporary file
//! beside the destination and renamed into place, so a failure never leaves a partial file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, Platform, PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;

use crate::digest::sha256_digest;
use crate::media_types::{
    self as mt, ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_CONVERTED_FROM, ANNOTATION_REF_NAME,
};
use crate::reference::{Reference, ReferenceError};
use crate::wasm::{WasmError, WasmInfo, inspect_wasm};
use crate::wasm_config::WasmConfig;

/// The three packagings of a wasm program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFormat {
    /// A classic image: the `.wasm` file inside a tar layer; `args[0]` names its path.
    Image,
    /// runwasi's format: the wasm bytes are the layer
    /// (`application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`).
    WasmLayer,
    /// A CNCF wasm artifact: `application/vnd.wasm.config.v0+json` config, one
    /// `application/wasm` layer.
    Artifact,
}

impl std::str::FromStr for PackageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "image" => Ok(Self::Image),
            "wasm-layer" => Ok(Self::WasmLayer),
            "artifact" => Ok(Self::Artifact),
            other => Err(format!(
                "unknown package format {other:?}: expected image, wasm-layer or artifact"
            )),
        }
    }
}

/// Everything that decides the bytes of a package.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    /// Which of the three forms to write.
    pub format: PackageFormat,
    /// The image name, e.g. `localhost/wasmcell/demo-app:latest`.
    pub reference: String,
    /// The module or component.
    pub wasm: Vec<u8>,
    /// Absolute path of the `.wasm` inside the image rootfs (for [`PackageFormat::Image`]) and
    /// the program name in the config's `Entrypoint` (all formats), so that a pod's `args:`
    /// are the program's arguments, as with any container image.
    pub wasm_path: String,
    /// Manifest annotations, sorted for reproducibility.
    pub annotations: BTreeMap<String, String>,
    /// Seconds since the epoch recorded as the creation time and as every tar entry's mtime.
    pub created_epoch: u64,
    /// Optional author for the config.
    pub author: Option<String>,
    /// Optional WIT world recorded as the artifact's `component.target`.
    pub target: Option<String>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct PackageSummary {
    /// Name and tag as stored in `index.json`.
    pub reference: String,
    /// Digest of the manifest.
    pub manifest_digest: String,
    /// Digest of the (single) layer.
    pub layer_digest: String,
    /// The decoded binary.
    pub wasm: WasmInfo,
    /// Size of the tar.
    pub tar_size: u64,
}

/// Why a package could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The `--name` is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The input is not valid wasm.
    #[error("module {path}: {source}")]
    Wasm {
        /// Where the wasm came from (for the message).
        path: String,
        /// The decoder's complaint.
        #[source]
        source: WasmError,
    },
    /// The in-image path is not absolute or has `..`.
    #[error("wasm path in image {path:?} must be absolute, without '..' components")]
    WasmPath {
        /// The path given.
        path: String,
    },
    /// An annotation key is empty or reserved.
    #[error("annotation key {key:?} is {reason}")]
    Annotation {
        /// The key.
        key: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// oci-spec refused to build a document (a bug if it happens).
    #[error("building the OCI {what}: {source}")]
    Spec {
        /// Which document.
        what: &'static str,
        /// The builder's error.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// JSON encoding failed.
    #[error("encoding the OCI {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the output failed; no file is left at the destination.
    #[error("writing {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A package built in memory.
#[derive(Debug)]
pub struct Package {
    /// The tar's bytes.
    pub tar: Vec<u8>,
    /// What it holds.
    pub summary: PackageSummary,
}

/// Builds the package in memory.
pub fn build_package(spec: &PackageSpec, wasm_source: &str) -> Result<Package, PackageError> {
    let reference = Reference::parse(&spec.reference)?;
    let info = inspect_wasm(&spec.wasm).map_err(|source| PackageError::Wasm {
        path: wasm_source.to_owned(),
        source,
    })?;
    if !spec.wasm_path.starts_with('/')
        || spec.wasm_path.len() < 2
        || spec.wasm_path.split('/').any(|c| c == ".." || c == ".")
    {
        return Err(PackageError::WasmPath {
            path: spec.wasm_path.clone(),
        });
    }
    for key in spec.annotations.keys() {
        let reason = if key.is_empty() {
            Some("empty")
        } else if key == ANNOTATION_CONTAINERD_IMAGE_NAME || key == ANNOTATION_REF_NAME {
            Some("set from --name on the index; it cannot be given as a manifest annotation")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PackageError::Annotation {
                key: key.clone(),
                reason,
            });
        }
    }

    let created = rfc3339_utc(spec.created_epoch);
    let mut blobs = Blobs::default();
    let platform = platform(info.kind.wasi_os())?;

    let (layer_bytes, layer_media_type) = match spec.format {
        PackageFormat::Image => (
            single_file_tar(&spec.wasm_path, &spec.wasm, spec.created_epoch)?,
            mt::OCI_LAYER_TAR,
        ),
        PackageFormat::WasmLayer => (spec.wasm.clone(), mt::WASM_COMPONENT_LAYER_V0),
        PackageFormat::Artifact => (spec.wasm.clone(), mt::WASM_LAYER),
    };
    let layer = blobs.add(MediaType::from(layer_media_type), layer_bytes);
    let layer_digest = layer.digest().to_string();

    let (config_json, config_media_type) = match spec.format {
        PackageFormat::Artifact => {
            let cfg = WasmConfig::describe(
                &info,
                layer_digest.clone(),
                Some(created.clone()),
                spec.author.clone(),
                spec.target.clone(),
            );
            (canonical_json(&cfg, "wasm config")?, mt::WASM_CONFIG_V0)
        }
        PackageFormat::Image | PackageFormat::WasmLayer => {
            let program = match spec.format {
                PackageFormat::Image => spec.wasm_path.clone(),
                _ => spec
                    .wasm_path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&spec.wasm_path)
                    .to_owned(),
            };
            // diff_ids list filesystem changesets. A wasm layer is not one, and containerd 1.7+
            // skips non-tar layers when unpacking, then insists the counts match.
            let diff_ids = match spec.format {
                PackageFormat::Image => vec![layer_digest.clone()],
                _ => Vec::new(),
            };
            let mut builder = ImageConfigurationBuilder::default()
                .created(created.clone())
                .architecture(Arch::Wasm)
                .os(Os::Other(info.kind.wasi_os().to_owned()))
                .config(
                    ConfigBuilder::default()
                        .entrypoint(vec![program])
                        .build()
                        .map_err(|source| PackageError::Spec {
                            what: "image config",
                            source,
                        })?,
                )
                .rootfs(
                    RootFsBuilder::default()
                        .typ("layers")
                        .diff_ids(diff_ids)
                        .build()
                        .map_err(|source| PackageError::Spec {
                            what: "rootfs",
                            source,
                        })?,
                );
            if let Some(author) = &spec.author {
                builder = builder.author(author.clone());
            }
            let cfg = builder.build().map_err(|source| PackageError::Spec {
                what: "image config",
                source,
            })?;
            (canonical_json(&cfg, "image config")?, mt::OCI_IMAGE_CONFIG)
        }
    };
    let config = blobs.add(MediaType::from(config_media_type), config_json);

    let mut manifest_annotations = spec.annotations.clone();
    manifest_annotations
        .entry(mt::ANNOTATION_CREATED.to_owned())
        .or_insert_with(|| created.clone());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(vec![layer.clone()])
        .annotations(
            manifest_annotations
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .map_err(|source| PackageError::Spec {
            what: "manifest",
            source,
        })?;
    // Docker can load the two image forms; an artifact's config is not an image config, so a
    // manifest.json would only make `docker load` fail later and less clearly.
    let docker = (spec.format != PackageFormat::Artifact).then(|| DockerManifestEntry {
        config: blob_path(config.digest().as_ref()),
        repo_tags: vec![reference.to_string()],
        layers: vec![blob_path(&layer_digest)],
    });
    let (tar, manifest_digest) = finish_layout(
        blobs,
        &manifest,
        platform,
        &reference,
        docker,
        spec.created_epoch,
    )?;
    Ok(Package {
        summary: PackageSummary {
            reference: reference.to_string(),
            manifest_digest,
            layer_digest,
            wasm: info,
            tar_size: tar.len() as u64,
        },
        tar,
    })
}

/// Why an artifact could not be made runnable.
#[derive(Debug, thiserror::Error)]
pub enum RunnableError {
    /// The image is not a wasm artifact: it has an image config, or no wasm layer.
    #[error(
        "image {name} is not a wasm artifact (it has an image config, or no wasm layer to run)"
    )]
    NotAnArtifact {
        /// The image.
        name: String,
    },
    /// The artifact has no name to store it under.
    #[error(
        "the artifact has no name (no io.containerd.image.name or ref.name annotation); give one with --name"
    )]
    Unnamed,
    /// Building the documents failed.
    #[error(transparent)]
    Package(#[from] PackageError),
}

/// An artifact as an image `ctr run` accepts: an OCI image config (platform from the wasm
/// config, no filesystem layers) and, as layers, the artifact's own wasm blob and its original
/// wasm config blob — both byte-identical, so their digests and the validation data survive and
/// containerd's garbage collector keeps them with the image.
pub fn runnable_from_artifact(
    image: &crate::read::Image,
    name: Option<&str>,
) -> Result<Package, RunnableError> {
    let shown = image.names.first().cloned().unwrap_or_default();
    let Some(wasm_layer) = image.wasm_layer() else {
        return Err(RunnableError::NotAnArtifact { name: shown });
    };
    let Some(info) = wasm_layer.wasm.as_ref() else {
        return Err(RunnableError::NotAnArtifact { name: shown });
    };
    // A foreign config says nothing usable: the platform comes from the binary, and the
    // manifest records what the config was so the shim can warn as `import` does.
    let (os, created, foreign) = match &image.config {
        crate::read::Config::Wasm(wasm_config) => {
            (wasm_config.os.clone(), wasm_config.created.clone(), None)
        }
        crate::read::Config::Foreign { media_type } => (
            info.kind.wasi_os().to_owned(),
            None,
            Some(media_type.clone()),
        ),
        crate::read::Config::Image(_) => {
            return Err(RunnableError::NotAnArtifact { name: shown });
        }
    };
    let reference_text = name
        .map(str::to_owned)
        .or_else(|| {
            image
                .names
                .iter()
                .find(|n| n.contains('/') || n.contains(':'))
                .cloned()
        })
        .ok_or(RunnableError::Unnamed)?;
    let reference = Reference::parse(&reference_text).map_err(PackageError::from)?;
    let program = format!(
        "{}.wasm",
        reference.repository.rsplit('/').next().unwrap_or("app")
    );
    let spec_error = |what| move |source| PackageError::Spec { what, source };
    let mut blobs = Blobs::default();
    let mut config = ImageConfigurationBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other(os.clone()))
        .config(
            ConfigBuilder::default()
                .entrypoint(vec![program])
                .build()
                .map_err(spec_error("image config"))?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(Vec::<String>::new())
                .build()
                .map_err(spec_error("rootfs"))?,
        );
    if let Some(created) = created {
        config = config.created(created);
    }
    let config = config.build().map_err(spec_error("image config"))?;
    let config_desc = blobs.add(
        MediaType::ImageConfig,
        canonical_json(&config, "image config")?,
    );
    let wasm_desc = blobs.add(MediaType::from(mt::WASM_LAYER), wasm_layer.bytes.clone());
    let mut layers = vec![wasm_desc.clone()];
    if foreign.is_none() {
        layers.push(blobs.add(
            MediaType::from(mt::WASM_CONFIG_V0),
            image.config_bytes.clone(),
        ));
    }
    let mut annotations: BTreeMap<String, String> = image
        .manifest
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations.insert(
        ANNOTATION_CONVERTED_FROM.to_owned(),
        image.manifest_descriptor.digest().to_string(),
    );
    if let Some(media_type) = foreign {
        annotations.insert(mt::ANNOTATION_FOREIGN_CONFIG.to_owned(), media_type);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers)
        .annotations(
            annotations
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .map_err(spec_error("manifest"))?;
    let (tar, manifest_digest) =
        finish_layout(blobs, &manifest, platform(&os)?, &reference, None, 0)?;
    Ok(Package {
        summary: PackageSummary {
            reference: reference.to_string(),
            manifest_digest,
            layer_digest: wasm_desc.digest().to_string(),
            wasm: info.clone(),
            tar_size: tar.len() as u64,
        },
        tar,
    })
}

/// Builds the package and writes it to `out` atomically.
pub fn write_package(
    spec: &PackageSpec,
    wasm_source: &str,
    out: &Path,
) -> Result<PackageSummary, PackageError> {
    let package = build_package(spec, wasm_source)?;
    write_atomically(out, &package.tar).map_err(|source| PackageError::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(package.summary)
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Blobs keyed by digest; a `BTreeMap` so the tar's order never depends on insertion.
#[derive(Default)]
struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    fn add(&mut self, media_type: MediaType, bytes: Vec<u8>) -> Descriptor {
        let digest = sha256_digest(&bytes);
        let descriptor = Descriptor::new(
            media_type,
            bytes.len() as u64,
            oci_spec::image::Digest::try_from(digest.as_str())
                .unwrap_or_else(|_| unreachable!("sha256_digest always yields a valid digest")),
        );
        self.0.insert(digest, bytes);
        descriptor
    }
}

/// Stores the manifest, names it in `index.json` (containerd's and OCI's annotations) and
/// writes the layout tar; returns the tar and the manifest digest.
fn finish_layout(
    mut blobs: Blobs,
    manifest: &oci_spec::image::ImageManifest,
    platform: Platform,
    reference: &Reference,
    docker: Option<DockerManifestEntry>,
    mtime: u64,
) -> Result<(Vec<u8>, String), PackageError> {
    let mut manifest_desc = blobs.add(
        MediaType::ImageManifest,
        canonical_json(manifest, "manifest")?,
    );
    manifest_desc.set_platform(Some(platform));
    let manifest_digest = manifest_desc.digest().to_string();
    let mut files = layout_index(manifest_desc, reference)?;
    if let Some(docker) = docker {
        files.insert(
            "manifest.json".to_owned(),
            canonical_json(&[docker], "docker manifest.json")?,
        );
    }
    for (digest, bytes) in blobs.0 {
        files.insert(blob_path(&digest), bytes);
    }
    Ok((layout_tar(&files, mtime)?, manifest_digest))
}

/// An OCI layout tar holding one image as a registry served it: `manifest` byte-identical (of
/// `media_type`, with `platform` when an index gave one), named `reference` in the index, and
/// `blobs` (its config and layers). Reading the tar back verifies every blob against the
/// manifest, as for any archive.
pub fn layout_of_pulled(
    reference: &Reference,
    manifest: &[u8],
    media_type: &str,
    platform: Option<Platform>,
    blobs: Vec<Vec<u8>>,
) -> Result<Vec<u8>, PackageError> {
    let mut stored = Blobs::default();
    let mut descriptor = stored.add(MediaType::from(media_type), manifest.to_vec());
    descriptor.set_platform(platform);
    for blob in blobs {
        // Media types live in the manifest; a layout stores blobs by digest alone.
        stored.add(MediaType::Other(String::new()), blob);
    }
    let mut files = layout_index(descriptor, reference)?;
    for (digest, bytes) in stored.0 {
        files.insert(blob_path(&digest), bytes);
    }
    layout_tar(&files, 0)
}

/// The `oci-layout` marker and an `index.json` listing `manifest`, named `reference` the
/// way containerd's import and the OCI layout spec read names.
fn layout_index(
    mut manifest: Descriptor,
    reference: &Reference,
) -> Result<BTreeMap<String, Vec<u8>>, PackageError> {
    manifest.set_annotations(Some(
        [
            (
                ANNOTATION_CONTAINERD_IMAGE_NAME.to_owned(),
                reference.to_string(),
            ),
            (ANNOTATION_REF_NAME.to_owned(), reference.tag.clone()),
        ]
        .into_iter()
        .collect(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()
        .map_err(|source| PackageError::Spec {
            what: "index",
            source,
        })?;
    let mut files = BTreeMap::new();
    files.insert(
        "oci-layout".to_owned(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert("index.json".to_owned(), canonical_json(&index, "index")?);
    Ok(files)
}

fn platform(os: &str) -> Result<Platform, PackageError> {
    PlatformBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other(os.to_owned()))
        .build()
        .map_err(|source| PackageError::Spec {
            what: "platform",
            source,
        })
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// JSON with object keys sorted (via `serde_json::Value`, whose maps are ordered), so the
/// `HashMap`s inside oci-spec's types cannot make the bytes vary between runs.
fn canonical_json<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, PackageError> {
    let value =
        serde_json::to_value(value).map_err(|source| PackageError::Json { what, source })?;
    serde_json::to_vec(&value).map_err(|source| PackageError::Json { what, source })
}

fn tar_header(entry_type: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn tar_io(source: std::io::Error) -> PackageError {
    PackageError::Io {
        path: PathBuf::from("<in-memory tar>"),
        source,
    }
}

/// Directories every image layer wasmcell writes holds, empty: where a container's runtime
/// mounts its `/dev` and `/run` tmpfs. A runtime creates a missing mount point at every start,
/// in the container's writable layer — on overlayfs a new directory on the host's filesystem
/// per container — so an image that has them saves that. (`/proc` and `/sys` are left out:
/// wasmcell never mounts them into a guest, and a guest sees no such directories.)
pub const SKELETON_DIRS: [&str; 2] = ["dev", "run"];

/// A filesystem layer holding one executable file at `path`, with its parent directories and
/// the [`SKELETON_DIRS`], directories in sorted order before the file.
fn single_file_tar(path: &str, bytes: &[u8], mtime: u64) -> Result<Vec<u8>, PackageError> {
    let mut builder = tar::Builder::new(Vec::new());
    let relative = path.trim_start_matches('/');
    let components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
    // A program named like a skeleton directory (`/run`) keeps its name.
    let mut dirs: std::collections::BTreeSet<String> = SKELETON_DIRS
        .iter()
        .filter(|d| **d != relative)
        .map(|d| format!("{d}/"))
        .collect();
    let mut parent = String::new();
    for dir in &components[..components.len().saturating_sub(1)] {
        parent.push_str(dir);
        parent.push('/');
        dirs.insert(parent.clone());
    }
    for dir in &dirs {
        let mut header = tar_header(tar::EntryType::Directory, 0o755, 0, mtime);
        builder
            .append_data(&mut header, dir, std::io::empty())
            .map_err(tar_io)?;
    }
    let mut header = tar_header(tar::EntryType::Regular, 0o755, bytes.len() as u64, mtime);
    builder
        .append_data(&mut header, relative, bytes)
        .map_err(tar_io)?;
    builder.into_inner().map_err(tar_io)
}

/// The image-layout tar: directories first, then files, all in sorted order.
fn layout_tar(files: &BTreeMap<String, Vec<u8>>, mtime: u64) -> Result<Vec<u8>, PackageError> {
    let mut builder = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = tar_header(tar::EntryType::Directory, 0o755, 0, mtime);
        builder
            .append_data(&mut header, dir, std::io::empty())
            .map_err(tar_io)?;
    }
    for (path, bytes) in files {
        let mut header = tar_header(tar::EntryType::Regular, 0o644, bytes.len() as u64, mtime);
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .map_err(tar_io)?;
    }
    builder.into_inner().map_err(tar_io)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (proleptic Gregorian, UTC).
pub fn rfc3339_utc(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil-from-days algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_764_000_000), "2025-11-24T16:00:00Z");
    }

    /// The entries of a layer tar: (path, is a directory).
    fn entries(layer: &[u8]) -> Vec<(String, bool)> {
        tar::Archive::new(layer)
            .entries()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let path = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                (path, e.header().entry_type().is_dir())
            })
            .collect()
    }

    #[test]
    fn a_layer_holds_the_mount_points_its_parents_and_the_program() -> Result<(), PackageError> {
        let dir = |p: &str| (p.to_owned(), true);
        assert_eq!(
            entries(&single_file_tar("/app.wasm", b"\0asm", 0)?),
            vec![dir("dev/"), dir("run/"), ("app.wasm".to_owned(), false)]
        );
        assert_eq!(
            entries(&single_file_tar("/run/bin/app.wasm", b"\0asm", 0)?),
            vec![
                dir("dev/"),
                dir("run/"),
                dir("run/bin/"),
                ("run/bin/app.wasm".to_owned(), false)
            ]
        );
        // A program named like a mount point stays a file.
        assert_eq!(
            entries(&single_file_tar("/run", b"\0asm", 0)?),
            vec![dir("dev/"), ("run".to_owned(), false)]
        );
        Ok(())
    }

    #[test]
    fn format_names_parse() {
        assert_eq!("wasm-layer".parse(), Ok(PackageFormat::WasmLayer));
        assert!(
            "zip"
                .parse::<PackageFormat>()
                .is_err_and(|e| e.contains("zip"))
        );
    }
}
