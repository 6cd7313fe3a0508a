//! The shim process itself: containerd's `start` and `delete` actions, and the long-running
//! server that hosts the task service.
//!
//! `start` groups containers: a Kubernetes pod's containers (annotation
//! `io.kubernetes.cri.sandbox-id`) share one shim; other containers get one each.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, Shim, spawn};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};
use log::warn;
use oci_spec::runtime::Spec;

use crate::cgroup::ContainerCgroup;
use crate::service::{Service, ServiceConfig};

/// containerd's runtime type for this shim.
pub const RUNTIME_ID: &str = "io.containerd.wasmcell.v1";
/// Annotation the CRI plugin puts on every container of a pod.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// Where compiled code is cached unless `WASMCELL_CACHE_DIR` says otherwise. Entries are keyed
/// by content and engine fingerprint and verified before use, so one cache can serve every
/// containerd on the host.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/wasmcell";

/// The shim.
pub struct WasmcellShim {
    namespace: String,
    address: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("WASMCELL_CACHE_DIR") {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from(DEFAULT_CACHE_DIR)),
    }
}

fn grouping(bundle: &Path, id: &str) -> String {
    Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|spec| spec.annotations().clone())
        .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
        .unwrap_or_else(|| id.to_owned())
}

#[async_trait]
impl Shim for WasmcellShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        WasmcellShim {
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let group = grouping(&self.bundle, &opts.id);
        spawn(opts, &group, Vec::new()).await
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // containerd calls this when the shim is gone: undo what create did for this bundle.
        let rootfs = self.bundle.join("rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        if let Ok(spec) = Spec::load(self.bundle.join("config.json"))
            && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
            && let Ok(cgroup) = ContainerCgroup::create(&path.display().to_string(), None)
            && let Err(e) = cgroup.delete()
        {
            warn!("{e}");
        }
        let _ = std::fs::remove_file(self.bundle.join(crate::plan::PLAN_FILE));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut exited_at =
            containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp::new();
        exited_at.seconds = now.as_secs() as i64;
        Ok(DeleteResponse {
            exit_status: 137,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let config = ServiceConfig {
            namespace: self.namespace.clone(),
            address: self.address.clone(),
            cache_dir: cache_dir(),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        };
        Service::new(publisher, config, self.exit.clone()).await
    }
}
