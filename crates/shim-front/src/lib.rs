//! What `containerd-shim-wasmcell-v1` (the front) and the shim core share: which shim serves
//! a container ([`group`]), which files and mounts a create leaves in the bundle, where the
//! container's cgroup is, and the `delete` answer containerd expects.
//!
//! Why a front at all: containerd execs the shim binary for `start` before every container and
//! with `delete` after every shim disconnects, also after a clean exit, when there is nothing
//! left to undo. The core links wasmtime and glibc, whose loader start-up (mostly `cpuid` traps
//! on a VM) costs about a millisecond per exec; the front is small and static. It answers
//! `start` itself — with the shim already serving the container's group (a pod's containers
//! after its sandbox, every container under `group = "namespace"`), or after having the
//! [`starter`] fork that group's server (or, with none running, spawning the core as the
//! server, its one glibc start-up) — and that common `delete`, and execs the
//! core for everything else: a `delete` that finds a cgroup to empty, a `start` it cannot
//! decide.

pub mod group;
pub mod starter;
pub mod writable_layer;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// File name of the guest plan in the bundle (written by the core at create).
pub const PLAN_FILE: &str = "wasmcell-plan.json";
/// File name of a wasm layer copied out of the content store into the bundle.
pub const PROGRAM_FILE: &str = "wasmcell-program.wasm";
/// File name of the shim core, installed next to the front.
pub const CORE_BINARY: &str = "containerd-shim-wasmcell-v1-core";
/// Exit status `delete` reports for a task whose shim is gone: killed (128 + SIGKILL), as
/// containerd's own shims report.
pub const DELETE_EXIT_STATUS: u32 = 137;

/// The flags containerd passes a shim binary (Go `flag` syntax) and the action after them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShimInvocation {
    /// `-bundle`, if given.
    pub bundle: Option<PathBuf>,
    /// `-namespace` (empty if not given).
    pub namespace: String,
    /// `-id` (empty if not given).
    pub id: String,
    /// `-address`: containerd's socket (empty if not given).
    pub address: String,
    /// `-debug`.
    pub debug: bool,
    /// The first argument after the flags (`start`, `delete`), if any.
    pub action: Option<String>,
}

/// Flags of containerd's shim protocol that take no value.
const BOOL_FLAGS: [&str; 3] = ["debug", "info", "v"];
/// Flags of containerd's shim protocol that take a value.
const VALUE_FLAGS: [&str; 6] = [
    "namespace",
    "id",
    "socket",
    "address",
    "publish-binary",
    "bundle",
];

impl ShimInvocation {
    /// Parses `args` (without the program name) as Go's `flag` package does; `None` for
    /// anything it does not know (an unknown flag, a missing value, non-UTF-8), which the
    /// front leaves to the core.
    pub fn parse(args: &[OsString]) -> Option<Self> {
        let mut parsed = ShimInvocation::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let arg = arg.to_str()?;
            if arg == "--" {
                parsed.action = rest.next().and_then(|a| a.to_str().map(str::to_owned));
                return Some(parsed);
            }
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                parsed.action = Some(arg.to_owned());
                return Some(parsed);
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (flag, None),
            };
            if BOOL_FLAGS.contains(&name) {
                if name != "debug" {
                    // `-info`, `-v`: not a `start` or `delete`; the core answers them.
                    return None;
                }
                parsed.debug = inline.is_none_or(|value| value != "false");
            } else if VALUE_FLAGS.contains(&name) {
                let value = match inline {
                    Some(value) => value.to_owned(),
                    None => rest.next()?.to_str()?.to_owned(),
                };
                match name {
                    "bundle" if !value.is_empty() => parsed.bundle = Some(PathBuf::from(value)),
                    "namespace" => parsed.namespace = value,
                    "id" => parsed.id = value,
                    "address" => parsed.address = value,
                    _ => {}
                }
            } else {
                return None;
            }
        }
        Some(parsed)
    }
}

/// The part of the bundle's `config.json` a cleanup needs.
#[derive(serde::Deserialize)]
struct SpecCgroup {
    linux: Option<LinuxCgroup>,
}

#[derive(serde::Deserialize)]
struct LinuxCgroup {
    #[serde(rename = "cgroupsPath")]
    cgroups_path: Option<String>,
}

/// The spec's `linux.cgroupsPath` in `bundle/config.json`; `None` if it has none or the file
/// cannot be read as a spec.
pub fn spec_cgroups_path(bundle: &Path) -> Option<String> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: SpecCgroup = serde_json::from_slice(&bytes).ok()?;
    spec.linux?.cgroups_path.filter(|p| !p.is_empty())
}

/// `slice:prefix:name` (systemd driver) → `/slice/prefix-name.scope`; others unchanged.
pub fn normalize_cgroup_path(spec_path: &str) -> String {
    let parts: Vec<&str> = spec_path.split(':').collect();
    match parts.as_slice() {
        [slice, prefix, name] if !spec_path.starts_with('/') => {
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            format!("/{slice}/{prefix}-{name}.scope")
        }
        _ => spec_path.to_owned(),
    }
}

/// Whether the cgroup for the spec's `cgroupsPath` exists under `root` (v2's unified tree, or
/// any of v1's controllers), checked without creating anything.
pub fn cgroup_exists_under(root: &Path, spec_path: &str) -> bool {
    let relative = normalize_cgroup_path(spec_path)
        .trim_start_matches('/')
        .to_owned();
    if root.join("cgroup.controllers").exists() {
        return root.join(&relative).exists();
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|controller| controller.path().join(&relative).is_dir())
}

/// [`cgroup_exists_under`] the host's `/sys/fs/cgroup`.
pub fn cgroup_exists(spec_path: &str) -> bool {
    cgroup_exists_under(Path::new("/sys/fs/cgroup"), spec_path)
}

/// The spec's cgroup path, if that cgroup still exists: a container whose shim left without
/// deleting it, which only the core empties and removes.
pub fn leftover_cgroup(bundle: &Path) -> Option<String> {
    spec_cgroups_path(bundle).filter(|path| cgroup_exists(path))
}

/// Undoes what a create leaves in `bundle` that needs no cgroup work, once no guest is left
/// ([`leftover_cgroup`] is `None`, or the core emptied it): detaches a rootfs mount, settles
/// its writable layer if it was mounted `volatile` ([`writable_layer`]), and removes the plan
/// and program files. Returns what settling the layer failed with (the rest is best effort).
pub fn remove_bundle_leftovers(bundle: &Path) -> Result<(), writable_layer::WritableLayerError> {
    let rootfs = bundle.join("rootfs");
    let mut settled = Ok(());
    // Only an overlay (a filesystem of its own) can have a writable layer: after a clean delete
    // that is two `stat`s, and the mount table is not read.
    let layer = on_another_filesystem(&rootfs)
        .then(|| std::fs::read_to_string("/proc/self/mountinfo").ok())
        .flatten()
        .and_then(|table| writable_layer::volatile_layer_at(&table, &rootfs));
    // Tried whatever it is (a bind of the same filesystem too); not mounted: EINVAL.
    if rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH).is_ok()
        && let Some(layer) = layer
    {
        settled = layer.settle().map(|_| ());
    }
    let _ = std::fs::remove_file(bundle.join(PLAN_FILE));
    let _ = std::fs::remove_file(bundle.join(PROGRAM_FILE));
    settled
}

/// Whether `path` is on another device than its parent: the root of a mount of another
/// filesystem (an overlay is; a bind mount of the same filesystem is not).
fn on_another_filesystem(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    match (rustix::fs::stat(path), rustix::fs::stat(parent)) {
        (Ok(inner), Ok(outer)) => inner.st_dev != outer.st_dev,
        _ => false,
    }
}

/// containerd's `containerd.task.v2.DeleteResponse`, the fields `delete` sets.
#[derive(Clone, PartialEq, prost::Message)]
struct DeleteResponse {
    #[prost(uint32, tag = "1")]
    pid: u32,
    #[prost(uint32, tag = "2")]
    exit_status: u32,
    #[prost(message, optional, tag = "3")]
    exited_at: Option<Timestamp>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The encoded answer to `delete`: the task was killed ([`DELETE_EXIT_STATUS`]) at `now`.
pub fn delete_response(now: std::time::SystemTime) -> Vec<u8> {
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost::Message::encode_to_vec(&DeleteResponse {
        pid: 0,
        exit_status: DELETE_EXIT_STATUS,
        exited_at: Some(Timestamp {
            seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn containerd_delete_flags_are_understood() {
        let parsed = ShimInvocation::parse(&args(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-bundle=/run/b",
            "-debug",
            "delete",
        ]));
        assert_eq!(
            parsed,
            Some(ShimInvocation {
                bundle: Some(PathBuf::from("/run/b")),
                namespace: "default".to_owned(),
                id: "c1".to_owned(),
                address: "/run/containerd/containerd.sock".to_owned(),
                debug: true,
                action: Some("delete".to_owned()),
            })
        );
    }

    #[test]
    fn unknown_flags_and_info_are_left_to_the_core() {
        assert_eq!(ShimInvocation::parse(&args(&["-info"])), None);
        assert_eq!(ShimInvocation::parse(&args(&["-v"])), None);
        assert_eq!(
            ShimInvocation::parse(&args(&["-new-flag", "x", "delete"])),
            None
        );
        assert_eq!(
            ShimInvocation::parse(&args(&["-id"])),
            None,
            "value missing"
        );
    }

    #[test]
    fn systemd_paths_become_scopes() {
        assert_eq!(normalize_cgroup_path("/default/c1"), "/default/c1");
        assert_eq!(
            normalize_cgroup_path("system.slice:cri-containerd:abc"),
            "/system.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            normalize_cgroup_path(":cri-containerd:abc"),
            "/system.slice/cri-containerd-abc.scope"
        );
    }

    #[test]
    fn a_bundle_is_cleaned_and_its_cgroup_found() -> Result<(), Box<dyn std::error::Error>> {
        let bundle = tempfile::tempdir()?;
        let cgroups = tempfile::tempdir()?;
        std::fs::write(cgroups.path().join("cgroup.controllers"), "cpu memory")?;
        std::fs::create_dir_all(cgroups.path().join("ns/c1"))?;
        std::fs::write(
            bundle.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"/ns/c1"}}"#,
        )?;
        std::fs::write(bundle.path().join(PLAN_FILE), "{}")?;
        std::fs::write(bundle.path().join(PROGRAM_FILE), "\0asm")?;
        let path = spec_cgroups_path(bundle.path());
        assert_eq!(path.as_deref(), Some("/ns/c1"));
        assert!(cgroup_exists_under(cgroups.path(), "/ns/c1"));
        assert!(!cgroup_exists_under(cgroups.path(), "/ns/c2"));
        let _ = remove_bundle_leftovers(bundle.path());
        assert!(!bundle.path().join(PLAN_FILE).exists());
        assert!(!bundle.path().join(PROGRAM_FILE).exists());
        assert!(bundle.path().join("config.json").exists(), "the spec stays");
        Ok(())
    }

    #[test]
    fn a_missing_or_broken_spec_has_no_cgroup() -> Result<(), Box<dyn std::error::Error>> {
        let bundle = tempfile::tempdir()?;
        assert_eq!(spec_cgroups_path(bundle.path()), None);
        std::fs::write(bundle.path().join("config.json"), "{not json")?;
        assert_eq!(spec_cgroups_path(bundle.path()), None);
        std::fs::write(bundle.path().join("config.json"), r#"{"linux":{}}"#)?;
        assert_eq!(spec_cgroups_path(bundle.path()), None);
        Ok(())
    }
}
