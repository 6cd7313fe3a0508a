//! A guest's filesystem view: its rootfs as `/` (`pivot_root`), the spec's mounts inside it.
//!
//! Planned in the shim ([`MountPlan::from_spec`]), where a mount the guest must never see is
//! refused or dropped; applied in the guest's new mount namespace ([`MountPlan::apply`]).
//! Kernel interfaces never reach a guest: mounts of type proc, sysfs, devpts, mqueue, cgroup
//! and the like are not made (a guest that can open `/proc/self/mem` can rewrite its own
//! sandbox), and a bind mount whose source is on such a filesystem, or is a device node, is
//! refused unless the container is privileged. Nor does any other device node open: every mount
//! of a non-privileged guest's tree is made `nodev` before `pivot_root`, which covers nodes an
//! image's layer carries and nodes inside bound directories. Mount points are resolved inside
//! the rootfs with chroot semantics, so a symlink in an image cannot aim a mount at the host.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::ConfineError;
use crate::rootfs::{ResolveError, create_in_root, resolve_in_root};

/// Filesystem types that are kernel interfaces, not storage: never mounted for a guest.
pub const HIDDEN_TYPES: [&str; 16] = [
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "fusectl",
    "efivarfs",
    "pstore",
    "binfmt_misc",
    "devtmpfs",
];

/// `statfs` magic numbers of those filesystems (and nsfs), for bind-mount sources.
const KERNEL_FS_MAGIC: [(i64, &str); 15] = [
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x1980_0202, "mqueue"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0xde5e_81e4, "efivarfs"),
    (0x6165_676c, "pstore"),
    (0x6e73_6673, "nsfs"),
];

/// How a bind mount's source looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindSource {
    /// A directory (the mount point is created as one).
    Directory,
    /// Anything else, e.g. `/etc/hosts` (the mount point is created as an empty file).
    File,
}

/// One mount, in spec order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStep {
    /// Where the guest sees it (absolute, inside the rootfs).
    pub destination: String,
    /// Host path (binds) or the filesystem's source string.
    pub source: Option<PathBuf>,
    /// Filesystem type; `None` for a bind mount.
    pub fstype: Option<String>,
    /// A bind mount of a directory or a file.
    pub bind: Option<BindSource>,
    /// `rbind`: submounts come along.
    pub recursive: bool,
    /// `MS_*` flags (`ro`, `nosuid`, …) as bits.
    pub flags: u64,
    /// Propagation changes (`rprivate`, `slave`, …) applied after the mount, as bits.
    pub propagation: Vec<u64>,
    /// Options the filesystem interprets (`size=…`, `mode=…`).
    pub data: String,
}

/// Root filesystem and mounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountPlan {
    /// Host path of the mounted rootfs (the bundle's `rootfs`).
    pub rootfs: PathBuf,
    /// `root.readonly`.
    pub read_only: bool,
    /// Propagation of the mount tree (`linux.rootfsPropagation`; default rslave, as runc).
    pub root_propagation: u64,
    /// The mounts made, in spec order.
    pub mounts: Vec<MountStep>,
    /// Mounts of kernel-interface filesystems that were not made, for the log.
    pub hidden: Vec<String>,
    /// `linux.maskedPaths`.
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths`.
    pub readonly_paths: Vec<String>,
    /// Device nodes open in the guest's tree (privileged containers only). Otherwise every
    /// mount of it is `nodev` ([`forbid_devices`]); absent from a plan means forbidden.
    #[serde(default)]
    pub devices_allowed: bool,
}

/// Why the mounts cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum MountPlanError {
    /// A bind mount whose source reaches a kernel interface or a device.
    #[error(
        "mount {source_path} -> {destination}: the source is {what}; wasm guests never see procfs, \
         sysfs or device nodes (allowed only for privileged containers)"
    )]
    KernelInterface {
        /// The host path.
        source_path: String,
        /// Where it was to appear.
        destination: String,
        /// `on procfs`, `a device node`, ….
        what: String,
    },
    /// A bind mount without a usable source.
    #[error("mount -> {destination}: bind source {source_path}: {reason}")]
    BadSource {
        /// The host path.
        source_path: String,
        /// Where it was to appear.
        destination: String,
        /// Why.
        reason: String,
    },
    /// An option wasmcell cannot honour.
    #[error("mount -> {destination}: option {option:?} is not supported ({reason})")]
    Option {
        /// Where it was to appear.
        destination: String,
        /// The option.
        option: String,
        /// Why.
        reason: String,
    },
    /// A destination that is not an absolute path.
    #[error("mount destination {destination:?} must be an absolute path")]
    Destination {
        /// The destination.
        destination: String,
    },
    /// `linux.rootfsPropagation` is not a propagation mode.
    #[error(
        "linux.rootfsPropagation {value:?} is not one of private, slave, shared, unbindable (r-prefixed or not)"
    )]
    Propagation {
        /// The value.
        value: String,
    },
}

/// Parsed mount options.
#[derive(Debug)]
struct Options {
    flags: MsFlags,
    bind: bool,
    recursive: bool,
    propagation: Vec<MsFlags>,
    data: Vec<String>,
}

fn propagation_flag(name: &str) -> Option<MsFlags> {
    let (recursive, base) = match name.strip_prefix('r') {
        Some(rest) if matches!(rest, "private" | "slave" | "shared" | "unbindable") => (true, rest),
        _ => (false, name),
    };
    let flag = match base {
        "private" => MsFlags::MS_PRIVATE,
        "slave" => MsFlags::MS_SLAVE,
        "shared" => MsFlags::MS_SHARED,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if recursive {
        flag | MsFlags::MS_REC
    } else {
        flag
    })
}

fn parse_options(destination: &str, options: &[String]) -> Result<Options, MountPlanError> {
    let mut parsed = Options {
        flags: MsFlags::empty(),
        bind: false,
        recursive: false,
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "bind" => {
                parsed.bind = true;
                continue;
            }
            "rbind" => {
                parsed.bind = true;
                parsed.recursive = true;
                continue;
            }
            "idmap" | "ridmap" => {
                return Err(MountPlanError::Option {
                    destination: destination.to_owned(),
                    option: option.clone(),
                    reason: "idmapped mounts need user namespaces, which wasmcell does not support"
                        .into(),
                });
            }
            "remount" => {
                return Err(MountPlanError::Option {
                    destination: destination.to_owned(),
                    option: option.clone(),
                    reason: "a container's mounts are new mounts".into(),
                });
            }
            // runc's extension: copy the image's files into the new tmpfs. Nothing to copy
            // into a guest's /dev or /run, so a plain tmpfs is what a guest can observe.
            "tmpcopyup" => continue,
            other => {
                if let Some(flag) = propagation_flag(other) {
                    parsed.propagation.push(flag);
                } else {
                    parsed.data.push(other.to_owned());
                }
                continue;
            }
        };
        parsed.flags |= set;
        parsed.flags &= !clear;
    }
    Ok(parsed)
}

/// What the source of a bind mount is, or the reason it may not be bound.
fn inspect_bind_source(
    source: &Path,
    destination: &str,
    privileged: bool,
) -> Result<BindSource, MountPlanError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = source.display().to_string();
    let meta = std::fs::metadata(source).map_err(|e| MountPlanError::BadSource {
        source_path: shown.clone(),
        destination: destination.to_owned(),
        reason: e.to_string(),
    })?;
    let file_type = meta.file_type();
    if !privileged {
        if file_type.is_block_device() || file_type.is_char_device() {
            return Err(MountPlanError::KernelInterface {
                source_path: shown,
                destination: destination.to_owned(),
                what: "a device node".into(),
            });
        }
        let stat = nix::sys::statfs::statfs(source).map_err(|e| MountPlanError::BadSource {
            source_path: shown.clone(),
            destination: destination.to_owned(),
            reason: format!("statfs: {e}"),
        })?;
        #[allow(clippy::unnecessary_cast)] // the magic's type differs between libcs
        let magic = stat.filesystem_type().0 as i64;
        if let Some((_, name)) = KERNEL_FS_MAGIC.iter().find(|(m, _)| *m == magic) {
            return Err(MountPlanError::KernelInterface {
                source_path: shown,
                destination: destination.to_owned(),
                what: format!("on {name}"),
            });
        }
    }
    Ok(if file_type.is_dir() {
        BindSource::Directory
    } else {
        BindSource::File
    })
}

impl MountPlan {
    /// Plans `spec`'s root and mounts over the rootfs mounted at `rootfs`.
    pub fn from_spec(
        spec: &Spec,
        rootfs: PathBuf,
        privileged: bool,
    ) -> Result<MountPlan, ConfineError> {
        let linux = spec.linux().as_ref();
        let root_propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
            None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
            Some(value) => {
                propagation_flag(value).ok_or_else(|| MountPlanError::Propagation {
                    value: value.to_owned(),
                })? | MsFlags::MS_REC
            }
        };
        let mut plan = MountPlan {
            rootfs,
            read_only: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            root_propagation: root_propagation.bits(),
            masked_paths: linux
                .and_then(|l| l.masked_paths().clone())
                .unwrap_or_default(),
            readonly_paths: linux
                .and_then(|l| l.readonly_paths().clone())
                .unwrap_or_default(),
            devices_allowed: privileged,
            ..MountPlan::default()
        };
        for mount in spec.mounts().iter().flatten() {
            let destination = mount.destination().display().to_string();
            if !destination.starts_with('/') {
                return Err(MountPlanError::Destination { destination }.into());
            }
            if mount.uid_mappings().is_some() || mount.gid_mappings().is_some() {
                return Err(MountPlanError::Option {
                    destination,
                    option: "uidMappings".into(),
                    reason: "idmapped mounts need user namespaces, which wasmcell does not support"
                        .into(),
                }
                .into());
            }
            let typ = mount.typ().clone().unwrap_or_default();
            let options = parse_options(&destination, mount.options().as_deref().unwrap_or(&[]))?;
            let bind = options.bind || typ == "bind";
            if !bind && HIDDEN_TYPES.contains(&typ.as_str()) {
                plan.hidden.push(format!("{typ} at {destination}"));
                continue;
            }
            let bind_source = if bind {
                let source = mount
                    .source()
                    .as_ref()
                    .ok_or_else(|| MountPlanError::BadSource {
                        source_path: String::new(),
                        destination: destination.clone(),
                        reason: "a bind mount needs a source".into(),
                    })?;
                Some(inspect_bind_source(source, &destination, privileged)?)
            } else {
                None
            };
            plan.mounts.push(MountStep {
                destination,
                source: mount.source().clone(),
                fstype: (!bind).then_some(typ),
                bind: bind_source,
                recursive: options.recursive,
                flags: options.flags.bits(),
                propagation: options.propagation.iter().map(|p| p.bits()).collect(),
                data: options.data.join(","),
            });
        }
        Ok(plan)
    }

    /// Builds the guest's view and moves into it. Runs in the guest's new mount namespace.
    pub fn apply(&self) -> Result<(), ConfineError> {
        let propagation = MsFlags::from_bits_truncate(self.root_propagation);
        let (early, late) = if propagation.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
            // pivot_root refuses shared mounts; apply the mode to the new root afterwards.
            (MsFlags::MS_SLAVE | MsFlags::MS_REC, Some(propagation))
        } else {
            (propagation, None)
        };
        remount(
            Path::new("/"),
            early,
            "making the mount tree private to the guest",
        )?;
        let root = &self.rootfs;
        bind(root, root, true, "binding the rootfs onto itself")?;
        for step in &self.mounts {
            mount_step(root, step)?;
        }
        for path in &self.masked_paths {
            mask(root, path)?;
        }
        for path in &self.readonly_paths {
            make_read_only(root, path)?;
        }
        if !self.devices_allowed {
            forbid_devices(root)?;
        }
        pivot_into(root)?;
        if self.read_only {
            remount(
                Path::new("/"),
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                "making the root read-only",
            )?;
        }
        if let Some(late) = late {
            remount(Path::new("/"), late, "setting the root's propagation")?;
        }
        Ok(())
    }
}

fn mount_error(what: String) -> impl FnOnce(nix::Error) -> ConfineError {
    ConfineError::apply(what)
}

fn remount(target: &Path, flags: MsFlags, what: &str) -> Result<(), ConfineError> {
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(mount_error(format!("{what} ({})", target.display())))
}

fn bind(source: &Path, target: &Path, recursive: bool, what: &str) -> Result<(), ConfineError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(mount_error(
        format!("{what}: {} -> {}", source.display(), target.display()),
    ))
}

fn resolve_error(what: &str) -> impl FnOnce(ResolveError) -> ConfineError + '_ {
    move |e| ConfineError::Apply {
        step: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn mount_step(root: &Path, step: &MountStep) -> Result<(), ConfineError> {
    let what = format!("mounting {}", step.destination);
    let as_file = step.bind == Some(BindSource::File);
    let target = create_in_root(root, &step.destination, as_file).map_err(resolve_error(&what))?;
    let flags = MsFlags::from_bits_truncate(step.flags);
    match (&step.bind, &step.source) {
        (Some(_), Some(source)) => {
            bind(source, &target, step.recursive, &what)?;
            // A bind mount takes its flags only from a remount of itself.
            if !flags.is_empty() {
                remount(
                    &target,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
                    &what,
                )?;
            }
        }
        _ => {
            let fstype = step.fstype.as_deref().unwrap_or("none");
            let source = step.source.clone().unwrap_or_else(|| PathBuf::from(fstype));
            let data = (!step.data.is_empty()).then_some(step.data.as_str());
            nix::mount::mount(Some(&source), &target, Some(fstype), flags, data)
                .map_err(mount_error(format!("{what} ({fstype})")))?;
        }
    }
    for &propagation in &step.propagation {
        remount(&target, MsFlags::from_bits_truncate(propagation), &what)?;
    }
    Ok(())
}

/// Hides `path` (if the rootfs has it): an empty read-only tmpfs over a directory, `/dev/null`
/// over anything else. Most masked paths are under `/proc` and `/sys`, which a guest never has.
fn mask(root: &Path, path: &str) -> Result<(), ConfineError> {
    let Ok(target) = resolve_in_root(root, path) else {
        return Ok(());
    };
    let what = format!("masking {path}");
    if target.is_dir() {
        nix::mount::mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(mount_error(what))
    } else {
        bind(Path::new("/dev/null"), &target, false, &what)
    }
}

/// Makes `path` (if the rootfs has it) read-only for the guest.
fn make_read_only(root: &Path, path: &str) -> Result<(), ConfineError> {
    let Ok(target) = resolve_in_root(root, path) else {
        return Ok(());
    };
    let what = format!("making {path} read-only");
    bind(&target, &target, true, &what)?;
    remount(
        &target,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        &what,
    )
}

/// Makes every mount of the tree at `root` `nodev`, so that no device node in it opens: one a
/// layer carried (containerd creates those when it unpacks as root), or one in a bound
/// directory. runc's wall against those is the devices cgroup's allowlist; a wasm guest uses no
/// device at all, so none opens. One `mount_setattr` for the whole tree; on a kernel without it
/// (before 5.12), a bind remount of each mount, keeping its other flags.
fn forbid_devices(root: &Path) -> Result<(), ConfineError> {
    let what = || format!("making the mounts under {} nodev", root.display());
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|e| ConfineError::apply_io(what())(std::io::Error::other(e)))?;
    // SAFETY: mount_setattr reads a NUL-terminated path and `size_of::<mount_attr>()` bytes of
    // `attr`, both alive for the call, and writes nothing.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result == 0 {
        return Ok(());
    }
    let errno = nix::Error::last();
    if errno != nix::Error::ENOSYS {
        return Err(ConfineError::apply(what())(errno));
    }
    remount_each_nodev(root)
}

/// [`forbid_devices`] without `mount_setattr`: a bind remount of each mount at or below `root`,
/// with `nodev` added to the flags it has.
fn remount_each_nodev(root: &Path) -> Result<(), ConfineError> {
    let what = || format!("making the mounts under {} nodev", root.display());
    // Fail closed: a tree whose mounts cannot be listed is not confined.
    let targets = mounts_under(root).map_err(ConfineError::apply_io(what()))?;
    for target in targets {
        let current = nix::sys::statvfs::statvfs(&target).map_err(ConfineError::apply(what()))?;
        let flags = current.flags();
        let mut keep = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV;
        for (kept, flag) in [
            (nix::sys::statvfs::FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (nix::sys::statvfs::FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (nix::sys::statvfs::FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (nix::sys::statvfs::FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (
                nix::sys::statvfs::FsFlags::ST_NODIRATIME,
                MsFlags::MS_NODIRATIME,
            ),
            (
                nix::sys::statvfs::FsFlags::ST_RELATIME,
                MsFlags::MS_RELATIME,
            ),
        ] {
            if flags.contains(kept) {
                keep |= flag;
            }
        }
        remount(&target, keep, &what())?;
    }
    Ok(())
}

/// The mount points at or below `root` in this mount namespace, parents first; an error if
/// the mount table cannot be read or `root` itself is not a mount point in it.
fn mounts_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| {
            PathBuf::from(wasmcell_shim_front::writable_layer::unescape_mountinfo(
                point,
            ))
        })
        .filter(|point| point.starts_with(root))
        .collect();
    points.sort_by_key(|point| point.components().count());
    points.dedup();
    if points.first().is_none_or(|first| first != root) {
        return Err(std::io::Error::other(format!(
            "{} is not a mount point in /proc/self/mountinfo",
            root.display()
        )));
    }
    Ok(points)
}

/// `pivot_root` into `root` and detach the old root, so nothing of the host's tree remains
/// reachable from this mount namespace.
fn pivot_into(root: &Path) -> Result<(), ConfineError> {
    nix::unistd::chdir(root).map_err(ConfineError::apply(format!(
        "entering the rootfs {}",
        root.display()
    )))?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
    // removes it without needing a directory for it inside the rootfs.
    // No chroot fallback: a chroot leaves the host's tree in the namespace, one escape away.
    // pivot_root is impossible only when the host's own root is ramfs (an initramfs root).
    nix::unistd::pivot_root(".", ".").map_err(ConfineError::apply(
        "pivot_root into the rootfs (EINVAL here means the node's root is an initramfs, which \
         wasmcell does not support)",
    ))?;
    // Keep the detach from propagating to the host's copy of those mounts.
    remount(
        Path::new("."),
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "isolating the old root",
    )?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(ConfineError::apply("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(ConfineError::apply("entering the new root"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": true},
            "mounts": mounts,
            "linux": {"maskedPaths": ["/proc/kcore"], "rootfsPropagation": "rprivate"}
        }))
        .unwrap_or_else(|e| panic!("spec: {e}"))
    }

    /// Runs the ignored test `name` of this binary in a mount namespace of its own (`unshare
    /// -m`, mounts private); whether it passed. Needs root: outside CI it is skipped, loudly.
    fn passes_in_a_mount_namespace(name: &str) -> bool {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root"
            );
            eprintln!("SKIPPED {name}: needs root for a mount namespace");
            return true;
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the test binary: {e}"));
        std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(exe)
            .args(["--exact", name, "--ignored", "--test-threads", "1"])
            .status()
            .unwrap_or_else(|e| panic!("unshare: {e}"))
            .success()
    }

    #[test]
    fn without_mount_setattr_each_mount_is_remounted_nodev() {
        assert!(passes_in_a_mount_namespace(
            "confine::mounts::tests::each_mount_remounted_nodev_in_a_namespace"
        ));
    }

    /// The fallback of [`forbid_devices`], on a tree of two mounts (the upper one read-only,
    /// which it stays), each with a device node; run by the test above.
    #[test]
    #[ignore = "run inside a mount namespace of its own, by the test above"]
    fn each_mount_remounted_nodev_in_a_namespace() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = root.path();
        let tmpfs = |target: &Path, flags: MsFlags| {
            nix::mount::mount(Some("tmpfs"), target, Some("tmpfs"), flags, None::<&str>)
                .unwrap_or_else(|e| panic!("tmpfs on {}: {e}", target.display()));
        };
        let node = |path: &Path| {
            nix::sys::stat::mknod(
                path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
        };
        tmpfs(root, MsFlags::empty());
        std::fs::create_dir(root.join("upper")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        node(&root.join("null"));
        tmpfs(&root.join("upper"), MsFlags::empty());
        node(&root.join("upper/null"));
        remount(
            &root.join("upper"),
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            "read-only",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            std::fs::File::open(root.join("upper/null")).is_ok(),
            "opens before"
        );

        remount_each_nodev(root).unwrap_or_else(|e| panic!("{e}"));
        for path in [root.join("null"), root.join("upper/null")] {
            let opened = std::fs::File::open(&path).map(|_| ());
            assert!(
                opened
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied),
                "{}: {opened:?}",
                path.display()
            );
        }
        let upper = nix::sys::statvfs::statvfs(&root.join("upper"))
            .unwrap_or_else(|e| panic!("statvfs: {e}"));
        assert!(
            upper
                .flags()
                .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
        );
    }

    #[test]
    fn devices_are_allowed_only_to_privileged_containers() {
        let spec = spec(serde_json::json!([]));
        for privileged in [false, true] {
            let plan = MountPlan::from_spec(&spec, PathBuf::from("/rootfs"), privileged)
                .unwrap_or_else(|e| panic!("plan: {e}"));
            assert_eq!(plan.devices_allowed, privileged);
        }
        let old_plan: MountPlan = serde_json::from_value(serde_json::json!({
            "rootfs": "/rootfs", "read_only": false, "root_propagation": 0, "mounts": [],
            "hidden": [], "masked_paths": [], "readonly_paths": []
        }))
        .unwrap_or_else(|e| panic!("plan: {e}"));
        assert!(
            !old_plan.devices_allowed,
            "a plan that does not say forbids devices"
        );
    }

    #[test]
    fn kernel_interfaces_are_dropped_and_binds_of_them_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("hosts");
        std::fs::write(&file, "127.0.0.1 localhost\n").unwrap_or_else(|e| panic!("{e}"));
        let plan = MountPlan::from_spec(
            &spec(serde_json::json!([
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/etc/hosts", "type": "bind", "source": file,
                 "options": ["rbind", "rprivate", "ro"]},
                {"destination": "/data", "source": dir.path(), "options": ["bind", "nodev"]}
            ])),
            "/r".into(),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.read_only);
        assert_eq!(plan.hidden, ["proc at /proc"]);
        assert_eq!(plan.mounts.len(), 3);
        assert_eq!(plan.mounts[0].fstype.as_deref(), Some("tmpfs"));
        assert_eq!(plan.mounts[0].data, "mode=755,size=65536k");
        assert_eq!(plan.mounts[1].bind, Some(BindSource::File));
        assert!(plan.mounts[1].recursive);
        assert_eq!(plan.mounts[1].flags, MsFlags::MS_RDONLY.bits());
        assert_eq!(plan.mounts[2].bind, Some(BindSource::Directory));
        assert_eq!(
            plan.root_propagation,
            (MsFlags::MS_PRIVATE | MsFlags::MS_REC).bits()
        );

        for (source, what) in [
            ("/proc", "on procfs"),
            ("/sys", "on sysfs"),
            ("/dev/null", "a device node"),
        ] {
            let refused = MountPlan::from_spec(
                &spec(
                    serde_json::json!([{"destination": "/p", "type": "bind", "source": source, "options": ["rbind"]}]),
                ),
                "/r".into(),
                false,
            );
            let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                message.contains(&format!("mount {source} -> /p: the source is {what}")),
                "{message}"
            );
            assert!(
                MountPlan::from_spec(
                    &spec(
                        serde_json::json!([{"destination": "/p", "type": "bind", "source": source}])
                    ),
                    "/r".into(),
                    true,
                )
                .is_ok(),
                "privileged containers may bind {source}"
            );
        }
        let idmap = MountPlan::from_spec(
            &spec(
                serde_json::json!([{"destination": "/p", "type": "bind", "source": "/tmp", "options": ["idmap"]}]),
            ),
            "/r".into(),
            false,
        );
        assert!(idmap.is_err_and(|e| e.to_string().contains("option \"idmap\"")));
    }
}
