//! The container's rootfs mount: containerd's rootfs mounts made at `bundle/rootfs` at create
//! and undone at delete. An overlay's writable layer is mounted `volatile` unless the policy
//! says `sync_rootfs`, and settled after the unmount
//! ([`wasmcell_shim_front::writable_layer`] says why and what that owes).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use containerd_shim::protos::api::Mount;
use log::{debug, warn};
use wasmcell_shim_front::writable_layer::{WritableLayer, volatile_layer_of, with_volatile};

/// Option bytes below which containerd-shim mounts without changing directory: its limit is a
/// page less 512 bytes; this stays under it for any page size Linux uses.
const MOUNT_OPTIONS_INLINE: usize = 3 * 1024;

/// Set once a kernel refused `volatile` (before Linux 5.10): later mounts go without it.
static VOLATILE_REFUSED: AtomicBool = AtomicBool::new(false);

/// What a create mounted at a bundle's `rootfs`.
#[derive(Debug)]
pub struct MountedRootfs {
    target: PathBuf,
    /// The writable layers mounted `volatile`, to settle after the unmount.
    volatile_layers: Vec<WritableLayer>,
}

impl MountedRootfs {
    /// Mounts containerd's `mounts` at `target`, in order; `volatile` asks for overlay
    /// writable layers to be mounted `volatile`. On failure what was mounted is undone.
    pub async fn mount(
        mounts: &[Mount],
        target: &Path,
        volatile: bool,
    ) -> Result<Option<MountedRootfs>, String> {
        let mut mounted = MountedRootfs {
            target: target.to_owned(),
            volatile_layers: Vec::new(),
        };
        for (index, mount) in mounts.iter().enumerate() {
            if let Err(e) = mounted.mount_one(mount, volatile).await {
                if index > 0 {
                    mounted.unmount().await;
                }
                return Err(format!("mounting the rootfs ({}): {e}", mount.type_));
            }
        }
        Ok((!mounts.is_empty()).then_some(mounted))
    }

    async fn mount_one(&mut self, mount: &Mount, volatile: bool) -> Result<(), String> {
        let added = volatile
            .then(|| with_volatile(&mount.type_, &mount.options))
            .flatten()
            .filter(|_| !VOLATILE_REFUSED.load(Ordering::Relaxed));
        let options = added.as_deref().unwrap_or(&mount.options);
        // Ours, or containerd's own (its overlay snapshotter's `mount_options`): settled the same.
        let layer = volatile_layer_of(&mount.type_, options);
        if let Some(layer) = &layer {
            layer.check_settled().map_err(|e| e.to_string())?;
        }
        match mount_with(mount, options, &self.target).await {
            Ok(()) => {
                self.volatile_layers.extend(layer);
                Ok(())
            }
            Err(e) if added.is_some() => {
                // The marker was checked above: a kernel without `volatile` (before 5.10)
                // says EINVAL, and the options as given then mount.
                mount_with(mount, &mount.options, &self.target).await?;
                debug!("the overlay refused `volatile` ({e}); mounting without it from now on");
                VOLATILE_REFUSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Detaches the mount, then settles each volatile writable layer: syncs it if the guest
    /// left files in it (on the blocking pool: a sync waits for the disk) and removes the
    /// kernel's marker. Call it once the guest is gone. Failures are logged: the delete goes
    /// on, and a marker left behind makes the layer's next mount fail with its path.
    pub async fn unmount(self) {
        if let Err(e) = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH) {
            warn!("unmounting {}: {e}", self.target.display());
            return;
        }
        for layer in self.volatile_layers {
            let synced = if layer.needs_sync() {
                let layer = layer.clone();
                tokio::task::spawn_blocking(move || layer.sync())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            } else {
                Ok(())
            };
            // Unsynced writes keep the marker: the layer's next mount says so.
            if let Err(e) = synced.and_then(|()| layer.remove_marker().map_err(|e| e.to_string())) {
                warn!("{e}");
            }
        }
    }
}

/// Mounts `mount` with `options` at `target`. Options that fit in a page are mounted here, on
/// the runtime (one `mount` call, no thread to start); a longer overlay lower-dir list goes to
/// the blocking pool, because containerd-shim then shortens it with a working directory set on
/// the calling thread.
async fn mount_with(mount: &Mount, options: &[String], target: &Path) -> Result<(), String> {
    let options_len: usize = options.iter().map(|o| o.len() + 1).sum();
    if options_len >= MOUNT_OPTIONS_INLINE {
        let mut long = mount.clone();
        long.options = options.to_vec();
        return containerd_shim::asynchronous::util::mount_rootfs(&long, target)
            .await
            .map_err(|e| e.to_string());
    }
    let fs_type = Some(mount.type_.as_str()).filter(|t| !t.is_empty());
    let source = Some(mount.source.as_str()).filter(|s| !s.is_empty());
    containerd_shim::mount::mount_rootfs(fs_type, source, options, target)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An overlay on a tmpfs: lower, upper and work directories, and a mount point.
    struct Overlay {
        _tmpfs: TmpfsGuard,
        root: PathBuf,
    }

    struct TmpfsGuard(PathBuf);

    impl Drop for TmpfsGuard {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    impl Overlay {
        fn new(dir: &Path) -> Result<Overlay, Box<dyn std::error::Error>> {
            nix::mount::mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )?;
            let guard = TmpfsGuard(dir.to_owned());
            for sub in ["lower", "upper", "work", "rootfs"] {
                std::fs::create_dir(dir.join(sub))?;
            }
            std::fs::write(dir.join("lower/image-file"), "from the image")?;
            Ok(Overlay {
                _tmpfs: guard,
                root: dir.to_owned(),
            })
        }

        fn mounts(&self) -> Vec<Mount> {
            let mut mount = Mount::new();
            mount.type_ = "overlay".into();
            mount.source = "overlay".into();
            mount.options = vec![
                format!("lowerdir={}", self.root.join("lower").display()),
                format!("upperdir={}", self.root.join("upper").display()),
                format!("workdir={}", self.root.join("work").display()),
            ];
            vec![mount]
        }

        fn marker(&self) -> PathBuf {
            self.root
                .join("work")
                .join(wasmcell_shim_front::writable_layer::VOLATILE_MARKER)
        }

        fn mount_options(&self) -> Result<String, Box<dyn std::error::Error>> {
            let table = std::fs::read_to_string("/proc/self/mountinfo")?;
            let target = self.root.join("rootfs").display().to_string();
            Ok(table
                .lines()
                .filter(|l| l.split(' ').nth(4) == Some(target.as_str()))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                .next_back()
                .unwrap_or_default())
        }
    }

    fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }

    /// An [`Overlay`] in `dir` mounted `volatile` with [`MountedRootfs::mount`].
    fn mounted_volatile(
        dir: &Path,
    ) -> Result<(Overlay, tokio::runtime::Runtime, MountedRootfs), Box<dyn std::error::Error>> {
        let overlay = Overlay::new(dir)?;
        let rt = runtime()?;
        let mounted = rt
            .block_on(MountedRootfs::mount(
                &overlay.mounts(),
                &overlay.root.join("rootfs"),
                true,
            ))?
            .ok_or("nothing mounted")?;
        Ok((overlay, rt, mounted))
    }

    fn root_or_skip() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "mounting needs root, and CI runs as root"
        );
        eprintln!("SKIPPED: mounting needs root");
        false
    }

    /// The volatile mount, a guest's write through it, the unmount that settles it, and a
    /// second mount of the same layer that sees the write.
    #[test]
    fn a_volatile_layer_is_settled_and_mounts_again() -> Result<(), Box<dyn std::error::Error>> {
        if !root_or_skip() {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let (overlay, rt, mounted) = mounted_volatile(dir.path())?;
        let rootfs = overlay.root.join("rootfs");
        assert!(
            overlay.mount_options()?.contains("volatile"),
            "{}",
            overlay.mount_options()?
        );
        assert!(
            overlay.marker().exists(),
            "the kernel marks a volatile work dir"
        );
        std::fs::write(rootfs.join("written"), "by the guest")?;
        rt.block_on(mounted.unmount());
        assert!(!overlay.marker().exists(), "the unmount settled the layer");
        assert_eq!(
            std::fs::read_to_string(overlay.root.join("upper/written"))?,
            "by the guest"
        );

        let again = rt
            .block_on(MountedRootfs::mount(&overlay.mounts(), &rootfs, false))?
            .ok_or("nothing mounted")?;
        assert!(
            !overlay.mount_options()?.contains("volatile"),
            "sync_rootfs: as given"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("written"))?,
            "by the guest"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("image-file"))?,
            "from the image"
        );
        rt.block_on(again.unmount());
        Ok(())
    }

    /// containerd's own `volatile` (its snapshotter's `mount_options`) is kept under
    /// `sync_rootfs`, and the layer settled all the same.
    #[test]
    fn containerds_volatile_is_settled_too() -> Result<(), Box<dyn std::error::Error>> {
        if !root_or_skip() {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let overlay = Overlay::new(dir.path())?;
        let rootfs = overlay.root.join("rootfs");
        let mut mounts = overlay.mounts();
        for mount in &mut mounts {
            mount.options.push("volatile".into());
        }
        let rt = runtime()?;
        let mounted = rt
            .block_on(MountedRootfs::mount(&mounts, &rootfs, false))?
            .ok_or("nothing mounted")?;
        assert!(
            overlay.marker().exists(),
            "mounted volatile, as containerd asked"
        );
        rt.block_on(mounted.unmount());
        assert!(!overlay.marker().exists(), "settled");
        Ok(())
    }

    /// A layer whose volatile mount was never settled (the host stopped under it) is refused
    /// by name, and nothing is mounted.
    #[test]
    fn an_unsettled_layer_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        if !root_or_skip() {
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let (overlay, rt, mounted) = mounted_volatile(dir.path())?;
        let rootfs = overlay.root.join("rootfs");
        // The host going down: the mount disappears without being settled.
        nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)?;
        drop(mounted);
        let refused = rt
            .block_on(MountedRootfs::mount(&overlay.mounts(), &rootfs, true))
            .err()
            .unwrap_or_default();
        assert!(
            refused.contains(&overlay.marker().display().to_string())
                && refused.contains("not unmounted cleanly"),
            "{refused}"
        );
        assert_eq!(overlay.mount_options()?, "", "nothing mounted");
        Ok(())
    }
}
