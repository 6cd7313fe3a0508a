//! One container's lifecycle: an explicit state enum whose `can_*` checks decide which task
//! calls are allowed, plus what the shim must undo at delete.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::cgroup::ContainerCgroup;
use crate::process::PreparedGuest;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The guest process exists, its program is loaded, it waits for `start`.
    Created,
    /// The guest runs.
    Running,
    /// The guest exited (or was killed); its exit is recorded.
    Stopped,
}

impl Status {
    /// `start` is allowed only once, from Created.
    pub fn can_start(self) -> bool {
        self == Status::Created
    }
    /// Signals reach a guest that exists.
    pub fn can_kill(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }
    /// A running guest must be stopped before its task is deleted.
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Created | Status::Stopped)
    }
    /// containerd's name for the status.
    pub fn as_task_status(self) -> containerd_shim::api::Status {
        match self {
            Status::Created => containerd_shim::api::Status::CREATED,
            Status::Running => containerd_shim::api::Status::RUNNING,
            Status::Stopped => containerd_shim::api::Status::STOPPED,
        }
    }
}

/// How a guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code (128+N when killed by signal N).
    pub code: u32,
    /// When it was observed.
    pub at: SystemTime,
}

/// A container the shim manages.
#[derive(Debug)]
pub struct Container {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The guest's pid.
    pub pid: u32,
    /// Lifecycle state.
    pub status: Status,
    /// stdio FIFO paths as containerd gave them.
    pub stdin: String,
    /// stdout FIFO.
    pub stdout: String,
    /// stderr FIFO.
    pub stderr: String,
    /// The cgroup, when the spec asked for one.
    pub cgroup: Option<ContainerCgroup>,
    /// The rootfs the shim mounted (and must unmount), if containerd gave mounts.
    pub rootfs: Option<crate::rootfs_mount::MountedRootfs>,
    /// The relay feeding containerd's stdin FIFO to the guest.
    pub stdin_relay: Option<crate::stdio::StdinRelay>,
    /// What the guest's exit waits on before it is reported (taken at the exit).
    pub output: Option<crate::stdio::OutputDrain>,
    /// The guest waiting for `start`.
    pub prepared: Option<PreparedGuest>,
    /// The guest's network namespace, given back to the starter's pool once the guest is
    /// reaped ([`crate::network_pool`]); `None` unless its plan may share a used one.
    pub used_network: Option<std::os::fd::OwnedFd>,
    /// Exit, once known; waiters subscribe to it.
    pub exit: watch::Sender<Option<Exit>>,
}

impl Container {
    /// The recorded exit, if any.
    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_rules() {
        assert!(Status::Created.can_start() && !Status::Running.can_start());
        assert!(Status::Running.can_kill() && !Status::Stopped.can_kill());
        assert!(!Status::Running.can_delete() && Status::Stopped.can_delete());
    }
}
