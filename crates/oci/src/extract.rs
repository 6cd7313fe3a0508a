//! Safe extraction of filesystem layers into a directory, for running images locally.
//!
//! A layer comes from an image, so it is untrusted: entries may not be absolute, contain `..`,
//! write through a symlink, link (soft or hard) outside the extraction root, or create device
//! nodes; totals are capped, and a header's claimed size is checked against the cap before any
//! of its bytes are read. Layers are extracted into a fresh temporary sibling of the
//! destination that is renamed into place only when every layer succeeded, so a failure
//! leaves nothing behind.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::media_types::{Compression, LayerKind, layer_kind};

/// Caps on what extraction may create.
#[derive(Debug, Clone, Copy)]
pub struct ExtractLimits {
    /// Total bytes of regular-file content across all layers.
    pub max_total_bytes: u64,
    /// Total number of entries across all layers.
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    /// 1 GiB of file content and 100 000 entries: far beyond any wasm image, small enough that a
    /// hostile layer cannot fill the disk.
    fn default() -> Self {
        ExtractLimits {
            max_total_bytes: 1 << 30,
            max_entries: 100_000,
        }
    }
}

/// Why a layer was refused; the destination does not exist afterwards.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The entry path is absolute.
    #[error("layer {layer}: entry {entry:?} has an absolute path")]
    AbsolutePath {
        /// Layer index or digest.
        layer: String,
        /// The entry's path.
        entry: String,
    },
    /// The entry path has a `..` component.
    #[error("layer {layer}: entry {entry:?} contains '..'")]
    ParentComponent {
        /// Layer index or digest.
        layer: String,
        /// The entry's path.
        entry: String,
    },
    /// A symlink whose target leaves the extraction root.
    #[error("layer {layer}: symlink {entry:?} -> {target:?} escapes the extraction root")]
    SymlinkEscape {
        /// Layer index or digest.
        layer: String,
        /// The link's path.
        entry: String,
        /// Its target.
        target: String,
    },
    /// A hard link whose target is outside the root or not a regular file inside it.
    #[error("layer {layer}: hard link {entry:?} -> {target:?} escapes the extraction root")]
    HardlinkEscape {
        /// Layer index or digest.
        layer: String,
        /// The link's path.
        entry: String,
        /// Its target.
        target: String,
    },
    /// An entry would be written through a symlink already in the tree.
    #[error("layer {layer}: entry {entry:?} would be written through the symlink {through:?}")]
    ThroughSymlink {
        /// Layer index or digest.
        layer: String,
        /// The entry's path.
        entry: String,
        /// The symlink on its path.
        through: String,
    },
    /// Device nodes and FIFOs are refused.
    #[error("layer {layer}: entry {entry:?} is a {kind}, which wasmcell does not create")]
    SpecialFile {
        /// Layer index or digest.
        layer: String,
        /// The entry's path.
        entry: String,
        /// What it is.
        kind: &'static str,
    },
    /// The content cap would be exceeded.
    #[error(
        "layer {layer}: entry {entry:?} claims {claimed} bytes, over the extraction cap ({limit} bytes in all)"
    )]
    TooLarge {
        /// Layer index or digest.
        layer: String,
        /// The entry's path.
        entry: String,
        /// Bytes the header claims.
        claimed: u64,
        /// The cap.
        limit: u64,
    },
    /// The entry cap would be exceeded.
    #[error("layer {layer}: more than {limit} entries")]
    TooManyEntries {
        /// Layer index or digest.
        layer: String,
        /// The cap.
        limit: u64,
    },
    /// A media type that is not a filesystem layer, or one compressed in a way we don't read.
    #[error("layer {layer}: media type {media_type} cannot be extracted as a filesystem")]
    NotExtractable {
        /// Layer index or digest.
        layer: String,
        /// Its media type.
        media_type: String,
    },
    /// The destination exists already.
    #[error("extraction destination {path} already exists")]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
    /// The tar is malformed or the filesystem failed.
    #[error("layer {layer}: {context}: {source}")]
    Io {
        /// Layer index or digest.
        layer: String,
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A layer to extract: its media type (decides decompression) and bytes.
#[derive(Debug, Clone, Copy)]
pub struct LayerInput<'a> {
    /// Name for messages (digest, or index).
    pub name: &'a str,
    /// Layer media type.
    pub media_type: &'a str,
    /// Layer blob.
    pub bytes: &'a [u8],
}

/// What extraction created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries processed.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Extracts `layers` in order into `dest`, which must not exist yet.
pub fn extract_layers(
    layers: &[LayerInput<'_>],
    dest: &Path,
    limits: ExtractLimits,
) -> Result<ExtractStats, ExtractError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ExtractError::DestinationExists {
            path: dest.to_owned(),
        });
    }
    let staging = staging_path(dest);
    let io = |context: String| {
        move |source| ExtractError::Io {
            layer: "-".to_owned(),
            context,
            source,
        }
    };
    fs::create_dir(&staging).map_err(io(format!("creating {}", staging.display())))?;
    let mut extractor = Extractor {
        root: &staging,
        limits,
        stats: ExtractStats::default(),
    };
    let result = layers
        .iter()
        .try_for_each(|layer| extractor.layer(layer))
        .and_then(|()| {
            fs::rename(&staging, dest).map_err(io(format!("renaming into {}", dest.display())))
        });
    match result {
        Ok(()) => Ok(extractor.stats),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn staging_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .unwrap_or(OsStr::new("rootfs"))
        .to_string_lossy();
    dest.with_file_name(format!(".{name}.extract-{}", std::process::id()))
}

/// Why a path inside an archive is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsafePath {
    Absolute,
    Parent,
}

/// Normalises an archive-relative path (dropping `.` and a leading `./`), refusing absolute
/// paths and `..`. Returns `None` for the root itself.
pub(crate) fn safe_relative_path(path: &Path) -> Result<Option<PathBuf>, UnsafePath> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnsafePath::Parent),
            Component::RootDir | Component::Prefix(_) => return Err(UnsafePath::Absolute),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Lexically resolves a symlink `target` relative to the directory holding the link (both
/// root-relative); `None` if it climbs above the root or is absolute.
pub(crate) fn resolve_link_target(link_parent: &Path, target: &Path) -> Option<PathBuf> {
    let mut out: Vec<&OsStr> = link_parent
        .components()
        .filter_map(|c| match c {
            Component::Normal(c) => Some(c),
            _ => None,
        })
        .collect();
    for component in target.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

struct Extractor<'a> {
    root: &'a Path,
    limits: ExtractLimits,
    stats: ExtractStats,
}

impl Extractor<'_> {
    fn layer(&mut self, layer: &LayerInput<'_>) -> Result<(), ExtractError> {
        let name = layer.name.to_owned();
        let reader: Box<dyn Read + '_> = match layer_kind(layer.media_type) {
            Some(LayerKind::Tar(Compression::None)) => Box::new(layer.bytes),
            Some(LayerKind::Tar(Compression::Gzip)) => {
                Box::new(flate2::read::GzDecoder::new(layer.bytes))
            }
            _ => {
                return Err(ExtractError::NotExtractable {
                    layer: name,
                    media_type: layer.media_type.to_owned(),
                });
            }
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|source| ExtractError::Io {
            layer: name.clone(),
            context: "reading tar".to_owned(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ExtractError::Io {
                layer: name.clone(),
                context: "reading tar entry".to_owned(),
                source,
            })?;
            self.entry(&name, entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        layer: &str,
        mut entry: tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
        let raw_path = entry.path().map_err(|source| ExtractError::Io {
            layer: layer.to_owned(),
            context: "decoding entry path".to_owned(),
            source,
        })?;
        let shown = raw_path.display().to_string();
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(ExtractError::TooManyEntries {
                layer: layer.to_owned(),
                limit: self.limits.max_entries,
            });
        }
        let relative = match safe_relative_path(&raw_path) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()), // the root directory itself
            Err(UnsafePath::Absolute) => {
                return Err(ExtractError::AbsolutePath {
                    layer: layer.to_owned(),
                    entry: shown,
                });
            }
            Err(UnsafePath::Parent) => {
                return Err(ExtractError::ParentComponent {
                    layer: layer.to_owned(),
                    entry: shown,
                });
            }
        };
        let io = |context: &str| {
            let layer = layer.to_owned();
            let context = format!("{context} {shown}");
            move |source| ExtractError::Io {
                layer,
                context,
                source,
            }
        };
        let entry_type = entry.header().entry_type();
        let claimed = entry.header().entry_size().map_err(io("reading size of"))?;
        if entry_type.is_file() || entry_type == tar::EntryType::Continuous {
            let remaining = self.limits.max_total_bytes.saturating_sub(self.stats.bytes);
            if claimed > remaining {
                return Err(ExtractError::TooLarge {
                    layer: layer.to_owned(),
                    entry: shown,
                    claimed,
                    limit: self.limits.max_total_bytes,
                });
            }
        }
        let file_name = relative
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parent = relative.parent().unwrap_or(Path::new("")).to_owned();
        self.ensure_real_dirs(layer, &shown, &parent)?;

        // OCI whiteouts: remove what lower layers put there.
        if file_name == ".wh..wh..opq" {
            let dir = self.root.join(&parent);
            for child in fs::read_dir(&dir).map_err(io("reading opaque dir for"))? {
                let child = child.map_err(io("reading opaque dir for"))?;
                remove_any(&child.path()).map_err(io("removing (opaque whiteout)"))?;
            }
            return Ok(());
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let victim = self.root.join(&parent).join(hidden);
            if fs::symlink_metadata(&victim).is_ok() {
                remove_any(&victim).map_err(io("removing (whiteout)"))?;
            }
            return Ok(());
        }

        let target = self.root.join(&relative);
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match entry_type {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target).map_err(io("replacing"))?;
                        fs::create_dir(&target).map_err(io("creating directory"))?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(io("creating directory"))?,
                }
                set_mode(&target, mode | 0o700).map_err(io("setting mode of"))?;
            }
            t if t.is_file() || t == tar::EntryType::Continuous => {
                replace_existing(&target).map_err(io("replacing"))?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(io("creating file"))?;
                // Read at most the claimed size: the cap was checked against it.
                let copied = std::io::copy(&mut (&mut entry).take(claimed), &mut file)
                    .map_err(io("writing"))?;
                self.stats.bytes += copied;
                set_mode(&target, mode).map_err(io("setting mode of"))?;
            }
            tar::EntryType::Symlink => {
                let link_target = entry
                    .link_name()
                    .map_err(io("reading link target of"))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if resolve_link_target(&parent, &link_target).is_none() {
                    return Err(ExtractError::SymlinkEscape {
                        layer: layer.to_owned(),
                        entry: shown,
                        target: link_target.display().to_string(),
                    });
                }
                replace_existing(&target).map_err(io("replacing"))?;
                std::os::unix::fs::symlink(&link_target, &target)
                    .map_err(io("creating symlink"))?;
            }
            tar::EntryType::Link => {
                let link_target = entry
                    .link_name()
                    .map_err(io("reading link target of"))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let escape = || ExtractError::HardlinkEscape {
                    layer: layer.to_owned(),
                    entry: shown.clone(),
                    target: link_target.display().to_string(),
                };
                let source_rel = match safe_relative_path(&link_target) {
                    Ok(Some(p)) => p,
                    _ => return Err(escape()),
                };
                let source_parent = source_rel.parent().unwrap_or(Path::new("")).to_owned();
                if self.first_symlink(&source_parent).is_some() {
                    return Err(escape());
                }
                let source = self.root.join(&source_rel);
                match fs::symlink_metadata(&source) {
                    Ok(meta) if meta.is_file() => {}
                    _ => return Err(escape()),
                }
                replace_existing(&target).map_err(io("replacing"))?;
                fs::hard_link(&source, &target).map_err(io("creating hard link"))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match entry_type {
                    tar::EntryType::Char => "character device",
                    tar::EntryType::Block => "block device",
                    _ => "FIFO",
                };
                return Err(ExtractError::SpecialFile {
                    layer: layer.to_owned(),
                    entry: shown,
                    kind,
                });
            }
            // PAX and GNU metadata entries are consumed by the tar reader; anything else is
            // metadata we have no use for.
            _ => {}
        }
        Ok(())
    }

    /// Creates the directories of `parent` inside the root, refusing to pass through symlinks.
    fn ensure_real_dirs(
        &self,
        layer: &str,
        entry: &str,
        parent: &Path,
    ) -> Result<(), ExtractError> {
        let mut path = self.root.to_path_buf();
        let mut shown = PathBuf::new();
        for component in parent.components() {
            path.push(component);
            shown.push(component);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ExtractError::ThroughSymlink {
                        layer: layer.to_owned(),
                        entry: entry.to_owned(),
                        through: shown.display().to_string(),
                    });
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ExtractError::Io {
                        layer: layer.to_owned(),
                        context: format!("creating parent of {entry}"),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotADirectory,
                            format!("{} is not a directory", shown.display()),
                        ),
                    });
                }
                Err(_) => fs::create_dir(&path).map_err(|source| ExtractError::Io {
                    layer: layer.to_owned(),
                    context: format!("creating parent of {entry}"),
                    source,
                })?,
            }
        }
        Ok(())
    }

    /// The first symlink on `parent` inside the root, if any.
    fn first_symlink(&self, parent: &Path) -> Option<PathBuf> {
        let mut path = self.root.to_path_buf();
        for component in parent.components() {
            path.push(component);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Some(path);
            }
        }
        None
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a non-directory at `path` (never following a symlink) so it can be recreated.
fn replace_existing(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(
            safe_relative_path(Path::new("./a/./b")),
            Ok(Some(PathBuf::from("a/b")))
        );
        assert_eq!(safe_relative_path(Path::new("./")), Ok(None));
        assert_eq!(
            safe_relative_path(Path::new("/etc")),
            Err(UnsafePath::Absolute)
        );
        assert_eq!(
            safe_relative_path(Path::new("a/../../b")),
            Err(UnsafePath::Parent)
        );
    }

    #[test]
    fn link_targets_resolve_lexically_within_the_root() {
        assert_eq!(
            resolve_link_target(Path::new("a/b"), Path::new("../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(
            resolve_link_target(Path::new("a"), Path::new("../../etc")),
            None
        );
        assert_eq!(
            resolve_link_target(Path::new("a"), Path::new("/etc/passwd")),
            None
        );
    }

    /// A gzip tar whose entries are `(path, size)` files of zeros: a few KiB compressed per
    /// MiB, the shape of a decompression bomb.
    fn gzip_layer(entries: &[(&str, u64)]) -> Vec<u8> {
        let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut builder = tar::Builder::new(gzip);
        for (path, size) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(*size);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path, std::io::repeat(0).take(*size))
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn extract_one(
        bytes: &[u8],
        limits: ExtractLimits,
    ) -> (Result<ExtractStats, ExtractError>, bool) {
        let temp = tempfile::tempdir().unwrap();
        let dest = temp.path().join("rootfs");
        let layer = LayerInput {
            name: "bomb",
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
            bytes,
        };
        let result = extract_layers(&[layer], &dest, limits);
        let leftovers = fs::read_dir(temp.path()).unwrap().count() > 0;
        (result, leftovers)
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_the_cap_and_leaves_nothing() {
        // 64 MiB of zeros compress to about 64 KiB; the cap is 1 MiB.
        let bomb = gzip_layer(&[("zeros", 64 << 20)]);
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let limits = ExtractLimits {
            max_total_bytes: 1 << 20,
            max_entries: 100,
        };
        let (result, leftovers) = extract_one(&bomb, limits);
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("layer bomb") && message.contains("over the extraction cap"),
            "{message}"
        );
        assert!(
            !leftovers,
            "a refused layer leaves no staging or destination"
        );
    }

    #[test]
    fn an_entry_count_bomb_is_refused_at_the_cap() {
        let names: Vec<String> = (0..200).map(|n| format!("f{n}")).collect();
        let entries: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 0)).collect();
        let limits = ExtractLimits {
            max_total_bytes: 1 << 20,
            max_entries: 100,
        };
        let (result, leftovers) = extract_one(&gzip_layer(&entries), limits);
        let message = result.unwrap_err().to_string();
        assert!(message.contains("more than 100 entries"), "{message}");
        assert!(!leftovers);
    }

    #[test]
    fn truncated_gzip_is_refused_naming_the_layer() {
        let layer = gzip_layer(&[("a", 4096)]);
        let (result, leftovers) = extract_one(&layer[..layer.len() / 2], ExtractLimits::default());
        let message = result.unwrap_err().to_string();
        assert!(message.contains("bomb"), "{message}");
        assert!(!leftovers);
    }
}
