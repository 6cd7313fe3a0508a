//! The guest plan: everything a guest process needs, derived from the bundle's OCI spec.
//!
//! The shim builds the plan at `create` and writes it into the bundle; the guest process reads
//! it. Keeping it a plain serde struct means the guest never parses OCI specs or talks to
//! containerd, and the shim never touches wasmtime.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::confine::mounts::BindSource;
use crate::confine::{ConfineError, Confinement, MountPlan, NsAction};
use crate::rootfs::{ResolveError, resolve_in_root};
use nix::mount::MsFlags;

pub use wasmcell_shim_front::{PLAN_FILE, PROGRAM_FILE};

/// How the guest reaches the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The spec has no network namespace: the host's network (`ctr run --net-host`).
    Host,
    /// A new, empty network namespace (only a down loopback).
    Private,
    /// An empty namespace as `Private`, but the starter's shared one for a guest whose program
    /// turns out to need no network ([`crate::empty_network`]).
    Empty,
    /// Join the namespace at this path (a pod's).
    Join(PathBuf),
}

/// A host directory visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPreopen {
    /// Host directory.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Whether writes are refused.
    pub read_only: bool,
}

/// What one guest process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestPlan {
    /// Host path of the wasm binary.
    pub program: PathBuf,
    /// Exported function to call instead of the command entry (`path#func`).
    pub entry: Option<String>,
    /// Arguments as the guest sees them (`args[0]` without `#func`).
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the guest.
    pub cwd: Option<String>,
    /// Directories the guest can reach, as paths inside its confined root (see
    /// [`confined_preopens`]).
    pub preopens: Vec<PlanPreopen>,
    /// The second wall, applied by the guest to itself before guest code runs.
    pub confinement: Confinement,
    /// Cap on the guest's linear memory, derived from `linux.resources.memory.limit` (see
    /// [`wasm_memory_budget`]); the cgroup enforces the limit itself.
    pub memory_limit_bytes: Option<u64>,
    /// Network placement.
    pub network: NetworkMode,
    /// Compile cache directory.
    pub cache_dir: Option<PathBuf>,
    /// A pod sandbox: nothing to run, the process waits to be killed.
    #[serde(default)]
    pub sandbox: bool,
    /// The operator's deny patterns ([`wasmcell_engine::Policy`]), checked against the
    /// binary's imports before anything runs.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Where `deny` came from, for messages.
    #[serde(default)]
    pub policy_source: String,
    /// Destinations an HTTP component may send requests to (the policy's `allow_outbound`).
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// The imports the artifact's wasm config declares, when it has a config with a
    /// `component` section; the binary must import exactly these.
    #[serde(default)]
    pub declared_imports: Option<Vec<String>>,
    /// The program's sha256 (hex) when the shim verified it: a wasm layer's digest, checked
    /// as the layer was read from the content store and written to the program file. The
    /// guest keys the compile cache with it instead of hashing the program again.
    #[serde(default)]
    pub program_sha256: Option<String>,
    /// The starter's pool of used network namespaces ([`crate::network_pool`]), set by the
    /// shim when [`GuestPlan::may_share_a_used_network`] and a starter may be serving: a guest
    /// that leaves the shared empty namespace borrows one there before it makes one.
    #[serde(default)]
    pub network_pool: Option<PathBuf>,
}

impl GuestPlan {
    /// Whether this guest may be given a network namespace another guest used, and its own
    /// be given to the next: it gets an empty one ([`NetworkMode::Empty`]: no pod's, no
    /// `net.*` sysctl, not privileged), nothing in it can change a namespace (neither
    /// `CAP_NET_ADMIN` nor `CAP_SYS_ADMIN` in its bounding set; user namespaces are refused)
    /// and it is PID 1 of a new PID namespace, so its reaping means nothing is left in it.
    pub fn may_share_a_used_network(&self) -> bool {
        let bounding = &self.confinement.identity.bounding;
        self.network == NetworkMode::Empty
            && self.confinement.namespaces.pid == NsAction::New
            && !bounding.contains("CAP_NET_ADMIN")
            && !bounding.contains("CAP_SYS_ADMIN")
    }
}

/// Linear memory a guest may use under a cgroup limit of `limit` bytes: the limit minus a
/// quarter of it (at least 8 MiB, at most 64 MiB) for the guest process itself, so wasmtime
/// stops a growing guest with a clear message before the kernel's OOM killer does silently.
pub fn wasm_memory_budget(limit: u64) -> u64 {
    let headroom = (limit / 4).clamp(8 << 20, 64 << 20);
    limit.saturating_sub(headroom).max(1 << 20)
}

/// WASI preopens once the guest is confined: `/` (read-only with `root.readonly`), which
/// holds every mount, single files included, plus one per directory mount with that mount's
/// read-only flag. The kernel enforces the flags anyway; the extra preopens make WASI refuse a
/// write itself, with a clear "read-only" error (wasmtime-wasi reports the kernel's EROFS as a
/// plain I/O error), and keep writable volumes writable under a read-only root.
pub fn confined_preopens(mounts: &MountPlan) -> Vec<PlanPreopen> {
    let root = PlanPreopen {
        host: PathBuf::from("/"),
        guest: "/".to_owned(),
        read_only: mounts.read_only,
    };
    let directories = mounts
        .mounts
        .iter()
        .filter(|m| m.bind != Some(BindSource::File))
        .map(|m| PlanPreopen {
            host: PathBuf::from(&m.destination),
            guest: m.destination.clone(),
            read_only: m.flags & MsFlags::MS_RDONLY.bits() != 0,
        });
    std::iter::once(root).chain(directories).collect()
}

/// Why a spec cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `process.args` is empty.
    #[error(
        "the container has no arguments: give the program as the first argument (for images with the .wasm in their filesystem, its path, e.g. /app.wasm)"
    )]
    NoArgs,
    /// `args[0]` cannot be found in the rootfs.
    #[error("args[0] {arg:?}: {source}")]
    Program {
        /// The argument.
        arg: String,
        /// Why.
        #[source]
        source: ResolveError,
    },
    /// `args[0]` names a directory or something else that is not a file.
    #[error("args[0] {arg:?} is not a regular file")]
    NotAFile {
        /// The argument.
        arg: String,
    },
    /// The spec has no `process`.
    #[error("the OCI spec has no process section")]
    NoProcess,
    /// The spec asks for confinement wasmcell cannot give.
    #[error(transparent)]
    Confine(#[from] ConfineError),
}

/// Where the program comes from when `args[0]` is not a file in the rootfs.
#[derive(Debug, Clone)]
pub enum ProgramSource {
    /// `args[0]` is a path in the rootfs (classic images).
    Rootfs,
    /// The shim already wrote the wasm layer here (wasm-layer images, artifacts).
    File(PathBuf),
    /// A pod's sandbox container: no program; the guest process only holds the pod's place
    /// (cgroup, network namespace) until it is killed.
    Sandbox,
}

impl GuestPlan {
    /// Builds the plan for container `id`'s `spec`, whose root filesystem is mounted at
    /// `rootfs`.
    pub fn from_spec(
        id: &str,
        spec: &Spec,
        rootfs: &Path,
        source: ProgramSource,
        cache_dir: Option<PathBuf>,
    ) -> Result<GuestPlan, PlanError> {
        let process = spec.process().as_ref().ok_or(PlanError::NoProcess)?;
        let raw_args = process.args().clone().unwrap_or_default();
        let first = raw_args.first().ok_or(PlanError::NoArgs)?;
        let (path, entry) = match first.split_once('#') {
            Some((path, func)) if !func.is_empty() => (path.to_owned(), Some(func.to_owned())),
            _ => (first.clone(), None),
        };
        let sandbox = matches!(source, ProgramSource::Sandbox);
        let program = match source {
            ProgramSource::File(file) => file,
            ProgramSource::Sandbox => PathBuf::new(),
            ProgramSource::Rootfs => {
                let host = resolve_in_root(rootfs, &path).map_err(|source| PlanError::Program {
                    arg: first.clone(),
                    source,
                })?;
                if !host.is_file() {
                    return Err(PlanError::NotAFile { arg: first.clone() });
                }
                host
            }
        };
        let mut args = raw_args.clone();
        args[0] = path;

        let env = process
            .env()
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.clone(), String::new()),
            })
            .collect();

        let confinement = Confinement::from_spec(id, spec, rootfs.to_owned())?;
        let preopens = confined_preopens(&confinement.mounts);

        let linux = spec.linux().as_ref();
        let memory_limit_bytes = linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|&l| l > 0)
            .map(|l| wasm_memory_budget(l as u64));
        let network = match linux
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|ns| ns.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        {
            None => NetworkMode::Host,
            Some(ns) => match ns.path() {
                Some(path) => NetworkMode::Join(path.clone()),
                // A pod's containers join the sandbox's namespace, a `net.*` sysctl changes the
                // namespace, and a privileged container is expected to have runc's own one.
                None if sandbox
                    || confinement
                        .namespaces
                        .sysctls
                        .iter()
                        .any(|(k, _)| k.starts_with("net."))
                    || crate::confine::audit::is_privileged(spec) =>
                {
                    NetworkMode::Private
                }
                None => NetworkMode::Empty,
            },
        };

        Ok(GuestPlan {
            program,
            entry,
            args,
            env,
            cwd: Some(process.cwd().display().to_string()),
            preopens,
            confinement,
            memory_limit_bytes,
            network,
            cache_dir,
            sandbox,
            deny: Vec::new(),
            policy_source: String::new(),
            allow_outbound: Vec::new(),
            declared_imports: None,
            program_sha256: None,
            network_pool: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_leaves_room_for_the_process() {
        assert_eq!(wasm_memory_budget(64 << 20), 48 << 20);
        assert_eq!(wasm_memory_budget(16 << 20), 8 << 20);
        assert_eq!(wasm_memory_budget(1 << 30), (1 << 30) - (64 << 20));
        assert_eq!(wasm_memory_budget(4 << 20), 1 << 20);
    }
}
