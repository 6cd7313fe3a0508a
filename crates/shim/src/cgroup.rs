//! The container's cgroup: created from the spec's `linux.cgroupsPath` and resources, on
//! cgroup v1 or v2 (whichever the host mounts), read for metrics, removed at delete.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cgroups_rs::CgroupPid;
use cgroups_rs::fs::{Cgroup, Hierarchy, Subsystem, hierarchies};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::LinuxResources;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Creating the cgroup or applying its limits failed.
    #[error("cgroup {path}: {message}")]
    Setup {
        /// The cgroup path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// A container's cgroup.
pub struct ContainerCgroup {
    cgroup: Cgroup,
    path: String,
}

/// v1 controllers whose cgroup a guest does not join, as wasmcell sets and reads nothing
/// there: `devices` (no device rules are applied; a guest's mounts are `nodev`, so no device
/// node opens at all), `freezer` (wasmcell has no pause), `net_cls` and `net_prio`
/// (`linux.resources.network` is not supported) and `rdma` (neither is `linux.resources.rdma`).
/// The guest stays in the shim's cgroup there. Each hierarchy joined costs a `mkdir`, a join
/// and an `rmdir` per container, and the kernel's work to create and free the cgroup
/// (measured: about 0.09 ms of CPU per hierarchy and container on this project's bench host).
const V1_CONTROLLERS_NOT_JOINED: [&str; 5] = ["devices", "freezer", "net_cls", "net_prio", "rdma"];

impl std::fmt::Debug for ContainerCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCgroup")
            .field("path", &self.path)
            .finish()
    }
}

use wasmcell_shim_front::normalize_cgroup_path as normalize_path;

/// The host's cgroup hierarchy, found once per process and shared by every cgroup made after.
/// Finding it on v1 means reading and parsing all of `/proc/self/mountinfo`, which lists every
/// mount the shim can see — each running container's rootfs among them — so a per-container
/// lookup grew with the node's load (measured: 0.07 ms of a server's kernel time per container,
/// and the parse besides). The starter finds it before it forks servers
/// ([`find_host_hierarchy`]), so they inherit it.
/// Cgroup filesystems are mounted at boot and stay put while containerd runs; runc's
/// libcontainer keeps its mount points for the life of its process the same way.
#[derive(Debug, Clone)]
struct HostHierarchy(Arc<dyn Hierarchy>);

static HOST_HIERARCHY: OnceLock<HostHierarchy> = OnceLock::new();

/// Finds the host's cgroup hierarchy now, if this process has not yet: the starter calls it so
/// that the servers it forks start with it.
pub fn find_host_hierarchy() {
    host_hierarchy();
}

fn host_hierarchy() -> Box<dyn Hierarchy> {
    Box::new(
        HOST_HIERARCHY
            .get_or_init(|| HostHierarchy(Arc::from(hierarchies::auto())))
            .clone(),
    )
}

impl Hierarchy for HostHierarchy {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.0.subsystems()
    }

    fn root(&self) -> PathBuf {
        self.0.root()
    }

    fn root_control_group(&self) -> Cgroup {
        self.0.root_control_group()
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        self.0.parent_control_group(path)
    }

    fn v2(&self) -> bool {
        self.0.v2()
    }
}

/// The controllers a container's cgroup is created in: every one, except on v1 those of
/// [`V1_CONTROLLERS_NOT_JOINED`], and `cpuset` when the spec sets neither CPUs nor memory nodes.
/// A v1 cpuset starts empty and must be given its parent's CPUs, and both that write and the
/// cpuset's removal make the kernel rebuild every scheduling domain (measured: an eighth of the
/// shim server's CPU per container). Left out, the guest stays in the shim's cpuset, which has
/// the same CPUs and nodes. `None` means all.
fn controllers_to_join(
    hierarchy: &dyn cgroups_rs::fs::Hierarchy,
    resources: Option<&LinuxResources>,
) -> Option<Vec<String>> {
    if hierarchy.v2() {
        return None;
    }
    let sets_cpuset = resources
        .and_then(|r| r.cpu().as_ref())
        .is_some_and(|cpu| cpu.cpus().is_some() || cpu.mems().is_some());
    Some(
        hierarchy
            .subsystems()
            .iter()
            .map(|s| s.controller_name())
            .filter(|name| sets_cpuset || name != "cpuset")
            .filter(|name| !V1_CONTROLLERS_NOT_JOINED.contains(&name.as_str()))
            .collect(),
    )
}

impl ContainerCgroup {
    /// Creates (or reuses) the cgroup at `spec_path` and applies `resources`.
    pub fn create(
        spec_path: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        let path = normalize_path(spec_path);
        let relative = path.trim_start_matches('/').to_owned();
        let hierarchy = host_hierarchy();
        let controllers = controllers_to_join(hierarchy.as_ref(), resources);
        let cgroup = Cgroup::new_with_specified_controllers(hierarchy, &relative, controllers)
            .map_err(|e| CgroupError::Setup {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let this = ContainerCgroup { cgroup, path };
        if let Some(resources) = resources {
            containerd_shim::cgroup::update_resources(&this.cgroup, resources).map_err(|e| {
                CgroupError::Setup {
                    path: this.path.clone(),
                    message: format!("applying resources: {e}"),
                }
            })?;
        }
        Ok(this)
    }

    /// On cgroup v1, the `tasks` file of each hierarchy's cgroup: a single-threaded process
    /// joins by writing `0` to each ([`crate::guest`] does). The kernel moves a thread that
    /// moves itself without the global lock that a write to `cgroup.procs` takes, whose first
    /// taker waits a whole RCU grace period (5–20 ms here, with the caller blocked in `write`).
    /// `None` on cgroup v2, where a process can only be moved whole: use [`Self::add`].
    pub fn self_join_files(&self) -> Option<Vec<PathBuf>> {
        if self.cgroup.v2() {
            return None;
        }
        Some(
            self.cgroup
                .subsystems()
                .iter()
                .map(|s| s.to_controller().path().join("tasks"))
                .collect(),
        )
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        self.cgroup
            .add_task_by_tgid(CgroupPid::from(u64::from(pid)))
            .map_err(|e| CgroupError::Setup {
                path: self.path.clone(),
                message: format!("adding pid {pid}: {e}"),
            })
    }

    /// containerd's metrics message for this cgroup, as `ctr task metrics` decodes it.
    pub fn metrics(&self) -> Result<Any, CgroupError> {
        let setup = |message: String| CgroupError::Setup {
            path: self.path.clone(),
            message,
        };
        let (type_url, value) = if self.cgroup.v2() {
            let m = containerd_shim::cgroup::collect_metrics_v2(&self.cgroup)
                .map_err(|e| setup(e.to_string()))?;
            ("io.containerd.cgroups.v2.Metrics", m.write_to_bytes())
        } else {
            let m = containerd_shim::cgroup::collect_metrics(&self.cgroup)
                .map_err(|e| setup(e.to_string()))?;
            ("io.containerd.cgroups.v1.Metrics", m.write_to_bytes())
        };
        let mut any = Any::new();
        any.type_url = type_url.to_owned();
        any.value = value.map_err(|e| setup(e.to_string()))?;
        Ok(any)
    }

    /// Removes the cgroup (it must be empty).
    /// SIGKILLs every process still in the cgroup and waits (up to `wait`) until it is empty:
    /// after a shim died, its guests must not outlive the container. Returns how many
    /// processes were killed.
    pub fn kill_all(&self, wait: std::time::Duration) -> usize {
        let mut killed = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + wait;
        loop {
            let procs = self.cgroup.procs();
            if procs.is_empty() || std::time::Instant::now() >= deadline {
                return killed.len();
            }
            for pid in procs {
                if let Ok(raw) = i32::try_from(pid.pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    killed.insert(raw);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes the cgroup if the kernel lets go of it at once: one `rmdir` per hierarchy, no
    /// retries, so it can run on the async runtime. `false` when any directory remains, for
    /// [`ContainerCgroup::delete`] (which retries with sleeps) to finish.
    pub fn remove_now(&self) -> bool {
        self.remove_unjoined();
        let mut dirs: Vec<&std::path::Path> = self
            .cgroup
            .subsystems()
            .iter()
            .map(|subsystem| subsystem.to_controller().path())
            .collect();
        dirs.sort();
        dirs.dedup();
        // Every directory is tried, also after one that stays.
        let remaining = dirs
            .into_iter()
            .filter(|dir| match std::fs::remove_dir(dir) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            })
            .count();
        remaining == 0
    }

    /// Removes this cgroup's directories in the hierarchies it did not join, where a container
    /// made by an earlier wasmcell (which joined every one) or with a cpuset may have left
    /// them; errors are ignored (`rmdir` of what is not there fails at once).
    fn remove_unjoined(&self) {
        if self.cgroup.v2() {
            return;
        }
        let joined: Vec<String> = self
            .cgroup
            .subsystems()
            .iter()
            .map(|s| s.controller_name())
            .collect();
        let every = Cgroup::load(host_hierarchy(), self.path.trim_start_matches('/'));
        for subsystem in every.subsystems() {
            if !joined.contains(&subsystem.controller_name()) {
                let _ = std::fs::remove_dir(subsystem.to_controller().path());
            }
        }
    }

    /// Removes the cgroup, retrying (and sleeping) while the kernel still holds it.
    pub fn delete(&self) -> Result<(), CgroupError> {
        self.remove_unjoined();
        self.cgroup.delete().map_err(|e| CgroupError::Setup {
            path: self.path.clone(),
            message: format!("removing: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller_roots(hierarchy: &dyn Hierarchy) -> Vec<PathBuf> {
        hierarchy
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect()
    }

    #[test]
    fn the_hierarchy_found_once_is_the_one_found_now() {
        find_host_hierarchy();
        let kept = host_hierarchy();
        let fresh = hierarchies::auto();
        assert_eq!(kept.v2(), fresh.v2());
        assert_eq!(kept.root(), fresh.root());
        assert_eq!(
            controller_roots(kept.as_ref()),
            controller_roots(fresh.as_ref())
        );
    }
}
