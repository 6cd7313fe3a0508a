//! The second wall: confining a guest process the way runc confines a container.
//!
//! wasm's sandbox is the first wall; this module owns the second. At `create` the shim turns
//! the OCI spec into a [`Confinement`] (refusing what it cannot apply and warning about what it
//! does not, so nothing is silently ignored), which travels in the guest plan. The guest
//! process applies it after it has loaded and mapped its compiled program (the compile cache is
//! root-only and outside the rootfs) and before any guest code runs, in this order, each step
//! its own function:
//!
//! 1. [`namespaces`]: join or create the IPC, UTS and cgroup namespaces, always a new mount
//!    namespace (the PID namespace was entered at spawn: only a new process can be in one);
//!    the spec's sysctls; hostname and domain name.
//!    Then one name-service lookup, so glibc loads the node's `nsswitch.conf` (it keeps that
//!    configuration once the root changes); lookups then read the container's `/etc/hosts`
//!    and `/etc/resolv.conf`, as they would in a runc container whose image says
//!    `hosts: files dns`. wasm images have no C library and no `nsswitch.conf` of their own.
//! 2. [`mounts`]: mounts made slave (or the spec's propagation), the spec's mounts inside the
//!    rootfs in order (directory and single-file binds, tmpfs, …), masked and read-only
//!    paths, every mount `nodev` (unless privileged), `pivot_root` into the rootfs, the old
//!    root detached, root read-only if asked.
//! 3. [`identity`]: rlimits, umask, the capability bounding set, groups and user, the other
//!    capability sets, `no_new_privs`.
//! 4. [`seccomp`]: the spec's filter, or wasmcell's default one — last, so every earlier step
//!    may use what the filter forbids. (Without `no_new_privs` the kernel accepts a filter
//!    only from a process holding CAP_SYS_ADMIN, so then it is installed before step 3.)
//!
//! The guest must be single-threaded when this runs: capabilities, the root directory and
//! seccomp filters are per thread, and threads started later inherit them.

pub mod audit;
pub mod identity;
pub mod mounts;
pub mod namespaces;
pub mod seccomp;

use std::path::PathBuf;

use log::warn;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

pub use identity::Identity;
pub use mounts::{MountPlan, MountPlanError};
pub use namespaces::{NamespacePlan, NsAction};
pub use seccomp::SeccompFilters;

/// Everything the guest process applies to itself before guest code runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confinement {
    /// Namespaces, sysctls, hostname.
    pub namespaces: NamespacePlan,
    /// Root filesystem, mounts, masked and read-only paths.
    pub mounts: MountPlan,
    /// User, groups, capabilities, rlimits, umask, `no_new_privs`.
    pub identity: Identity,
    /// Compiled seccomp programs (the spec's, or wasmcell's default filter).
    pub seccomp: SeccompFilters,
}

/// Why a spec cannot be confined as it asks.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A spec field wasmcell refuses (see the README's table).
    #[error("{field}: {reason}")]
    Refused {
        /// The spec field, as the OCI runtime spec names it.
        field: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The mounts cannot be planned.
    #[error(transparent)]
    Mount(#[from] MountPlanError),
    /// The seccomp profile cannot be compiled.
    #[error("linux.seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    /// A step failed in the guest process.
    #[error("confining the guest: {step}: {source}")]
    Apply {
        /// What was being done.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ConfineError {
    pub(crate) fn refused(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfineError::Refused {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn apply(step: impl Into<String>) -> impl FnOnce(nix::Error) -> ConfineError {
        let step = step.into();
        move |e| ConfineError::Apply {
            step,
            source: std::io::Error::from(e),
        }
    }

    pub(crate) fn apply_io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> ConfineError {
        let step = step.into();
        move |source| ConfineError::Apply { step, source }
    }
}

/// See step 1 of the module docs: glibc reads all of `nsswitch.conf` at the first lookup of
/// any database. The networks database is `files` on Debian, built into glibc, so this loads no
/// NSS module (a `db` entry, as Debian's protocols and services have, costs a library search of
/// about 180 failed opens) and waits on no DNS server.
fn load_name_service_config() {
    // SAFETY: a NUL-terminated literal; the returned static entry is not used, and the guest
    // is single-threaded here, so the non-reentrant call races with nothing.
    #[allow(unsafe_code)]
    unsafe {
        libc::getnetbyname(c"localnet".as_ptr());
    }
}

impl Confinement {
    /// Plans the confinement of `spec`, whose root filesystem is mounted at `rootfs`. Fields
    /// wasmcell does not apply are refused (an error) or logged as warnings for `container`.
    pub fn from_spec(
        container: &str,
        spec: &Spec,
        rootfs: PathBuf,
    ) -> Result<Confinement, ConfineError> {
        let mut warnings = audit::audit(spec)?;
        let namespaces = NamespacePlan::from_spec(spec, &mut warnings)?;
        for warning in warnings {
            warn!("container {container}: {warning}");
        }
        let privileged = audit::is_privileged(spec);
        let linux = spec.linux().as_ref();
        let seccomp = SeccompFilters::from_spec(linux.and_then(|l| l.seccomp().as_ref()))?;
        Ok(Confinement {
            namespaces,
            mounts: MountPlan::from_spec(spec, rootfs, privileged)?,
            identity: Identity::from_spec(spec)?,
            seccomp,
        })
    }

    /// Applies everything, in the order of the module docs, to the calling (only) thread.
    pub fn apply(&self) -> Result<(), ConfineError> {
        let threads = namespaces::thread_count();
        if threads != 1 {
            return Err(ConfineError::Apply {
                step: "checking the process is single-threaded".into(),
                source: std::io::Error::other(format!(
                    "it has {threads} threads; confinement is per thread, so it must run before any \
                     thread starts"
                )),
            });
        }
        self.namespaces.apply()?;
        load_name_service_config();
        self.mounts.apply()?;
        let no_new_privs = self.identity.no_new_privileges;
        if !no_new_privs {
            self.seccomp.install()?;
        }
        self.identity.apply()?;
        // A uid or gid change clears the parent-death signal set at spawn; arm it again so the
        // guest still dies with its shim. (A shim that died in between closed the control
        // pipe, and the guest exits when it reads that instead of `start`.)
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(ConfineError::apply("PR_SET_PDEATHSIG"))?;
        if no_new_privs {
            self.seccomp.install()?;
        }
        Ok(())
    }
}

/// A minimal spec with `json`'s top-level fields, for the submodules' tests.
#[cfg(test)]
pub(crate) fn test_spec(json: serde_json::Value) -> Spec {
    let mut base = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(base).unwrap_or_else(|e| panic!("spec: {e}"))
}
