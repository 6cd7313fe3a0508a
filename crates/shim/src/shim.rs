//! Shim-wide facts: the runtime id, whether a container is a pod's sandbox, where compiled
//! code is cached, and what `delete` undoes after a shim died. Which shim serves a container
//! is the front's [`wasmcell_shim_front::group`].

use std::path::{Path, PathBuf};

use log::warn;
use oci_spec::runtime::Spec;

use crate::cgroup::ContainerCgroup;

/// containerd's runtime type for this shim.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";
/// Annotation the CRI plugin uses to mark a pod's sandbox (pause) container.
const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// The compile cache directory: `WASMCELL_CACHE_DIR` (empty disables it) or
/// [`wasmcell_engine::DEFAULT_CACHE_DIR`].
pub fn cache_dir() -> Option<PathBuf> {
    wasmcell_engine::cache_dir_from_env()
}

/// Whether the container of `spec` is the only one its shim server will ever serve: with the
/// default grouping (a shim per pod) a container outside any pod — no sandbox-id annotation,
/// as with `ctr run` — has a server of its own, keyed by its id.
pub fn has_a_server_of_its_own(spec: &Spec) -> bool {
    use wasmcell_shim_front::group::{Grouping, SANDBOX_ID_ANNOTATION};
    Grouping::from_env() == Grouping::Pod
        && !is_sandbox(spec)
        && !spec
            .annotations()
            .as_ref()
            .is_some_and(|a| a.contains_key(SANDBOX_ID_ANNOTATION))
}

/// Whether `spec` is a pod's sandbox container, which wasmcell runs itself instead of the
/// (native) pause image.
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
        .is_some_and(|t| t == "sandbox")
}

/// `delete` action: containerd calls it when the shim is gone (the front answers it itself
/// when there is no cgroup to empty); undo what create did for this bundle (mount, files,
/// cgroup) and report the task as killed.
pub fn delete_leftovers(bundle: &Path) -> Vec<u8> {
    if let Some(path) = wasmcell_shim_front::leftover_cgroup(bundle)
        && let Ok(cgroup) = ContainerCgroup::create(&path, None)
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
    // After the cgroup: a guest still running would hold the rootfs' writable layer.
    if let Err(e) = wasmcell_shim_front::remove_bundle_leftovers(bundle) {
        warn!("{}: {e}", bundle.display());
    }
    wasmcell_shim_front::delete_response(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use containerd_shim::DeleteResponse;
    use containerd_shim::protos::protobuf::Message;

    /// The front encodes `delete`'s answer with its own message definition: it must read back
    /// as containerd's `DeleteResponse`.
    #[test]
    fn the_fronts_delete_response_is_containerds() -> Result<(), Box<dyn std::error::Error>> {
        let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 42);
        let bytes = wasmcell_shim_front::delete_response(at);
        let response = DeleteResponse::parse_from_bytes(&bytes)?;
        assert_eq!(response.exit_status, 137);
        assert_eq!(response.pid, 0);
        assert_eq!(response.exited_at.seconds, 1_700_000_000);
        assert_eq!(response.exited_at.nanos, 42);
        Ok(())
    }
}
