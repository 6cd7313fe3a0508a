//! Reading image archives: an OCI image layout (as a tar or a directory) or a `docker save`
//! archive, walked index → manifest → config → layers.
//!
//! Every blob is checked against its descriptor's size and sha256 before it is parsed or
//! returned; Docker's legacy layers, which have no descriptors, are checked against the
//! config's `rootfs.diff_ids`. Wasm layers must hold valid wasm, and CNCF artifacts must follow
//! the spec (one `application/wasm` layer, a valid config).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Platform};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::digest::{BlobMismatch, sha256_digest, sha256_hex, verify_blob};
use crate::extract::{UnsafePath, resolve_link_target, safe_relative_path};
use crate::media_types::{self as mt, ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::wasm::{WasmError, WasmInfo, WasmKind, inspect_wasm};
use crate::wasm_config::{WasmConfig, WasmConfigError};

/// Caps on what reading an archive may load.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Layers in one image's manifest (see [`MAX_LAYERS`]).
    pub max_layers: usize,
    /// Total bytes of file content loaded from a tar, or of any one blob from a directory.
    pub max_total_bytes: u64,
    /// Entries in a tar.
    pub max_entries: u64,
    /// Nested indexes followed below `index.json`.
    pub max_index_depth: usize,
    /// Image manifests in one archive, across all its indexes (see [`MAX_MANIFESTS`]).
    pub max_manifests: usize,
}

/// Image manifests an archive may hold. A multi-platform index lists one per platform (a
/// dozen at most in the wild) and an archive a few images; every manifest is read and
/// verified, so an index listing one manifest 100,000 times is refused from its length.
pub const MAX_MANIFESTS: usize = 256;

/// Layers an image may have. containerd's overlayfs snapshotter stacks every layer as a lower
/// directory of one mount, and the kernel caps a mount's options at one page, so images with
/// more than about 128 layers cannot be mounted anywhere (Docker refuses more than 125); wasm
/// images have one. A manifest listing more is refused before any layer is read.
pub const MAX_LAYERS: usize = 128;

/// A manifest that lists more layers than a cap; shared by every reader of manifests
/// (this crate's archive reader, the shim's content-store reader) so the refusal reads the same.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} lists {count} layers; at most {limit} are accepted (no snapshotter can mount more)"
)]
pub struct TooManyLayers {
    /// The manifest.
    pub what: String,
    /// Layers listed.
    pub count: usize,
    /// The cap.
    pub limit: usize,
}

/// Refuses `count` layers above `limit` (normally [`MAX_LAYERS`]) before any layer is read.
pub fn check_layer_count(count: usize, limit: usize, what: &str) -> Result<(), TooManyLayers> {
    if count > limit {
        return Err(TooManyLayers {
            what: what.to_owned(),
            count,
            limit,
        });
    }
    Ok(())
}

impl Default for ReadLimits {
    /// [`MAX_LAYERS`] layers, 1 GiB, 100 000 entries, indexes nested 4 deep,
    /// [`MAX_MANIFESTS`] manifests.
    fn default() -> Self {
        ReadLimits {
            max_layers: MAX_LAYERS,
            max_total_bytes: 1 << 30,
            max_entries: 100_000,
            max_index_depth: 4,
            max_manifests: MAX_MANIFESTS,
        }
    }
}

/// The two archive layouts wasmcell reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    OciLayout,
    /// Legacy `docker save` (`manifest.json` only).
    DockerArchive,
}

/// Everything an archive holds, verified.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Which layout it used.
    pub format: ArchiveFormat,
    /// Its images (one per manifest reachable from the index).
    pub images: Vec<Image>,
}

/// One image or artifact.
#[derive(Debug, Clone)]
pub struct Image {
    /// Names from `io.containerd.image.name`, `org.opencontainers.image.ref.name` or `RepoTags`.
    pub names: Vec<String>,
    /// The manifest's descriptor (synthesised for legacy Docker archives).
    pub manifest_descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The manifest as stored (its digest is the manifest descriptor's), for pushing it
    /// unchanged.
    pub manifest_bytes: Vec<u8>,
    /// The config, by kind.
    pub config: Config,
    /// The config blob as stored (verified against its descriptor).
    pub config_bytes: Vec<u8>,
    /// The layers, verified, in manifest order.
    pub layers: Vec<Layer>,
}

/// An image's config.
#[derive(Debug, Clone)]
pub enum Config {
    /// An OCI or Docker image config.
    Image(Box<ImageConfiguration>),
    /// A CNCF wasm artifact config.
    Wasm(WasmConfig),
    /// A config that says nothing about the wasm it goes with, on a manifest whose only layer
    /// is wasm: an OCI 1.1 artifact's empty config, an image config with no wasm platform, or
    /// any other blob (registries that take only OCI manifests get CRDs stored as configs).
    /// Such an image runs, validated from its binary alone, with [`Image::config_warning`].
    Foreign {
        /// The config's media type, as the manifest gives it.
        media_type: String,
    },
}

/// A verified layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Its descriptor.
    pub descriptor: Descriptor,
    /// Its bytes (checked against the descriptor).
    pub bytes: Vec<u8>,
    /// For wasm layers, the decoded binary.
    pub wasm: Option<WasmInfo>,
}

impl Image {
    /// Whether this is a wasm artifact: a CNCF one, or one found with a foreign config
    /// ([`Config::Foreign`]); either has no image config `ctr run` can use.
    pub fn is_artifact(&self) -> bool {
        matches!(self.config, Config::Wasm(_) | Config::Foreign { .. })
    }

    /// The one warning an image with a [`Config::Foreign`] gets: what its config is, and the
    /// fix.
    pub fn config_warning(&self) -> Option<String> {
        let Config::Foreign { media_type } = &self.config else {
            return None;
        };
        let name = self
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| self.manifest_descriptor.digest().to_string());
        Some(foreign_config_warning(&name, media_type))
    }

    /// The platform recorded on the index entry or in the config.
    pub fn platform(&self) -> Option<Platform> {
        self.manifest_descriptor.platform().clone()
    }

    /// Whether the image runs wasm: it has a wasm layer (artifacts, wasm-layer images), or its
    /// index entry or image config names the `wasm` architecture (images with a filesystem).
    pub fn runs_wasm(&self) -> bool {
        let wasm_platform = self
            .platform()
            .is_some_and(|p| *p.architecture() == oci_spec::image::Arch::Wasm);
        let wasm_config = match &self.config {
            Config::Image(config) => *config.architecture() == oci_spec::image::Arch::Wasm,
            _ => false,
        };
        self.wasm_layer().is_some() || wasm_platform || wasm_config
    }

    /// The first wasm layer, which is the program for wasm-layer images and artifacts.
    pub fn wasm_layer(&self) -> Option<&Layer> {
        self.layers.iter().find(|l| l.wasm.is_some())
    }
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file system failed.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a tar archive.
    #[error("{path} is not an image archive: not a readable tar ({source})")]
    NotTar {
        /// The file.
        path: PathBuf,
        /// The tar reader's error.
        #[source]
        source: std::io::Error,
    },
    /// Neither `index.json` nor `manifest.json`.
    #[error(
        "{path} is not an image archive: it has neither index.json (OCI layout) nor manifest.json (docker save)"
    )]
    UnknownLayout {
        /// The archive.
        path: PathBuf,
    },
    /// An OCI layout without its `oci-layout` marker.
    #[error("{path}: OCI layout has index.json but no oci-layout file")]
    MissingLayoutMarker {
        /// The archive.
        path: PathBuf,
    },
    /// A tar entry path that is absolute or has `..`.
    #[error("{path}: archive entry {entry:?} {reason}")]
    UnsafeEntry {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// Too much data.
    #[error("{path}: entry {entry:?} claims {claimed} bytes, over the cap of {limit} bytes")]
    TooLarge {
        /// The archive.
        path: PathBuf,
        /// The entry or blob.
        entry: String,
        /// Bytes claimed.
        claimed: u64,
        /// The cap.
        limit: u64,
    },
    /// A manifest with more layers than [`ReadLimits::max_layers`].
    #[error(transparent)]
    TooManyLayers(#[from] TooManyLayers),
    /// Too many tar entries.
    #[error("{path}: more than {limit} entries")]
    TooManyEntries {
        /// The archive.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// Invalid JSON, or JSON of the wrong shape.
    #[error("{what} is not valid: {source}")]
    Json {
        /// Which document (file name or digest).
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A descriptor names a blob the archive does not have.
    #[error("missing blob {digest} ({what})")]
    MissingBlob {
        /// The digest.
        digest: String,
        /// What referred to it.
        what: String,
    },
    /// A blob does not match its descriptor.
    #[error("{what}: {source}")]
    Blob {
        /// What the blob is.
        what: String,
        /// How it differs.
        #[source]
        source: BlobMismatch,
    },
    /// A digest that is not sha256.
    #[error("{what}: unsupported digest {digest:?} (only sha256 is supported)")]
    UnsupportedDigest {
        /// What referred to it.
        what: String,
        /// The digest.
        digest: String,
    },
    /// More manifests than the cap.
    #[error("{what} lists {count} manifests; at most {limit} are accepted in one archive")]
    TooManyManifests {
        /// The index (or `manifest.json`).
        what: String,
        /// Manifests listed (with those already read from other indexes).
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// An index without manifests.
    #[error("{what} lists no manifests")]
    NoManifests {
        /// Which index.
        what: String,
    },
    /// Indexes nested deeper than the cap.
    #[error("index {digest} is nested more than {limit} levels deep")]
    IndexTooDeep {
        /// The index too deep.
        digest: String,
        /// The cap.
        limit: usize,
    },
    /// A descriptor in an index that is neither an index nor a manifest.
    #[error(
        "index entry {digest} has media type {media_type}, which is neither an image index nor a manifest"
    )]
    UnknownManifestMediaType {
        /// The entry.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A config media type wasmcell cannot read.
    #[error(
        "manifest {manifest}: unknown config media type {media_type} (expected an OCI or Docker image config, or {})",
        mt::WASM_CONFIG_V0
    )]
    UnknownConfigMediaType {
        /// The manifest.
        manifest: String,
        /// The config's media type.
        media_type: String,
    },
    /// An artifact with other than one `application/wasm` layer.
    #[error(
        "wasm artifact {manifest} must have exactly one {} layer, found {count} layer(s): {media_types:?}",
        mt::WASM_LAYER
    )]
    ArtifactLayers {
        /// The manifest.
        manifest: String,
        /// How many layers it has.
        count: usize,
        /// Their media types.
        media_types: Vec<String>,
    },
    /// A wasm config that breaks the spec.
    #[error("wasm artifact {manifest}: {source}")]
    WasmConfig {
        /// The manifest.
        manifest: String,
        /// The rule broken.
        #[source]
        source: WasmConfigError,
    },
    /// The config's `os` disagrees with the binary's kind.
    #[error("wasm artifact {manifest}: config os is {os:?} but the layer is a {kind}")]
    OsKindMismatch {
        /// The manifest.
        manifest: String,
        /// The config's os.
        os: String,
        /// What the layer holds.
        kind: WasmKind,
    },
    /// A wasm layer whose bytes are not (valid) wasm.
    #[error("layer {digest} ({media_type}): {source}")]
    NotWasm {
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
        /// The decoder's complaint.
        #[source]
        source: WasmError,
    },
    /// A legacy Docker layer whose content does not hash to the config's diff id.
    #[error(
        "docker archive layer {path}: uncompressed content hashes to {actual}, config rootfs.diff_ids says {expected}"
    )]
    DiffIdMismatch {
        /// The layer's path in the archive.
        path: String,
        /// The diff id.
        expected: String,
        /// What it hashes to.
        actual: String,
    },
    /// A legacy Docker manifest whose layer count differs from the config's diff ids.
    #[error("docker archive image {config}: {layers} layers but {diff_ids} rootfs.diff_ids")]
    DiffIdCount {
        /// The config path.
        config: String,
        /// Layers listed.
        layers: usize,
        /// Diff ids listed.
        diff_ids: usize,
    },
}

/// Reads and verifies an archive from a tar file or an image-layout directory.
pub fn read_archive(path: &Path, limits: ReadLimits) -> Result<Archive, ReadError> {
    let meta = fs::metadata(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let source = if meta.is_dir() {
        Source::Dir {
            root: path.to_owned(),
            limits,
        }
    } else {
        let file = fs::File::open(path).map_err(|source| ReadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Source::tar(path, std::io::BufReader::new(file), limits)?
    };
    let reader = Reader {
        path: path.to_owned(),
        source,
        limits,
    };
    reader.read()
}

/// The archive's files: all of a tar held in memory, or a directory read on demand.
enum Source {
    Tar {
        files: BTreeMap<PathBuf, Vec<u8>>,
        symlinks: BTreeMap<PathBuf, PathBuf>,
    },
    Dir {
        root: PathBuf,
        limits: ReadLimits,
    },
}

impl Source {
    fn tar(path: &Path, reader: impl Read, limits: ReadLimits) -> Result<Source, ReadError> {
        let io = |source| ReadError::NotTar {
            path: path.to_owned(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        let mut files = BTreeMap::new();
        let mut symlinks = BTreeMap::new();
        let (mut total, mut count) = (0u64, 0u64);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            count += 1;
            if count > limits.max_entries {
                return Err(ReadError::TooManyEntries {
                    path: path.to_owned(),
                    limit: limits.max_entries,
                });
            }
            let raw = entry.path().map_err(io)?.into_owned();
            let shown = raw.display().to_string();
            let relative = match safe_relative_path(&raw) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(reason) => {
                    return Err(ReadError::UnsafeEntry {
                        path: path.to_owned(),
                        entry: shown,
                        reason: match reason {
                            UnsafePath::Absolute => "has an absolute path",
                            UnsafePath::Parent => "contains '..'",
                        },
                    });
                }
            };
            let entry_type = entry.header().entry_type();
            if entry_type.is_file() {
                let claimed = entry.header().entry_size().map_err(io)?;
                if claimed > limits.max_total_bytes.saturating_sub(total) {
                    return Err(ReadError::TooLarge {
                        path: path.to_owned(),
                        entry: shown,
                        claimed,
                        limit: limits.max_total_bytes,
                    });
                }
                let mut bytes = Vec::with_capacity(claimed as usize);
                (&mut entry)
                    .take(claimed)
                    .read_to_end(&mut bytes)
                    .map_err(io)?;
                total += bytes.len() as u64;
                files.insert(relative, bytes);
            } else if entry_type.is_symlink()
                && let Some(target) = entry.link_name().map_err(io)?
            {
                symlinks.insert(relative, target.into_owned());
            }
        }
        Ok(Source::Tar { files, symlinks })
    }

    /// The file at `relative`, following in-archive symlinks (a few hops, never outside).
    fn get(&self, relative: &Path) -> Result<Option<Vec<u8>>, ReadError> {
        match self {
            Source::Tar { files, symlinks } => {
                let mut current = relative.to_owned();
                for _ in 0..8 {
                    if let Some(bytes) = files.get(&current) {
                        return Ok(Some(bytes.clone()));
                    }
                    let Some(target) = symlinks.get(&current) else {
                        return Ok(None);
                    };
                    let parent = current.parent().unwrap_or(Path::new(""));
                    match resolve_link_target(parent, target) {
                        Some(next) => current = next,
                        None => return Ok(None),
                    }
                }
                Ok(None)
            }
            Source::Dir { root, limits } => {
                let path = root.join(relative);
                // Refuse to follow a symlink out of the layout directory.
                let (Ok(real_root), Ok(real)) = (fs::canonicalize(root), fs::canonicalize(&path))
                else {
                    return Ok(None);
                };
                if !real.starts_with(&real_root) {
                    return Ok(None);
                }
                let io = |source| ReadError::Io {
                    path: path.clone(),
                    source,
                };
                let meta = fs::metadata(&real).map_err(io)?;
                if !meta.is_file() {
                    return Ok(None);
                }
                if meta.len() > limits.max_total_bytes {
                    return Err(ReadError::TooLarge {
                        path: root.clone(),
                        entry: relative.display().to_string(),
                        claimed: meta.len(),
                        limit: limits.max_total_bytes,
                    });
                }
                fs::read(&real).map(Some).map_err(io)
            }
        }
    }

    fn has(&self, relative: &str) -> Result<bool, ReadError> {
        Ok(self.get(Path::new(relative))?.is_some())
    }
}

struct Reader {
    path: PathBuf,
    source: Source,
    limits: ReadLimits,
}

fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ReadError> {
    serde_json::from_slice(bytes).map_err(|source| ReadError::Json {
        what: what.to_owned(),
        source,
    })
}

impl Reader {
    fn read(&self) -> Result<Archive, ReadError> {
        if let Some(index) = self.source.get(Path::new("index.json"))? {
            if !self.source.has("oci-layout")? {
                return Err(ReadError::MissingLayoutMarker {
                    path: self.path.clone(),
                });
            }
            let index: ImageIndex = parse_json(&index, "index.json")?;
            let mut images = Vec::new();
            self.walk_index(&index, "index.json", 0, &mut images)?;
            return Ok(Archive {
                format: ArchiveFormat::OciLayout,
                images,
            });
        }
        if let Some(manifest) = self.source.get(Path::new("manifest.json"))? {
            return self.read_docker(&manifest);
        }
        Err(ReadError::UnknownLayout {
            path: self.path.clone(),
        })
    }

    /// A blob by descriptor, verified against its size and digest.
    fn blob(&self, descriptor: &Descriptor, what: &str) -> Result<Vec<u8>, ReadError> {
        let digest = descriptor.digest().to_string();
        let Some(hex) = sha256_hex(&digest) else {
            return Err(ReadError::UnsupportedDigest {
                what: what.to_owned(),
                digest,
            });
        };
        let bytes = self
            .source
            .get(&Path::new("blobs/sha256").join(hex))?
            .ok_or_else(|| ReadError::MissingBlob {
                digest: digest.clone(),
                what: what.to_owned(),
            })?;
        verify_blob(&digest, descriptor.size(), &bytes).map_err(|source| ReadError::Blob {
            what: what.to_owned(),
            source,
        })?;
        Ok(bytes)
    }

    fn walk_index(
        &self,
        index: &ImageIndex,
        what: &str,
        depth: usize,
        images: &mut Vec<Image>,
    ) -> Result<(), ReadError> {
        if index.manifests().is_empty() {
            return Err(ReadError::NoManifests {
                what: what.to_owned(),
            });
        }
        self.check_manifest_count(images.len() + index.manifests().len(), what)?;
        for descriptor in index.manifests() {
            let digest = descriptor.digest().to_string();
            let media_type = descriptor.media_type().to_string();
            if mt::is_index(&media_type) {
                if depth >= self.limits.max_index_depth {
                    return Err(ReadError::IndexTooDeep {
                        digest,
                        limit: self.limits.max_index_depth,
                    });
                }
                let what = format!("index {digest}");
                let nested: ImageIndex = parse_json(&self.blob(descriptor, &what)?, &what)?;
                self.walk_index(&nested, &what, depth + 1, images)?;
            } else if mt::is_manifest(&media_type) {
                images.push(self.read_image(descriptor)?);
            } else {
                return Err(ReadError::UnknownManifestMediaType { digest, media_type });
            }
        }
        Ok(())
    }

    fn check_manifest_count(&self, count: usize, what: &str) -> Result<(), ReadError> {
        if count > self.limits.max_manifests {
            return Err(ReadError::TooManyManifests {
                what: what.to_owned(),
                count,
                limit: self.limits.max_manifests,
            });
        }
        Ok(())
    }

    fn check_layer_count(&self, count: usize, what: &str) -> Result<(), ReadError> {
        Ok(check_layer_count(count, self.limits.max_layers, what)?)
    }

    fn read_image(&self, descriptor: &Descriptor) -> Result<Image, ReadError> {
        let digest = descriptor.digest().to_string();
        let what = format!("manifest {digest}");
        let manifest_bytes = self.blob(descriptor, &what)?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, &what)?;
        self.check_layer_count(manifest.layers().len(), &what)?;
        let config_desc = manifest.config();
        let config_what = format!("config {} of manifest {digest}", config_desc.digest());
        let config_media_type = config_desc.media_type().to_string();
        let config_bytes = self.blob(config_desc, &config_what)?;
        let only_wasm = matches!(manifest.layers().as_slice(),
            [layer] if mt::is_wasm_layer(layer.media_type().as_ref()));
        let foreign = || Config::Foreign {
            media_type: config_media_type.clone(),
        };
        let config = match config_media_type.as_str() {
            mt::OCI_IMAGE_CONFIG | mt::DOCKER_IMAGE_CONFIG => {
                match parse_json::<ImageConfiguration>(&config_bytes, &config_what) {
                    Ok(image) if only_wasm && image.architecture().to_string() != "wasm" => {
                        foreign()
                    }
                    Ok(image) => Config::Image(Box::new(image)),
                    Err(_) if only_wasm => foreign(),
                    Err(e) => return Err(e),
                }
            }
            mt::WASM_CONFIG_V0 => Config::Wasm(parse_json(&config_bytes, &config_what)?),
            _ if only_wasm => foreign(),
            _ => {
                return Err(ReadError::UnknownConfigMediaType {
                    manifest: digest,
                    media_type: config_media_type,
                });
            }
        };
        if let Config::Wasm(wasm_config) = &config {
            let layer_types: Vec<String> = manifest
                .layers()
                .iter()
                .map(|l| l.media_type().to_string())
                .collect();
            if layer_types != [mt::WASM_LAYER] {
                return Err(ReadError::ArtifactLayers {
                    manifest: digest,
                    count: layer_types.len(),
                    media_types: layer_types,
                });
            }
            let layer_digests: Vec<String> = manifest
                .layers()
                .iter()
                .map(|l| l.digest().to_string())
                .collect();
            wasm_config
                .validate(&layer_digests)
                .map_err(|source| ReadError::WasmConfig {
                    manifest: digest.clone(),
                    source,
                })?;
        }
        let mut layers = Vec::with_capacity(manifest.layers().len());
        for (i, layer_desc) in manifest.layers().iter().enumerate() {
            let layer_what = format!("layer {i} ({}) of manifest {digest}", layer_desc.digest());
            let bytes = self.blob(layer_desc, &layer_what)?;
            let media_type = layer_desc.media_type().to_string();
            let wasm = if mt::is_wasm_layer(&media_type) {
                Some(inspect_wasm(&bytes).map_err(|source| ReadError::NotWasm {
                    digest: layer_desc.digest().to_string(),
                    media_type,
                    source,
                })?)
            } else {
                None
            };
            layers.push(Layer {
                descriptor: layer_desc.clone(),
                bytes,
                wasm,
            });
        }
        if let Config::Wasm(wasm_config) = &config
            && let Some(info) = layers.first().and_then(|l| l.wasm.as_ref())
            && info.kind.wasi_os() != wasm_config.os
        {
            return Err(ReadError::OsKindMismatch {
                manifest: digest,
                os: wasm_config.os.clone(),
                kind: info.kind,
            });
        }
        Ok(Image {
            names: names_of(descriptor),
            manifest_descriptor: descriptor.clone(),
            manifest,
            manifest_bytes,
            config,
            config_bytes,
            layers,
        })
    }

    fn read_docker(&self, manifest_json: &[u8]) -> Result<Archive, ReadError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = parse_json(manifest_json, "manifest.json")?;
        if entries.is_empty() {
            return Err(ReadError::NoManifests {
                what: "manifest.json".to_owned(),
            });
        }
        self.check_manifest_count(entries.len(), "manifest.json")?;
        let mut images = Vec::new();
        for entry in entries {
            self.check_layer_count(entry.layers.len(), "manifest.json")?;
            let config_bytes = self.archive_file(&entry.config, "docker config")?;
            let config_digest = sha256_digest(&config_bytes);
            // Legacy archives name the config after its digest; check it when they do.
            let stem = Path::new(&entry.config)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
                let claimed = format!("sha256:{stem}");
                if claimed != config_digest {
                    return Err(ReadError::Blob {
                        what: format!("docker config {}", entry.config),
                        source: BlobMismatch::Digest {
                            expected: claimed,
                            actual: config_digest,
                        },
                    });
                }
            }
            let config: ImageConfiguration = parse_json(&config_bytes, &entry.config)?;
            let diff_ids = config.rootfs().diff_ids().clone();
            if diff_ids.len() != entry.layers.len() {
                return Err(ReadError::DiffIdCount {
                    config: entry.config.clone(),
                    layers: entry.layers.len(),
                    diff_ids: diff_ids.len(),
                });
            }
            let mut layers = Vec::new();
            for (layer_path, diff_id) in entry.layers.iter().zip(&diff_ids) {
                let bytes = self.archive_file(layer_path, "docker layer")?;
                let gzip = bytes.starts_with(&[0x1f, 0x8b]);
                let actual = uncompressed_digest(&bytes, gzip, self.limits.max_total_bytes)
                    .map_err(|source| ReadError::Io {
                        path: PathBuf::from(layer_path),
                        source,
                    })?;
                if &actual != diff_id {
                    return Err(ReadError::DiffIdMismatch {
                        path: layer_path.clone(),
                        expected: diff_id.clone(),
                        actual,
                    });
                }
                let media_type = if gzip {
                    mt::DOCKER_LAYER_TAR_GZIP
                } else {
                    mt::DOCKER_LAYER_TAR
                };
                layers.push(Layer {
                    descriptor: descriptor_for(media_type, &bytes),
                    bytes,
                    wasm: None,
                });
            }
            let manifest_value = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": mt::DOCKER_MANIFEST,
                "config": descriptor_for(mt::DOCKER_IMAGE_CONFIG, &config_bytes),
                "layers": layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
            });
            let manifest: ImageManifest =
                serde_json::from_value(manifest_value.clone()).map_err(|source| {
                    ReadError::Json {
                        what: "synthesised docker manifest".to_owned(),
                        source,
                    }
                })?;
            let manifest_bytes =
                serde_json::to_vec(&manifest_value).map_err(|source| ReadError::Json {
                    what: "synthesised docker manifest".to_owned(),
                    source,
                })?;
            images.push(Image {
                names: entry.repo_tags.unwrap_or_default(),
                manifest_descriptor: descriptor_for(mt::DOCKER_MANIFEST, &manifest_bytes),
                manifest,
                manifest_bytes,
                config: Config::Image(Box::new(config)),
                config_bytes,
                layers,
            });
        }
        Ok(Archive {
            format: ArchiveFormat::DockerArchive,
            images,
        })
    }

    fn archive_file(&self, name: &str, what: &str) -> Result<Vec<u8>, ReadError> {
        let relative = match safe_relative_path(Path::new(name)) {
            Ok(Some(p)) => p,
            _ => {
                return Err(ReadError::UnsafeEntry {
                    path: self.path.clone(),
                    entry: name.to_owned(),
                    reason: "is not a relative path inside the archive",
                });
            }
        };
        self.source
            .get(&relative)?
            .ok_or_else(|| ReadError::MissingBlob {
                digest: name.to_owned(),
                what: what.to_owned(),
            })
    }
}

fn descriptor_for(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor::new(
        media_type.into(),
        bytes.len() as u64,
        oci_spec::image::Digest::try_from(sha256_digest(bytes).as_str())
            .unwrap_or_else(|_| unreachable!("sha256_digest always yields a valid digest")),
    )
}

fn uncompressed_digest(bytes: &[u8], gzip: bool, limit: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(bytes).take(limit))
    } else {
        Box::new(bytes)
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn names_of(descriptor: &Descriptor) -> Vec<String> {
    let Some(annotations) = descriptor.annotations() else {
        return Vec::new();
    };
    [ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME]
        .iter()
        .filter_map(|key| annotations.get(*key).cloned())
        .collect()
}

/// The warning for an image whose config is not a wasm config (see [`Config::Foreign`]);
/// the shim logs the same words for such an image stored in containerd.
pub fn foreign_config_warning(image: &str, media_type: &str) -> String {
    format!(
        "image {image}: its config ({media_type}) is not a wasm config; running it validated from \
         the binary alone (`wasmcell package --format artifact` writes a proper {} config)",
        mt::WASM_CONFIG_V0
    )
}
