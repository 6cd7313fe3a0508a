//! Which shim process serves a container, where its socket is, and the hand-over between a
//! shim that is leaving and a `start` that is choosing it. Shared by the front, which answers
//! `start` (spawning the core as a group's new server), and the core, whose own `start` forks
//! one when the front could not decide.
//!
//! Groups, from `group` in the shim config file (`$WASMCELL_CONFIG`, else
//! `/etc/wasmcell/config.toml`):
//! - `"pod"` (the default): a pod's containers (annotation `io.kubernetes.cri.sandbox-id`)
//!   share the pod's shim; a container outside any pod has a shim of its own. A shim's failure
//!   takes one pod down, as with runc.
//! - `"namespace"`: one shim serves every container of a containerd namespace. One shim
//!   process less per pod or container, and a shim's failure takes every container of the
//!   namespace down (their guests die with it). Without containers it stays three seconds
//!   before it leaves, for the next.
//!
//! The hand-over, needed only when containers come and go under one long-lived shim: `start`
//! holds the group's lock (`<socket>.lock`, an `flock`) while it leaves a claim for its container
//! (`<socket>.claims/<id>`) and checks whether the shim answers. A shim whose last container is
//! gone takes the same lock before it leaves; it stays while any claim younger than
//! [`CLAIM_TTL`] is left (its `create` is on its way), and otherwise removes its socket under the
//! lock, so a later `start` spawns a new shim instead of handing containerd to one that is
//! exiting. The lock is held until the leaving process is gone. A claim is settled once its
//! container is created (or its create failed). Lock files stay (one per namespace): removing
//! a lock file others may be waiting on would break the lock.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

/// The shim config file when `WASMCELL_CONFIG` is not set.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/wasmcell/config.toml";
/// Environment variable naming the shim config file.
pub const CONFIG_ENV: &str = "WASMCELL_CONFIG";
/// Annotation the CRI plugin puts on every container of a pod.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// Where containerd's shims put their sockets (`s/<hash>` below it).
const SOCKET_ROOT: &str = "/run/containerd";

/// The shim config file: `$WASMCELL_CONFIG`, else [`DEFAULT_CONFIG_FILE`].
pub fn config_file() -> PathBuf {
    std::env::var_os(CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE))
}

/// The environment variable `start` hands the serving process its grouping in.
pub const GROUP_ENV: &str = "WASMCELL_SHIM_GROUP";
/// The environment variable `start` sets to `1` for the server of a container outside any pod
/// under the default grouping: a server that will only ever serve that one container.
pub const LONE_ENV: &str = "WASMCELL_SHIM_LONE";

/// Whether this process is the server of a lone container ([`LONE_ENV`]).
pub fn serves_a_lone_container() -> bool {
    std::env::var_os(LONE_ENV).is_some_and(|v| v == "1")
}
/// How long a claim keeps a shim from leaving: far more than containerd takes from `start`
/// to `create`, and a claim whose create never came stops blocking after it.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

/// How containers are grouped into shim processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// A pod's containers share a shim; others have one each.
    #[default]
    Pod,
    /// Every container of a containerd namespace shares one shim.
    Namespace,
}

/// Why the grouping could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The shim config file exists but cannot be read.
    #[error("reading the wasmcell shim config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// It is not TOML, or `group` is not a known grouping.
    #[error("wasmcell shim config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Grouping {
    /// The name used in the config file and in [`GROUP_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Grouping::Pod => "pod",
            Grouping::Namespace => "namespace",
        }
    }

    fn parse(text: &str) -> Option<Grouping> {
        match text {
            "pod" => Some(Grouping::Pod),
            "namespace" => Some(Grouping::Namespace),
            _ => None,
        }
    }

    /// The grouping the shim config file asks for (the default when there is no file).
    pub fn configured() -> Result<Grouping, GroupError> {
        let path = config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Grouping::Pod),
            Err(source) => return Err(GroupError::Read { path, source }),
        };
        Grouping::from_toml(&text).map_err(|message| GroupError::Invalid { path, message })
    }

    fn from_toml(text: &str) -> Result<Grouping, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        match table.get("group") {
            None => Ok(Grouping::Pod),
            Some(toml::Value::String(name)) => Grouping::parse(name).ok_or_else(|| {
                format!("group = {name:?} is not a grouping (\"pod\" or \"namespace\")")
            }),
            Some(other) => Err(format!(
                "group must be the string \"pod\" or \"namespace\", not {} {}",
                if other.type_str() == "integer" {
                    "an"
                } else {
                    "a"
                },
                other.type_str()
            )),
        }
    }

    /// What the serving process was told by `start` ([`GROUP_ENV`]); `Pod` when unset.
    pub fn from_env() -> Grouping {
        std::env::var(GROUP_ENV)
            .ok()
            .and_then(|name| Grouping::parse(&name))
            .unwrap_or_default()
    }

    /// The group name of container `id` (its shim's socket is derived from it), and whether
    /// the container is alone in it (outside any pod, under [`Grouping::Pod`]).
    pub fn group_of(self, bundle: &Path, id: &str, namespace: &str) -> (String, bool) {
        match self {
            Grouping::Pod => match pod_of(bundle) {
                Some(pod) => (pod, false),
                None => (id.to_owned(), true),
            },
            Grouping::Namespace => (format!("wasmcell-namespace-{namespace}"), false),
        }
    }
}

/// The part of the bundle's `config.json` grouping needs.
#[derive(serde::Deserialize)]
struct SpecAnnotations {
    annotations: Option<std::collections::HashMap<String, String>>,
}

/// The pod (sandbox id) the container in `bundle` belongs to, if any.
fn pod_of(bundle: &Path) -> Option<String> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: SpecAnnotations = serde_json::from_slice(&bytes).ok()?;
    spec.annotations?
        .remove(SANDBOX_ID_ANNOTATION)
        .filter(|id| !id.is_empty())
}

/// The address of the shim serving `group` for the containerd at `containerd_address` in
/// `namespace`: `unix:///run/containerd/s/<sha256 of "address/namespace/group">`, the name
/// containerd's own shims use (a core test checks it against the `containerd-shim` crate).
pub fn socket_address(containerd_address: &str, namespace: &str, group: &str) -> String {
    let joined = Path::new(containerd_address).join(namespace).join(group);
    let digest = Sha256::digest(joined.as_os_str().as_encoded_bytes());
    let mut address = format!("unix://{SOCKET_ROOT}/s/");
    for byte in digest {
        let _ = write!(address, "{byte:02x}");
    }
    address
}

/// The socket path of `address` (`unix://PATH` or a path).
pub fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// The arguments (after `argv[0]`) of the server for `socket`: containerd's shim flags, as an
/// exec'd server parses them.
pub fn server_args(
    namespace: &str,
    id: &str,
    containerd_address: &str,
    socket: &str,
    debug: bool,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "-namespace",
        namespace,
        "-id",
        id,
        "-address",
        containerd_address,
        "-socket",
        socket,
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    if debug {
        args.push("-debug".into());
    }
    args
}

/// Whether a shim answers at `address`.
pub fn is_served(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(address)).is_ok()
}

/// Where a `start` puts its container: the address of its group's shim, whether that shim
/// already serves, and (under `group = "namespace"`) the group's lock, held from before the
/// claim until this value is dropped — after `start` has answered, or forked the new shim.
#[derive(Debug)]
pub struct StartPlace {
    /// The address to answer containerd with.
    pub address: String,
    /// Whether a shim answers at it; if not, the caller must start one.
    pub served: bool,
    /// Whether the container is outside any pod under [`Grouping::Pod`]: a server started for
    /// it serves it alone (the caller sets [`LONE_ENV`] for that server).
    pub lone: bool,
    _lock: Option<HandoverLock>,
}

impl StartPlace {
    /// Finds the place of container `id` of `namespace` (bundle `bundle`) of the containerd at
    /// `containerd_address`. Under `group = "namespace"` a shared shim may be leaving: the
    /// container is claimed under the group's lock first, so that shim either stays for its
    /// create or is gone (its socket removed) before the check.
    pub fn find(
        grouping: Grouping,
        bundle: &Path,
        namespace: &str,
        id: &str,
        containerd_address: &str,
    ) -> std::io::Result<StartPlace> {
        let (group, lone) = grouping.group_of(bundle, id, namespace);
        let address = socket_address(containerd_address, namespace, &group);
        let lock = match grouping {
            Grouping::Pod => None,
            Grouping::Namespace => {
                let handover = Handover::for_address(&address);
                let lock = handover.lock()?;
                handover.claim(&lock, id)?;
                Some(lock)
            }
        };
        let served = is_served(&address);
        Ok(StartPlace {
            address,
            served,
            lone,
            _lock: lock,
        })
    }

    /// Writes the bundle's `address` file, as containerd's shims do, and the address to
    /// `out` (containerd reads `start`'s stdout).
    pub fn answer(&self, bundle: &Path, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        std::fs::write(bundle.join("address"), &self.address)?;
        out.write_all(self.address.as_bytes())?;
        out.flush()
    }
}

/// The hand-over files of one shim socket.
#[derive(Debug, Clone)]
pub struct Handover {
    lock: PathBuf,
    claims: PathBuf,
    socket: PathBuf,
}

/// The group's lock, held; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct HandoverLock(#[allow(dead_code)] File);

impl Handover {
    /// The hand-over of the shim listening on `address` (`unix://PATH` or a path).
    pub fn for_address(address: &str) -> Handover {
        let socket = socket_path(address).to_path_buf();
        let mut lock = socket.clone().into_os_string();
        lock.push(".lock");
        let mut claims = socket.clone().into_os_string();
        claims.push(".claims");
        Handover {
            lock: lock.into(),
            claims: claims.into(),
            socket,
        }
    }

    /// Waits for the group's lock.
    pub fn lock(&self) -> std::io::Result<HandoverLock> {
        if let Some(dir) = self.lock.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)?;
        // Retried on EINTR: a signal while waiting is not a reason to start without the lock.
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(HandoverLock(file)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Leaves a claim for container `id` (under the lock).
    pub fn claim(&self, _lock: &HandoverLock, id: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.claims)?;
        File::create(self.claims.join(claim_name(id)))?;
        Ok(())
    }

    /// Settles the claim of container `id`: its create is over.
    pub fn settle(&self, id: &str) {
        let _ = std::fs::remove_file(self.claims.join(claim_name(id)));
    }

    /// How long to wait before asking again, if a claim younger than [`CLAIM_TTL`] is
    /// pending (under the lock): a container is on its way. Older claims are removed.
    pub fn claim_pending(&self, _lock: &HandoverLock) -> Option<Duration> {
        let entries = std::fs::read_dir(&self.claims).ok()?;
        let now = SystemTime::now();
        let mut newest = None;
        for entry in entries.flatten() {
            let made = entry.metadata().and_then(|m| m.modified()).ok();
            match made {
                Some(made) if now.duration_since(made).unwrap_or_default() < CLAIM_TTL => {
                    newest = newest.max(Some(made));
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let age = now.duration_since(newest?).unwrap_or_default();
        Some(CLAIM_TTL.saturating_sub(age) + Duration::from_millis(100))
    }

    /// The shim leaves (under the lock, with no container and no claim): its socket goes, so
    /// the next `start` spawns a new shim. Keep the lock until the process exits.
    pub fn retire(&self, _lock: &HandoverLock) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.claims);
    }
}

/// A claim's file name: container ids are containerd's (`[A-Za-z0-9_.-]`), but nothing here
/// trusts that.
fn claim_name(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_comes_from_the_group_key() {
        assert_eq!(Grouping::from_toml(""), Ok(Grouping::Pod));
        assert_eq!(
            Grouping::from_toml("deny = [\"wasi:sockets/*\"]\n"),
            Ok(Grouping::Pod)
        );
        assert_eq!(
            Grouping::from_toml("group = \"namespace\"\n"),
            Ok(Grouping::Namespace)
        );
        assert_eq!(Grouping::from_toml("group = \"pod\"\n"), Ok(Grouping::Pod));
        let err = Grouping::from_toml("group = \"node\"\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("\"node\" is not a grouping"), "{err}");
        let err = Grouping::from_toml("group = 3\n").err().unwrap_or_default();
        assert!(err.contains("not an integer"), "{err}");
        assert!(Grouping::from_toml("group = ").is_err());
    }

    #[test]
    fn only_a_container_outside_any_pod_is_alone_in_its_group()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let write_spec = |annotations: serde_json::Value| {
            std::fs::write(
                dir.path().join("config.json"),
                serde_json::json!({ "ociVersion": "1.0.2", "annotations": annotations })
                    .to_string(),
            )
        };
        write_spec(serde_json::json!({}))?;
        assert_eq!(
            Grouping::Pod.group_of(dir.path(), "c1", "ns"),
            ("c1".to_owned(), true)
        );
        assert_eq!(
            Grouping::Namespace.group_of(dir.path(), "c1", "ns"),
            ("wasmcell-namespace-ns".to_owned(), false)
        );
        write_spec(serde_json::json!({ SANDBOX_ID_ANNOTATION: "pod-1" }))?;
        assert_eq!(
            Grouping::Pod.group_of(dir.path(), "c1", "ns"),
            ("pod-1".to_owned(), false)
        );
        // The sandbox itself carries its own id: it is its pod's first container, not alone.
        assert_eq!(
            Grouping::Pod.group_of(dir.path(), "pod-1", "ns"),
            ("pod-1".to_owned(), false)
        );
        Ok(())
    }

    #[test]
    fn a_claim_keeps_the_shim_until_it_is_settled() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("s");
        std::fs::write(&socket, "")?;
        let handover = Handover::for_address(&format!("unix://{}", socket.display()));
        {
            let lock = handover.lock()?;
            handover.claim(&lock, "c/1")?;
        }
        let lock = handover.lock()?;
        let wait = handover.claim_pending(&lock);
        assert!(
            wait.is_some_and(|w| w > Duration::from_secs(29)),
            "{wait:?}"
        );
        handover.settle("c/1");
        assert_eq!(handover.claim_pending(&lock), None);
        handover.retire(&lock);
        assert!(!socket.exists(), "the leaving shim removes its socket");
        Ok(())
    }

    #[test]
    fn a_leaving_shim_holds_the_lock_until_it_is_gone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let handover = Handover::for_address(&dir.path().join("s").display().to_string());
        let held = handover.lock()?;
        let file = OpenOptions::new().write(true).open(&handover.lock)?;
        assert!(
            flock(&file, FlockOperation::NonBlockingLockExclusive).is_err(),
            "a start must wait for the leaving shim"
        );
        drop(held);
        let file = OpenOptions::new().write(true).open(&handover.lock)?;
        assert!(flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok());
        Ok(())
    }

    #[test]
    fn stale_claims_do_not_keep_a_shim() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let handover = Handover::for_address(&dir.path().join("s").display().to_string());
        {
            let lock = handover.lock()?;
            handover.claim(&lock, "old")?;
        }
        let old = File::options()
            .write(true)
            .open(handover.claims.join("old"))?;
        old.set_modified(SystemTime::now() - CLAIM_TTL - Duration::from_secs(1))?;
        let lock = handover.lock()?;
        assert_eq!(handover.claim_pending(&lock), None);
        assert!(!handover.claims.join("old").exists());
        Ok(())
    }
}
