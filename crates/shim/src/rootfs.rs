//! Resolving a path inside a container root as the container would see it.
//!
//! The program named by `args[0]` lives in the image rootfs. Symlinks are followed with chroot
//! semantics (an absolute target restarts at the root, `..` stops at the root), so no path,
//! however crafted, resolves to a file outside the rootfs.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Symlink hops allowed before giving up, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Why a path could not be resolved inside the root.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Some component does not exist.
    #[error("{path} does not exist in the container's root filesystem")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A symlink loop or chain longer than 40 hops.
    #[error("{path}: too many levels of symbolic links")]
    TooManyLinks {
        /// The path as given.
        path: String,
    },
    /// A component on the way is not a directory.
    #[error("{path}: a component on the way is not a directory")]
    NotADirectory {
        /// The path as given.
        path: String,
    },
    /// The filesystem failed.
    #[error("{path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The host path of `path` (absolute or relative to `/`) inside `root`.
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, ResolveError> {
    let shown = path.to_owned();
    let mut pending: Vec<OsString> = components(Path::new(path));
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&component);
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ResolveError::NotFound { path: shown });
            }
            Err(e) if e.raw_os_error() == Some(20) => {
                return Err(ResolveError::NotADirectory { path: shown });
            }
            Err(source) => {
                return Err(ResolveError::Io {
                    path: shown,
                    source,
                });
            }
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(ResolveError::TooManyLinks { path: shown });
            }
            let target = std::fs::read_link(&candidate).map_err(|source| ResolveError::Io {
                path: shown.clone(),
                source,
            })?;
            if target.is_absolute() {
                resolved.clear();
            }
            let mut more = components(&target);
            more.reverse();
            pending.extend(more);
        } else {
            if !pending.is_empty() && !meta.is_dir() {
                return Err(ResolveError::NotADirectory { path: shown });
            }
            resolved.push(component);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Like [`resolve_in_root`], creating what is missing on the way: directories, and the last
/// component as an empty file when `last_is_file` (a mount point for a single-file bind).
/// Components are created only inside `root`, never through a symlink.
pub fn create_in_root(
    root: &Path,
    path: &str,
    last_is_file: bool,
) -> Result<PathBuf, ResolveError> {
    let parts = components(Path::new(path));
    let mut prefix = PathBuf::from("/");
    for (index, part) in parts.iter().enumerate() {
        let parent = resolve_in_root(root, &prefix.display().to_string())?;
        prefix.push(part);
        match resolve_in_root(root, &prefix.display().to_string()) {
            Ok(_) => continue,
            Err(ResolveError::NotFound { .. }) if part != ".." => {}
            Err(e) => return Err(e),
        }
        let target = parent.join(part);
        let created = if index + 1 == parts.len() && last_is_file {
            // create_new: never follows a (dangling) symlink that is in the way.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map(drop)
        } else {
            std::fs::create_dir(&target)
        };
        match created {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(ResolveError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    resolve_in_root(root, path)
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(c) => Some(c.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_with_chroot_semantics() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::write(root.join("bin/app.wasm"), b"\0asm")?;
        std::os::unix::fs::symlink("/bin/app.wasm", root.join("abs"))?;
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("bin/escape"))?;
        std::os::unix::fs::symlink("/etc/passwd", root.join("host"))?;
        std::fs::write(dir.path().join("outside"), b"secret")?;
        std::os::unix::fs::symlink("../outside", root.join("up"))?;

        assert_eq!(resolve_in_root(&root, "/abs")?, root.join("bin/app.wasm"));
        assert_eq!(
            resolve_in_root(&root, "bin/../bin/app.wasm")?,
            root.join("bin/app.wasm")
        );
        // Escapes land inside the root, where these files do not exist.
        for escaping in ["/bin/escape", "/host", "/up", "/../../outside"] {
            assert!(
                matches!(
                    resolve_in_root(&root, escaping),
                    Err(ResolveError::NotFound { .. })
                ),
                "{escaping}"
            );
        }
        // Mount points are created inside the root, through symlinks resolved in it.
        std::os::unix::fs::symlink("/bin", root.join("etc"))?;
        assert_eq!(
            create_in_root(&root, "/etc/hosts", true)?,
            root.join("bin/hosts")
        );
        assert!(root.join("bin/hosts").is_file());
        assert!(
            create_in_root(&root, "/up/x/y", false).is_err(),
            "a dangling symlink in the way is an error, never followed outside"
        );
        assert!(!dir.path().join("outside/x").exists());
        std::os::unix::fs::symlink("loop", root.join("loop"))?;
        assert!(matches!(
            resolve_in_root(&root, "/loop"),
            Err(ResolveError::TooManyLinks { .. })
        ));
        Ok(())
    }
}
