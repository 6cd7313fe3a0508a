//! Spec fields the shim does not apply: each is refused or warned about, never ignored
//! silently. The README's table ("What the OCI spec gets") lists the same fields; what
//! [`super::namespaces`], [`super::mounts`], [`super::identity`], [`super::seccomp`], the cgroup
//! and the guest plan apply is not repeated here.

use oci_spec::runtime::{Capability, Spec};

use super::ConfineError;

/// Warnings for `spec`, or the first field that must be refused.
pub fn audit(spec: &Spec) -> Result<Vec<String>, ConfineError> {
    let mut warnings = Vec::new();
    let mut warn =
        |field: &str, reason: &str| warnings.push(format!("{field} is not applied: {reason}"));
    for (present, platform) in [
        (spec.windows().is_some(), "windows"),
        (spec.solaris().is_some(), "solaris"),
        (spec.vm().is_some(), "vm"),
        (spec.zos().is_some(), "zos"),
    ] {
        if present {
            return Err(ConfineError::refused(
                platform,
                "wasmcell runs Linux containers only",
            ));
        }
    }
    if spec.hooks().is_some() {
        warn(
            "hooks",
            "wasmcell runs no host programs for a container (CDI or NRI hooks need runc)",
        );
    }
    if let Some(process) = spec.process() {
        if process
            .apparmor_profile()
            .as_deref()
            .is_some_and(|p| !p.is_empty())
        {
            warn(
                "process.apparmorProfile",
                "wasmcell does not load AppArmor profiles; the guest is confined by namespaces, \
                 capabilities and seccomp",
            );
        }
        if process
            .selinux_label()
            .as_deref()
            .is_some_and(|l| !l.is_empty())
        {
            warn(
                "process.selinuxLabel",
                "wasmcell does not set SELinux labels",
            );
        }
        if process.io_priority().is_some() {
            warn("process.ioPriority", "not supported by wasmcell yet");
        }
        if process.scheduler().is_some() {
            warn("process.scheduler", "not supported by wasmcell yet");
        }
        if process.exec_cpu_affinity().is_some() {
            warn(
                "process.execCPUAffinity",
                "use linux.resources.cpu.cpus, which is applied",
            );
        }
    }
    let Some(linux) = spec.linux() else {
        return Ok(warnings);
    };
    if linux.uid_mappings().is_some() || linux.gid_mappings().is_some() {
        return Err(ConfineError::refused(
            "linux.uidMappings",
            "user namespaces (Kubernetes hostUsers: false) are not supported by wasmcell yet; run \
             the pod with hostUsers: true",
        ));
    }
    if linux.time_offsets().is_some() {
        return Err(ConfineError::refused(
            "linux.timeOffsets",
            "time namespaces are not supported by wasmcell",
        ));
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ConfineError::refused(
            "linux.netDevices",
            "moving host network devices into a container is not supported by wasmcell",
        ));
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        warn(
            "linux.devices",
            "wasm guests cannot use device nodes, so none are created",
        );
    }
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        warn("linux.mountLabel", "wasmcell does not set SELinux labels");
    }
    if linux.intel_rdt().is_some() {
        warn("linux.intelRdt", "not supported by wasmcell");
    }
    if linux.personality().is_some() {
        warn("linux.personality", "not supported by wasmcell");
    }
    if linux.memory_policy().is_some() {
        warn("linux.memoryPolicy", "not supported by wasmcell");
    }
    if let Some(resources) = linux.resources() {
        if resources.block_io().is_some() {
            warn("linux.resources.blockIO", "not supported by wasmcell yet");
        }
        if resources.network().is_some() {
            warn("linux.resources.network", "not supported by wasmcell");
        }
        if resources.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
            warn("linux.resources.rdma", "not supported by wasmcell");
        }
        if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            warn("linux.resources.unified", "not supported by wasmcell yet");
        }
        if let Some(memory) = resources.memory() {
            for (present, field) in [
                (memory.reservation().is_some(), "reservation"),
                (memory.kernel().is_some(), "kernel"),
                (memory.kernel_tcp().is_some(), "kernelTCP"),
                (memory.swappiness().is_some(), "swappiness"),
                (memory.disable_oom_killer().is_some(), "disableOOMKiller"),
            ] {
                if present {
                    warn(
                        &format!("linux.resources.memory.{field}"),
                        "only limit and swap are applied",
                    );
                }
            }
        }
        if let Some(cpu) = resources.cpu()
            && (cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some())
        {
            warn(
                "linux.resources.cpu.realtime*",
                "realtime scheduling is not supported by wasmcell",
            );
        }
    }
    Ok(warnings)
}

/// Whether `spec` is what `ctr run --privileged` and Kubernetes' `privileged: true` produce:
/// CAP_SYS_ADMIN in the bounding set and no masked paths. For a wasm guest this lifts only the
/// rule against bind mounts of procfs, sysfs and device nodes (see the README).
pub fn is_privileged(spec: &Spec) -> bool {
    let sys_admin = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&Capability::SysAdmin));
    let masks = spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|m| !m.is_empty());
    sys_admin && !masks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confine::test_spec as spec;

    #[test]
    fn unapplied_fields_are_warned_or_refused() {
        let warned = audit(&spec(serde_json::json!({
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "cri-containerd.apparmor.d"},
            "linux": {"devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229}],
                      "resources": {"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}}
        })))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            warned.len(),
            2,
            "hugepage limits are applied by the cgroup: {warned:?}"
        );
        assert!(warned[0].starts_with("process.apparmorProfile is not applied"));
        assert!(warned[1].starts_with("linux.devices is not applied"));

        let refused = audit(&spec(serde_json::json!({
            "linux": {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
        })));
        assert!(refused.is_err_and(|e| e.to_string().starts_with("linux.uidMappings:")));
    }

    #[test]
    fn privileged_means_sys_admin_and_no_masks() {
        let privileged = spec(serde_json::json!({
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
            "linux": {"maskedPaths": []}
        }));
        assert!(is_privileged(&privileged));
        let masked = spec(serde_json::json!({
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0},
                        "capabilities": {"bounding": ["CAP_SYS_ADMIN"]}},
            "linux": {"maskedPaths": ["/proc/kcore"]}
        }));
        assert!(!is_privileged(&masked));
    }
}
