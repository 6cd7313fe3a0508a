//! Who a guest runs as: `process.user`, `process.capabilities`, `process.rlimits`,
//! `process.noNewPrivileges` and the umask.
//!
//! A runc container's process ends with the capability sets an `execve` of a plain binary
//! leaves it: for uid 0 the bounding and inheritable sets, for any other uid only the ambient
//! set (so an unprivileged user has an empty effective set). A guest never execs, so the shim
//! computes those end sets at create ([`Identity::from_spec`]) and the guest sets them directly
//! — `/proc/PID/status` then reads as it would for the same spec under runc.

use std::collections::BTreeSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::ConfineError;

/// Default umask when the spec gives none (runc's).
pub const DEFAULT_UMASK: u32 = 0o022;

/// One `process.rlimits` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, …
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The guest's identity and privileges.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Identity {
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.user.additionalGids` (the process's supplementary groups).
    pub additional_gids: Vec<u32>,
    /// `process.user.umask`, else [`DEFAULT_UMASK`].
    pub umask: u32,
    /// Capability names (`CAP_…`) per set, as the guest ends with them.
    pub bounding: BTreeSet<String>,
    /// Effective set.
    pub effective: BTreeSet<String>,
    /// Permitted set.
    pub permitted: BTreeSet<String>,
    /// Inheritable set.
    pub inheritable: BTreeSet<String>,
    /// Ambient set.
    pub ambient: BTreeSet<String>,
    /// `process.noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `process.rlimits`.
    pub rlimits: Vec<Rlimit>,
}

const RLIMITS: [(&str, nix::sys::resource::Resource); 16] = {
    use nix::sys::resource::Resource as R;
    [
        ("RLIMIT_CPU", R::RLIMIT_CPU),
        ("RLIMIT_FSIZE", R::RLIMIT_FSIZE),
        ("RLIMIT_DATA", R::RLIMIT_DATA),
        ("RLIMIT_STACK", R::RLIMIT_STACK),
        ("RLIMIT_CORE", R::RLIMIT_CORE),
        ("RLIMIT_RSS", R::RLIMIT_RSS),
        ("RLIMIT_NPROC", R::RLIMIT_NPROC),
        ("RLIMIT_NOFILE", R::RLIMIT_NOFILE),
        ("RLIMIT_MEMLOCK", R::RLIMIT_MEMLOCK),
        ("RLIMIT_AS", R::RLIMIT_AS),
        ("RLIMIT_LOCKS", R::RLIMIT_LOCKS),
        ("RLIMIT_SIGPENDING", R::RLIMIT_SIGPENDING),
        ("RLIMIT_MSGQUEUE", R::RLIMIT_MSGQUEUE),
        ("RLIMIT_NICE", R::RLIMIT_NICE),
        ("RLIMIT_RTPRIO", R::RLIMIT_RTPRIO),
        ("RLIMIT_RTTIME", R::RLIMIT_RTTIME),
    ]
};

fn names(set: Option<&oci_spec::runtime::Capabilities>) -> BTreeSet<String> {
    set.into_iter()
        .flatten()
        .filter_map(|cap| serde_json::to_value(cap).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

impl Identity {
    /// Reads the spec's process identity and computes the capability sets the guest ends with.
    pub fn from_spec(spec: &Spec) -> Result<Identity, ConfineError> {
        let Some(process) = spec.process().as_ref() else {
            return Ok(Identity {
                umask: DEFAULT_UMASK,
                ..Identity::default()
            });
        };
        let user = process.user();
        let no_new_privileges = process.no_new_privileges().unwrap_or(false);
        let caps = process.capabilities().as_ref();
        let bounding = names(caps.and_then(|c| c.bounding().as_ref()));
        let spec_permitted = names(caps.and_then(|c| c.permitted().as_ref()));
        let inheritable = names(caps.and_then(|c| c.inheritable().as_ref()));
        let spec_ambient = names(caps.and_then(|c| c.ambient().as_ref()));
        for name in bounding
            .iter()
            .chain(&spec_permitted)
            .chain(&inheritable)
            .chain(&spec_ambient)
        {
            Capability::from_str(name).map_err(|_| {
                ConfineError::refused(
                    "process.capabilities",
                    format!("{name} is not a capability this shim knows"),
                )
            })?;
        }
        // What execve of a file without file capabilities leaves (capabilities(7)).
        let (mut permitted, ambient) = if user.uid() == 0 {
            (
                bounding.union(&inheritable).cloned().collect(),
                BTreeSet::new(),
            )
        } else {
            let ambient: BTreeSet<String> = spec_ambient
                .intersection(&spec_permitted)
                .filter(|c| inheritable.contains(*c))
                .cloned()
                .collect();
            (ambient.clone(), ambient)
        };
        if no_new_privileges {
            // no_new_privs: an exec never gains what the process did not already permit.
            permitted = permitted.intersection(&spec_permitted).cloned().collect();
        }
        let rlimits = process
            .rlimits()
            .iter()
            .flatten()
            .map(|r| {
                let name = serde_json::to_value(r.typ())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                Rlimit {
                    name,
                    soft: r.soft(),
                    hard: r.hard(),
                }
            })
            .collect::<Vec<_>>();
        for r in &rlimits {
            if r.soft > r.hard {
                return Err(ConfineError::refused(
                    format!("process.rlimits[{}]", r.name),
                    format!("soft limit {} is above the hard limit {}", r.soft, r.hard),
                ));
            }
        }
        Ok(Identity {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(DEFAULT_UMASK),
            bounding,
            effective: permitted.clone(),
            permitted,
            inheritable,
            ambient,
            no_new_privileges,
            rlimits,
        })
    }

    /// Applies rlimits, umask, the bounding set, groups and user, then the other capability
    /// sets and `no_new_privs`. Runs as root with every capability, after the mounts.
    pub fn apply(&self) -> Result<(), ConfineError> {
        for limit in &self.rlimits {
            let resource = RLIMITS
                .iter()
                .find(|(name, _)| *name == limit.name)
                .map(|(_, r)| *r)
                .ok_or_else(|| {
                    ConfineError::refused("process.rlimits", format!("unknown {}", limit.name))
                })?;
            nix::sys::resource::setrlimit(resource, limit.soft, limit.hard).map_err(
                ConfineError::apply(format!(
                    "setting {} to {}/{}",
                    limit.name, limit.soft, limit.hard
                )),
            )?;
        }
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(self.umask));

        let bounding = cap_set(&self.bounding);
        // Only what the running kernel has: dropping a capability it does not know fails.
        let current = caps::read(None, CapSet::Bounding).map_err(caps_error("bounding"))?;
        for cap in current {
            if !bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(caps_error("bounding"))?;
            }
        }
        // Keep the permitted set across the uid change; the sets are set explicitly below.
        nix::sys::prctl::set_keepcaps(true).map_err(ConfineError::apply("PR_SET_KEEPCAPS"))?;
        let groups: Vec<Gid> = self
            .additional_gids
            .iter()
            .map(|&g| Gid::from_raw(g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(ConfineError::apply(format!(
            "setting supplementary groups {:?}",
            self.additional_gids
        )))?;
        let gid = Gid::from_raw(self.gid);
        nix::unistd::setresgid(gid, gid, gid)
            .map_err(ConfineError::apply(format!("setting gid {}", self.gid)))?;
        let uid = Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid)
            .map_err(ConfineError::apply(format!("setting uid {}", self.uid)))?;
        // Effective before permitted: the kernel wants effective ⊆ permitted at every step.
        caps::set(None, CapSet::Inheritable, &cap_set(&self.inheritable))
            .map_err(caps_error("inheritable"))?;
        caps::set(None, CapSet::Effective, &cap_set(&self.effective))
            .map_err(caps_error("effective"))?;
        caps::set(None, CapSet::Permitted, &cap_set(&self.permitted))
            .map_err(caps_error("permitted"))?;
        caps::clear(None, CapSet::Ambient).map_err(caps_error("ambient"))?;
        for cap in cap_set(&self.ambient) {
            caps::raise(None, CapSet::Ambient, cap).map_err(caps_error("ambient"))?;
        }
        nix::sys::prctl::set_keepcaps(false).map_err(ConfineError::apply("PR_SET_KEEPCAPS"))?;
        if self.no_new_privileges {
            nix::sys::prctl::set_no_new_privs()
                .map_err(ConfineError::apply("PR_SET_NO_NEW_PRIVS"))?;
        }
        Ok(())
    }
}

fn cap_set(names: &BTreeSet<String>) -> CapsHashSet {
    // Names were checked at create.
    names
        .iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .collect()
}

fn caps_error(set: &'static str) -> impl FnOnce(caps::errors::CapsError) -> ConfineError {
    move |e| ConfineError::Apply {
        step: format!("setting the {set} capability set"),
        source: std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(process: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": process
        }))
        .unwrap_or_else(|e| panic!("spec: {e}"))
    }

    #[test]
    fn end_sets_follow_exec_rules() {
        let caps = serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"]
        });
        let root = Identity::from_spec(&spec(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0}, "capabilities": caps,
            "noNewPrivileges": true, "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(root.effective.len(), 3);
        assert!(root.ambient.is_empty());
        assert_eq!(root.umask, DEFAULT_UMASK);
        assert_eq!(root.rlimits[0].name, "RLIMIT_NOFILE");

        let user = Identity::from_spec(&spec(serde_json::json!({
            "cwd": "/", "user": {"uid": 1000, "gid": 3000, "additionalGids": [4000], "umask": 63},
            "capabilities": caps
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            user.effective.iter().collect::<Vec<_>>(),
            ["CAP_NET_BIND_SERVICE"],
            "a non-root user keeps only its ambient capabilities"
        );
        assert_eq!(user.additional_gids, [4000]);
        assert_eq!(user.umask, 0o77);

        let no_caps = Identity::from_spec(&spec(serde_json::json!({
            "cwd": "/", "user": {"uid": 1000, "gid": 1000}
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(no_caps.effective.is_empty() && no_caps.bounding.is_empty());

        let bad = Identity::from_spec(&spec(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]
        })));
        assert!(bad.is_err_and(|e| e.to_string().contains("process.rlimits[RLIMIT_NOFILE]")));
    }
}
