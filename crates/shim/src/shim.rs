//! Shim-wide facts: the runtime id, how containers are grouped into shims, where compiled
//! code is cached, and what `delete` undoes after a shim died.
//!
//! Grouping: a Kubernetes pod's containers (annotation `io.kubernetes.cri.sandbox-id`) share
//! one shim; other containers get one each.

use std::path::{Path, PathBuf};

use containerd_shim::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use log::warn;
use oci_spec::runtime::Spec;

use crate::cgroup::ContainerCgroup;

/// containerd's runtime type for this shim.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";
/// Annotation the CRI plugin puts on every container of a pod.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// Annotation the CRI plugin uses to mark a pod's sandbox (pause) container.
const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// The compile cache directory: `WASMCELL_CACHE_DIR` (empty disables it) or
/// [`wasmcell_engine::DEFAULT_CACHE_DIR`].
pub fn cache_dir() -> Option<PathBuf> {
    wasmcell_engine::cache_dir_from_env()
}

/// The shim group of a container: its pod's sandbox id, or its own id.
pub fn grouping(bundle: &Path, id: &str) -> String {
    Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|spec| spec.annotations().clone())
        .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
        .unwrap_or_else(|| id.to_owned())
}

/// Whether `spec` is a pod's sandbox container, which wasmcell runs itself instead of the
/// (native) pause image.
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
        .is_some_and(|t| t == "sandbox")
}

/// `delete` action: containerd calls it when the shim is gone; undo what create did for this
/// bundle (mount, cgroup, files) and report the task as killed.
pub fn delete_leftovers(bundle: &Path) -> DeleteResponse {
    let rootfs = bundle.join("rootfs");
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    if let Ok(spec) = Spec::load(bundle.join("config.json"))
        && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
        // After a clean delete the shim has removed it: nothing to create just to remove.
        && crate::cgroup::exists(&path.display().to_string())
        && let Ok(cgroup) = ContainerCgroup::create(&path.display().to_string(), None)
    {
        // The guest dies with its shim (parent-death signal); anything still in the cgroup
        // would be an unaccounted workload.
        let killed = cgroup.kill_all(std::time::Duration::from_secs(2));
        if killed > 0 {
            warn!(
                "{}: killed {killed} process(es) left in the container's cgroup",
                bundle.display()
            );
        }
        if let Err(e) = cgroup.delete() {
            warn!("{e}");
        }
    }
    let _ = std::fs::remove_file(bundle.join(crate::plan::PLAN_FILE));
    let _ = std::fs::remove_file(bundle.join(crate::plan::PROGRAM_FILE));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut exited_at = Timestamp::new();
    exited_at.seconds = now.as_secs() as i64;
    DeleteResponse {
        exit_status: 137,
        exited_at: MessageField::some(exited_at),
        ..Default::default()
    }
}
