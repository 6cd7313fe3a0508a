//! Linux namespaces of a guest, the spec's sysctls and its hostname.
//!
//! Network and PID namespaces are entered when the guest process is spawned
//! ([`PidNamespaceForChildren`]: a process can only be *born* into a PID namespace); the
//! others, and always a new mount namespace, by the guest itself in [`NamespacePlan::apply`].
//! A namespace the spec gives a `path` for is joined (a pod's containers join the sandbox's
//! IPC, UTS and, with `shareProcessNamespace`, PID namespace); one without a path is created;
//! one the spec does not list is the host's. User and time namespaces are refused.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use super::ConfineError;

/// What to do about one namespace type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NsAction {
    /// Stay in the host's (the spec does not list it).
    #[default]
    Host,
    /// A new one.
    New,
    /// Join the one at this path (`/proc/PID/ns/…`).
    Join(PathBuf),
}

/// Namespaces, sysctls and names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespacePlan {
    /// PID namespace (entered at spawn).
    pub pid: NsAction,
    /// IPC namespace.
    pub ipc: NsAction,
    /// UTS namespace.
    pub uts: NsAction,
    /// cgroup namespace (entered after the shim placed the guest in its cgroup).
    pub cgroup: NsAction,
    /// `hostname`, set in a new UTS namespace.
    pub hostname: Option<String>,
    /// `domainname`, set in a new UTS namespace.
    pub domainname: Option<String>,
    /// `linux.sysctl`, namespaced keys only, written once the namespaces are entered.
    pub sysctls: Vec<(String, String)>,
}

/// Sysctl prefixes that belong to a namespace the guest has its own of (runc's rule): only
/// these may be set, because any other would change the whole host.
const NAMESPACED_SYSCTLS: [(&str, LinuxNamespaceType); 4] = [
    ("net.", LinuxNamespaceType::Network),
    ("kernel.shm", LinuxNamespaceType::Ipc),
    ("kernel.msg", LinuxNamespaceType::Ipc),
    ("fs.mqueue.", LinuxNamespaceType::Ipc),
];
const IPC_SYSCTLS: [&str; 1] = ["kernel.sem"];
const UTS_SYSCTLS: [&str; 2] = ["kernel.hostname", "kernel.domainname"];

impl NamespacePlan {
    /// Reads `linux.namespaces`, `hostname`, `domainname` and `linux.sysctl`; pushes what is
    /// not applied onto `warnings`.
    pub fn from_spec(
        spec: &Spec,
        warnings: &mut Vec<String>,
    ) -> Result<NamespacePlan, ConfineError> {
        let mut plan = NamespacePlan::default();
        let listed = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let own =
            |typ: LinuxNamespaceType| listed.iter().any(|n| n.typ() == typ && n.path().is_none());
        for ns in &listed {
            let action = match ns.path() {
                Some(path) => NsAction::Join(path.clone()),
                None => NsAction::New,
            };
            match ns.typ() {
                LinuxNamespaceType::Pid => plan.pid = action,
                LinuxNamespaceType::Ipc => plan.ipc = action,
                LinuxNamespaceType::Uts => plan.uts = action,
                LinuxNamespaceType::Cgroup => plan.cgroup = action,
                // Entered at spawn (crate::process).
                LinuxNamespaceType::Network => {}
                LinuxNamespaceType::Mount => {
                    if ns.path().is_some() {
                        return Err(ConfineError::refused(
                            "linux.namespaces[mount].path",
                            "joining an existing mount namespace is not supported: every guest \
                             gets a new one with its rootfs as its root",
                        ));
                    }
                }
                LinuxNamespaceType::User => {
                    return Err(ConfineError::refused(
                        "linux.namespaces[user]",
                        "user namespaces (Kubernetes hostUsers: false) are not supported by \
                         wasmcell yet; run the pod with hostUsers: true",
                    ));
                }
                LinuxNamespaceType::Time => {
                    return Err(ConfineError::refused(
                        "linux.namespaces[time]",
                        "time namespaces are not supported by wasmcell",
                    ));
                }
            }
        }
        plan.hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        plan.domainname = spec.domainname().clone().filter(|d| !d.is_empty());
        if !own(LinuxNamespaceType::Uts) {
            // Joined: the namespace's owner set the names. The host's (CRI gives host-network
            // pods the node's name): setting it would rename the node.
            if plan.uts == NsAction::Host
                && let Some(name) = plan.hostname.as_ref().or(plan.domainname.as_ref())
            {
                warnings.push(format!(
                    "hostname {name:?} is not applied: the container shares the host's UTS namespace"
                ));
            }
            plan.hostname = None;
            plan.domainname = None;
        }
        let mut sysctls: Vec<(String, String)> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.sysctl().clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        sysctls.sort();
        for (key, _) in &sysctls {
            let namespace = NAMESPACED_SYSCTLS
                .iter()
                .find(|(prefix, _)| key.starts_with(prefix))
                .map(|(_, ns)| *ns)
                .or_else(|| {
                    IPC_SYSCTLS
                        .contains(&key.as_str())
                        .then_some(LinuxNamespaceType::Ipc)
                })
                .or_else(|| {
                    UTS_SYSCTLS
                        .contains(&key.as_str())
                        .then_some(LinuxNamespaceType::Uts)
                });
            let allowed = match namespace {
                Some(LinuxNamespaceType::Network) => listed
                    .iter()
                    .any(|n| n.typ() == LinuxNamespaceType::Network),
                Some(ns) => listed.iter().any(|n| n.typ() == ns),
                None => false,
            };
            if !allowed {
                return Err(ConfineError::refused(
                    format!("linux.sysctl[{key}]"),
                    "only sysctls of a namespace the container does not share with the host can \
                     be set (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, \
                     kernel.hostname, kernel.domainname)",
                ));
            }
            if key.contains('/') || key.contains("..") {
                return Err(ConfineError::refused(
                    format!("linux.sysctl[{key}]"),
                    "not a sysctl name",
                ));
            }
        }
        plan.sysctls = sysctls;
        Ok(plan)
    }

    /// Enters the namespaces (a new mount namespace always), writes the sysctls and sets the
    /// names. Runs before the mounts, while the host's `/proc` is still reachable.
    pub fn apply(&self) -> Result<(), ConfineError> {
        let mut new = CloneFlags::CLONE_NEWNS;
        for (action, flag, name) in [
            (&self.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
            (&self.uts, CloneFlags::CLONE_NEWUTS, "uts"),
            (&self.cgroup, CloneFlags::CLONE_NEWCGROUP, "cgroup"),
        ] {
            match action {
                NsAction::Host => {}
                NsAction::New => new |= flag,
                NsAction::Join(path) => join(path, flag, name)?,
            }
        }
        nix::sched::unshare(new).map_err(ConfineError::apply("creating namespaces (unshare)"))?;
        for (key, value) in &self.sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(ConfineError::apply_io(format!(
                "setting sysctl {key}={value}"
            )))?;
        }
        if let Some(hostname) = &self.hostname {
            nix::unistd::sethostname(hostname).map_err(ConfineError::apply(format!(
                "setting hostname {hostname:?}"
            )))?;
        }
        if let Some(domain) = &self.domainname {
            set_domainname(domain)?;
        }
        Ok(())
    }
}

fn join(path: &std::path::Path, flag: CloneFlags, name: &str) -> Result<(), ConfineError> {
    let file = File::open(path).map_err(ConfineError::apply_io(format!(
        "opening the {name} namespace {}",
        path.display()
    )))?;
    nix::sched::setns(file.as_fd(), flag).map_err(ConfineError::apply(format!(
        "joining the {name} namespace {}",
        path.display()
    )))
}

/// Joins the `name` namespace at `path` (`setns`), for the guest launcher, whose errors are
/// plain I/O errors: each one names the namespace and the path.
pub(crate) fn join_for_launch(
    path: &std::path::Path,
    flag: CloneFlags,
    name: &str,
) -> std::io::Result<()> {
    let file = File::open(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("opening the {name} namespace {}: {e}", path.display()),
        )
    })?;
    nix::sched::setns(file.as_fd(), flag).map_err(|e| {
        std::io::Error::other(format!(
            "joining the {name} namespace {}: {e}",
            path.display()
        ))
    })
}

fn set_domainname(domain: &str) -> Result<(), ConfineError> {
    // SAFETY: the pointer and length describe `domain`'s bytes, alive for the call; the kernel
    // copies them and keeps no reference.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
    if rc != 0 {
        return Err(ConfineError::Apply {
            step: format!("setting domainname {domain:?}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Threads of this process, from `/proc/self/stat` (0 if it cannot be read).
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            rest.split_whitespace().nth(17)?.parse().ok()
        })
        .unwrap_or(0)
}

/// While alive, processes forked by the calling thread are born into the PID namespace the
/// spec asks for; dropping it restores the thread's own. PID namespaces cannot be entered by
/// an existing process, and the shim forks guests from a blocking-pool thread, so the change
/// is per thread and confined to one spawn.
#[derive(Debug)]
pub struct PidNamespaceForChildren {
    own: Option<OwnedFd>,
}

impl PidNamespaceForChildren {
    /// Points the calling thread's children at `action`'s PID namespace.
    pub fn enter(action: &NsAction) -> std::io::Result<PidNamespaceForChildren> {
        if *action == NsAction::Host {
            return Ok(PidNamespaceForChildren { own: None });
        }
        let own: OwnedFd = File::open("/proc/thread-self/ns/pid")?.into();
        match action {
            NsAction::Host => {}
            NsAction::New => nix::sched::unshare(CloneFlags::CLONE_NEWPID)?,
            NsAction::Join(path) => join_for_launch(path, CloneFlags::CLONE_NEWPID, "PID")?,
        }
        Ok(PidNamespaceForChildren { own: Some(own) })
    }
}

impl Drop for PidNamespaceForChildren {
    fn drop(&mut self) {
        if let Some(own) = &self.own
            && let Err(e) = nix::sched::setns(own.as_fd(), CloneFlags::CLONE_NEWPID)
        {
            log::error!("restoring the spawning thread's PID namespace: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confine::test_spec as spec;

    #[test]
    fn namespaces_are_joined_created_or_refused() {
        let mut warnings = Vec::new();
        let plan = NamespacePlan::from_spec(
            &spec(serde_json::json!({
                "hostname": "pod",
                "linux": {"namespaces": [
                    {"type": "pid"}, {"type": "ipc", "path": "/proc/7/ns/ipc"},
                    {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
                    "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"}}
            })),
            &mut warnings,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.pid, NsAction::New);
        assert_eq!(plan.ipc, NsAction::Join("/proc/7/ns/ipc".into()));
        assert_eq!(plan.cgroup, NsAction::Host);
        assert_eq!(plan.hostname.as_deref(), Some("pod"));
        assert_eq!(plan.sysctls.len(), 1);

        let user = NamespacePlan::from_spec(
            &spec(serde_json::json!({
                "linux": {"namespaces": [{"type": "user"}]}
            })),
            &mut warnings,
        );
        assert!(
            user.is_err_and(|e| e.to_string().contains("hostUsers: false")),
            "user namespaces are refused by name"
        );
        let host_sysctl = NamespacePlan::from_spec(
            &spec(serde_json::json!({
                "linux": {"namespaces": [{"type": "network"}], "sysctl": {"vm.swappiness": "1"}}
            })),
            &mut warnings,
        );
        assert!(host_sysctl.is_err_and(|e| e.to_string().contains("linux.sysctl[vm.swappiness]")));
        assert!(warnings.is_empty(), "{warnings:?}");
        let shared_uts = NamespacePlan::from_spec(
            &spec(serde_json::json!({
                "hostname": "node-1", "linux": {"namespaces": []}
            })),
            &mut warnings,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shared_uts.hostname, None, "the node is never renamed");
        assert!(
            warnings[0].contains("\"node-1\" is not applied"),
            "{warnings:?}"
        );
    }
}
