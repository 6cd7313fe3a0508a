//! The task service containerd talks to: create, start, wait, kill, delete, state, pids,
//! stats, connect, shutdown, close_io. Everything else answers "not supported by wasmcell".
//!
//! Exits come from the shim framework's reaper (it reaps every child and reports 128+N for
//! signals) through one subscription; they are matched to containers by pid, recorded, and
//! published as `/tasks/exit`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::asynchronous::monitor::{monitor_subscribe, monitor_unsubscribe};
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::{TtrpcContext, TtrpcResult};
use log::{debug, info, warn};
use oci_spec::runtime::Spec;
use tokio::sync::{Mutex, watch};

use crate::cgroup::ContainerCgroup;
use crate::container::{Container, Exit, Status};
use crate::content::{ContentError, DeclaredConfig, image_of_container, resolve_wasm_image};
use wasmcell_engine::host::SignaturePolicy;
use wasmcell_engine::{Policy, host};

use crate::events::{EventPublisher, TaskEvent};
use crate::network_pool;
use crate::plan::{GuestPlan, PLAN_FILE, PROGRAM_FILE, PlanError, ProgramSource};
use crate::policy;
use crate::process::{Launched, Spawner, fork_exec_guest, launch_by_zygote};
use crate::rootfs_mount::MountedRootfs;
use crate::shim;
use crate::signatures;
use crate::stdio::{OutputDrain, StdinRelay, open_stdio};

/// What `create` produced before the container is recorded.
struct PreparedContainer {
    cgroup: Option<ContainerCgroup>,
    prepared: crate::process::PreparedGuest,
    stdin_relay: Option<StdinRelay>,
    output: Option<OutputDrain>,
    used_network: Option<OwnedFd>,
}

/// Settings every container of this shim shares.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// containerd namespace.
    pub namespace: String,
    /// containerd's gRPC socket (for the content store).
    pub address: String,
    /// Compile cache directory handed to guests.
    pub cache_dir: Option<PathBuf>,
    /// This binary, exec'd for guests.
    pub exe: PathBuf,
    /// For a shim shared by a whole namespace, how it leaves without stranding a `start`
    /// ([`crate::group`]); `None` for pod and single-container shims.
    pub handover: Option<crate::group::Handover>,
    /// Forks guests without an exec ([`crate::zygote`]); `None`: every guest is exec'd.
    pub zygote: Option<Arc<crate::zygote::Zygote>>,
    /// The starter's pool of used network namespaces ([`crate::network_pool`]), where one
    /// may be serving.
    pub network_pool: Option<PathBuf>,
}

/// The task service.
#[derive(Clone)]
pub struct Service {
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// Exits seen for pids no container has claimed yet (the guest can exit before `create`
    /// records its pid).
    unclaimed_exits: Arc<Mutex<HashMap<u32, Exit>>>,
    publisher: Arc<EventPublisher>,
    config: Arc<ServiceConfig>,
    exit_signal: Arc<ExitSignal>,
    /// cgroup removals still retrying in the background; the shim outlives them.
    pending_cleanups: Arc<AtomicUsize>,
    /// Forks every guest (see [`Spawner`]).
    spawner: Arc<Spawner>,
    /// Serialises hand-over attempts; `true` once this shim has retired (it holds the group's
    /// lock until it exits, so a second attempt would wait on itself forever).
    retired: Arc<Mutex<bool>>,
    /// Its subscription to the exit monitor, a process-wide one that outlives the service in
    /// a spare server ([`crate::spare`]).
    exit_subscription: Arc<std::sync::OnceLock<i64>>,
}

/// How often a namespace's idle shim looks again while a claimed container is on its way.
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// How long a namespace's shim stays without containers before it leaves (a pod's leaves at
/// once: its pod is gone). Measured: 100 short tasks, 2 at a time, started 29 shims without it.
const NAMESPACE_SHIM_LINGER: Duration = Duration::from_secs(3);

fn rpc_error(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn not_supported(what: &str) -> ttrpc::Error {
    rpc_error(
        Code::UNIMPLEMENTED,
        format!("{what} is not supported by wasmcell: a wasm container runs exactly one guest"),
    )
}

/// Requests naming an exec process are refused: wasmcell runs one guest per container.
fn refuse_exec(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(not_supported("exec"))
    }
}

fn not_found(id: &str) -> ttrpc::Error {
    rpc_error(
        Code::NOT_FOUND,
        format!("container {id} not found in this shim"),
    )
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since.as_secs() as i64;
    ts.nanos = since.subsec_nanos() as i32;
    ts
}

impl Service {
    fn settle_claim(&self, id: &str) {
        if let Some(handover) = &self.config.handover {
            handover.settle(id);
        }
    }

    /// Exits if no container is left (a pod's next container may have arrived meanwhile);
    /// a namespace's shim looks under the group's hand-over lock and stays while a `start` has
    /// claimed it for a container still to come ([`crate::group`]).
    async fn leave_if_idle(&self) {
        let Some(handover) = self.config.handover.clone() else {
            if self.containers.lock().await.is_empty() {
                debug!("shutting down: no containers left");
                self.exit_signal.signal();
            }
            return;
        };
        let mut retired = self.retired.lock().await;
        if *retired || !self.containers.lock().await.is_empty() {
            return;
        }
        // A namespace's containers come and go: idle, the shim lingers before it leaves, so a
        // stream of short tasks keeps one shim instead of starting a new one in every gap.
        tokio::time::sleep(NAMESPACE_SHIM_LINGER).await;
        loop {
            if *retired || !self.containers.lock().await.is_empty() {
                return;
            }
            let locking = handover.clone();
            let lock = match tokio::task::spawn_blocking(move || locking.lock()).await {
                Ok(Ok(lock)) => lock,
                Ok(Err(e)) => {
                    warn!("cannot take the shim hand-over lock, so the shim stays: {e}");
                    return;
                }
                Err(e) => {
                    warn!("the shim hand-over failed, so the shim stays: {e}");
                    return;
                }
            };
            // Every create follows a claim made under this lock, and its claim is settled only
            // once its container is counted: so, claims first, then the containers.
            match handover.claim_pending(&lock) {
                Some(wait) => {
                    drop(lock);
                    // Asked again soon rather than when the claim expires: once its container
                    // is counted this loop ends, and that container's own shutdown asks anew.
                    // (Sleeping the whole wait held `retired` and kept an idle shim for up to
                    // CLAIM_TTL after its last container.)
                    let wait = wait.min(CLAIM_POLL);
                    debug!("a container is on its way; asking again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                None if !self.containers.lock().await.is_empty() => return,
                None => {
                    handover.retire(&lock);
                    debug!("shutting down: no containers left, none on their way");
                    // Held until the process exits: a start waits until we are gone.
                    std::mem::forget(lock);
                    *retired = true;
                    self.exit_signal.signal();
                    return;
                }
            }
        }
    }

    /// A service publishing through `publisher`; starts the exit monitor.
    pub async fn new(
        publisher: EventPublisher,
        config: ServiceConfig,
        exit_signal: Arc<ExitSignal>,
    ) -> Service {
        let service = Service {
            containers: Arc::default(),
            unclaimed_exits: Arc::default(),
            publisher: Arc::new(publisher),
            config: Arc::new(config),
            exit_signal,
            pending_cleanups: Arc::default(),
            spawner: Arc::default(),
            retired: Arc::default(),
            exit_subscription: Arc::default(),
        };
        match monitor_subscribe(Topic::Pid).await {
            Ok(mut subscription) => {
                let _ = service.exit_subscription.set(subscription.id);
                let monitor = service.clone();
                tokio::spawn(async move {
                    while let Some(event) = subscription.rx.recv().await {
                        if let Subject::Pid(pid) = event.subject {
                            monitor.on_exit(pid as u32, event.exit_code as u32).await;
                        }
                    }
                });
            }
            Err(e) => warn!("cannot watch guest exits: {e}"),
        }
        service
    }

    /// Once it has shut down: stops the exit monitor sending it exits.
    pub async fn stop_watching_exits(&self) {
        if let Some(&id) = self.exit_subscription.get()
            && let Err(e) = monitor_unsubscribe(id).await
        {
            warn!("leaving the exit monitor: {e}");
        }
    }

    async fn on_exit(&self, pid: u32, code: u32) {
        let exit = Exit {
            code,
            at: SystemTime::now(),
        };
        let mut containers = self.containers.lock().await;
        let Some(container) = containers.values_mut().find(|c| c.pid == pid) else {
            self.unclaimed_exits.lock().await.insert(pid, exit);
            return;
        };
        // Output still in the FIFOs would be lost if the client closed them on the exit
        // event; the usual case (nothing pending) costs one ioctl and records at once.
        match container.output.take() {
            Some(output) if output.pending() > 0 => {
                let id = container.id.clone();
                drop(containers);
                let service = self.clone();
                tokio::spawn(async move {
                    let left = tokio::task::spawn_blocking(move || {
                        output.wait(OutputDrain::STALL, OutputDrain::LIMIT)
                    })
                    .await
                    .unwrap_or(0);
                    if left > 0 {
                        warn!("container {id} exited with {left} bytes of output nobody read");
                    }
                    let mut containers = service.containers.lock().await;
                    if let Some(container) = containers.values_mut().find(|c| c.pid == pid) {
                        service.record_exit(container, exit).await;
                    }
                });
            }
            _ => self.record_exit(container, exit).await,
        }
    }

    async fn record_exit(&self, container: &mut Container, exit: Exit) {
        if container.exited().is_some() {
            return;
        }
        debug!(
            "container {} exited with status {}",
            container.id, exit.code
        );
        container.status = Status::Stopped;
        container.prepared = None;
        // Reaped: its PID namespace, and so its network namespace, is empty.
        if let (Some(used), Some(pool)) = (
            container.used_network.take(),
            self.config.network_pool.as_deref(),
        ) {
            network_pool::give_back(pool, used);
        }
        container.exit.send_replace(Some(exit));
        let event = TaskExit {
            container_id: container.id.clone(),
            id: container.id.clone(),
            pid: container.pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, event).await;
    }

    async fn publish<E: TaskEvent>(&self, topic: &str, event: E) {
        if let Err(e) = self
            .publisher
            .publish(topic, &self.config.namespace, event)
            .await
        {
            warn!("publishing {topic}: {e}");
        }
    }

    async fn create_container(&self, req: &api::CreateTaskRequest) -> Result<Container, String> {
        if req.terminal {
            return Err(
                "terminals are not supported by wasmcell (ctr run -t): WASI guests have no \
                        tty; run without -t"
                    .to_owned(),
            );
        }
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err("checkpoint/restore is not supported by wasmcell".to_owned());
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = Spec::load(bundle.join("config.json"))
            .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
        let rootfs = bundle.join("rootfs");
        let policy = policy::resolve(req.options.as_ref()).map_err(|e| e.to_string())?;
        let mounted = MountedRootfs::mount(&req.rootfs, &rootfs, !policy.sync_rootfs).await?;
        let result = self
            .prepare_guest(req, &bundle, &rootfs, &spec, &policy)
            .await;
        match result {
            Ok(PreparedContainer {
                cgroup,
                prepared,
                stdin_relay,
                output,
                used_network,
            }) => Ok(Container {
                id: req.id.clone(),
                bundle,
                pid: prepared.pid,
                stdin_relay,
                output,
                status: Status::Created,
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                cgroup,
                rootfs: mounted,
                used_network,
                prepared: Some(prepared),
                exit: watch::channel(None).0,
            }),
            Err(message) => {
                if let Some(mounted) = mounted {
                    mounted.unmount().await;
                }
                Err(message)
            }
        }
    }

    async fn prepare_guest(
        &self,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        rootfs: &Path,
        spec: &Spec,
        policy: &Policy,
    ) -> Result<PreparedContainer, String> {
        if let Some(required) = &policy.require_signature
            && !shim::is_sandbox(spec)
        {
            self.check_signature(&req.id, required, &policy.source)
                .await?;
        }
        let mut plan = self.plan(req, bundle, rootfs, spec, policy).await?;
        if plan.may_share_a_used_network() {
            plan.network_pool = self.config.network_pool.clone();
        }
        let plan_path = bundle.join(PLAN_FILE);
        let plan_json = serde_json::to_vec(&plan).map_err(|e| e.to_string())?;
        std::fs::write(&plan_path, plan_json)
            .map_err(|e| format!("writing {}: {e}", plan_path.display()))?;

        let linux = spec.linux().as_ref();
        let cgroup = match linux.and_then(|l| l.cgroups_path().as_ref()) {
            Some(path) => Some(
                ContainerCgroup::create(
                    &path.display().to_string(),
                    linux.and_then(|l| l.resources().as_ref()),
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let (stdio, stdin_relay) = open_stdio(&req.stdin, &req.stdout, &req.stderr)?;
        let output = OutputDrain::open(&req.stdout, &req.stderr);
        let exe = self.config.exe.clone();
        let network = plan.network.clone();
        let pid_namespace = plan.confinement.namespaces.pid.clone();
        // The launcher answers as soon as it has forked, so asking it runs here; only an exec
        // (no launcher, or it is gone) needs the spawner thread.
        let launched = match self.config.zygote.as_deref() {
            Some(zygote) => {
                let launched =
                    launch_by_zygote(zygote, &exe, &plan_path, stdio, &network, &pid_namespace);
                if matches!(launched, Ok(Launched::Forked(_))) {
                    if zygote.becomes_the_guest() {
                        debug!("container {}: its launcher became its guest", req.id);
                    } else if shim::has_a_server_of_its_own(spec) {
                        zygote.retire();
                    }
                }
                launched
            }
            None => Ok(Launched::NeedsExec(stdio)),
        };
        let forked = match launched {
            Ok(Launched::Forked(forked)) => Ok(forked),
            Ok(Launched::NeedsExec(stdio)) => {
                self.spawner
                    .run(move || fork_exec_guest(&exe, &plan_path, stdio, &network, &pid_namespace))
                    .await
            }
            Err(e) => Err(e),
        };
        let prepared = match forked {
            Ok(forked) => forked.prepare(cgroup.as_ref()).await,
            Err(e) => Err(e),
        };
        match prepared {
            Ok(prepared) => {
                debug!(
                    "container {}: program loaded ({})",
                    req.id, prepared.load_outcome
                );
                for warning in &prepared.warnings {
                    warn!("container {}: {warning}", req.id);
                }
                if let (Some(copy), Some(cache_dir)) = (&prepared.optimize, &self.config.cache_dir)
                {
                    crate::compiler::optimize_in_background(&self.config.exe, copy, cache_dir);
                }
                if let Some(score) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
                    set_oom_score_adj(&req.id, prepared.pid, score);
                }
                // The guest is ready: it has entered the namespace it keeps, and none of its
                // program has run yet.
                let used_network = plan
                    .network_pool
                    .as_ref()
                    .and_then(|_| network_pool::namespace_of_guest(prepared.pid));
                Ok(PreparedContainer {
                    cgroup,
                    prepared,
                    stdin_relay,
                    output,
                    used_network,
                })
            }
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    self.remove_cgroup(cgroup).await;
                }
                Err(e.to_string())
            }
        }
    }

    /// Refuses container `id` unless its image carries a signature `required` asks for.
    async fn check_signature(
        &self,
        id: &str,
        required: &SignaturePolicy,
        policy_source: &str,
    ) -> Result<(), String> {
        let image = image_of_container(&self.config.address, &self.config.namespace, id)
            .await
            .map_err(|e| format!("require_signature ({policy_source}): {e}"))?;
        let (required, source, cache) = (
            required.clone(),
            policy_source.to_owned(),
            self.config.cache_dir.clone(),
        );
        let verdict = tokio::task::spawn_blocking(move || {
            signatures::check(&required, &source, &image, cache.as_deref())
        })
        .await
        .map_err(|e| format!("signature check task failed: {e}"))?
        .map_err(|e| e.to_string())?;
        info!("container {id}: {verdict}");
        Ok(())
    }

    /// The plan, with the program from the rootfs (`args[0]` is a path) or, when the rootfs
    /// has no such file, from the image's wasm layer in containerd's content store.
    async fn plan(
        &self,
        req: &api::CreateTaskRequest,
        bundle: &Path,
        rootfs: &Path,
        spec: &Spec,
        policy: &Policy,
    ) -> Result<GuestPlan, String> {
        let cache = self.config.cache_dir.clone();
        if shim::is_sandbox(spec) {
            return GuestPlan::from_spec(&req.id, spec, rootfs, ProgramSource::Sandbox, cache)
                .map_err(|e| e.to_string());
        }
        let from_rootfs =
            GuestPlan::from_spec(&req.id, spec, rootfs, ProgramSource::Rootfs, cache.clone());
        let not_in_rootfs = match from_rootfs {
            Ok(plan) => return Ok(with_policy(plan, policy)),
            Err(e @ PlanError::Program { .. }) => e,
            Err(e) => return Err(e.to_string()),
        };
        let image =
            match resolve_wasm_image(&self.config.address, &self.config.namespace, &req.id).await {
                Ok(image) => image,
                Err(ContentError::NoWasmLayer { .. } | ContentError::NoImage { .. }) => {
                    return Err(not_in_rootfs.to_string());
                }
                Err(e) => return Err(e.to_string()),
            };
        // Pre-flight: refuse from the artifact's config before the layer is read or compiled.
        let declared_imports = match &image.config {
            Some(declared) => {
                preflight(declared, &image.image, &image.wasm_layers, policy)?;
                declared
                    .config
                    .component
                    .as_ref()
                    .map(|c| c.imports.clone())
            }
            None => None,
        };
        let layer = image.read_layer().await.map_err(|e| e.to_string())?;
        debug!(
            "container {}: program is wasm layer {} ({}) of {}",
            req.id, layer.digest, layer.media_type, layer.image
        );
        let program = bundle.join(PROGRAM_FILE);
        std::fs::write(&program, &layer.bytes)
            .map_err(|e| format!("writing {}: {e}", program.display()))?;
        let mut plan =
            GuestPlan::from_spec(&req.id, spec, rootfs, ProgramSource::File(program), cache)
                .map_err(|e| e.to_string())?;
        plan.declared_imports = declared_imports;
        plan.program_sha256 = wasmcell_oci::digest::sha256_hex(&layer.digest).map(str::to_owned);
        Ok(with_policy(plan, policy))
    }

    /// Removes a container's cgroup. One attempt right away, which almost always succeeds;
    /// if the kernel still holds the cgroup (it can for seconds after the last task is
    /// reaped), retries continue in the background for up to 30 s instead of holding up
    /// `delete`, and the shim does not exit before they end. cgroups-rs sleeps between its
    /// own retries, so every attempt runs off the async runtime.
    async fn remove_cgroup(&self, cgroup: ContainerCgroup) {
        let cgroup = Arc::new(cgroup);
        let attempt = |cgroup: Arc<ContainerCgroup>| async move {
            tokio::task::spawn_blocking(move || cgroup.delete())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        if cgroup.remove_now() || attempt(cgroup.clone()).await.is_ok() {
            return;
        }
        let pending = self.pending_cleanups.clone();
        pending.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match attempt(cgroup.clone()).await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        warn!("{e}");
                        break;
                    }
                    Err(_) => {}
                }
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn cleanup(&self, container: &mut Container) {
        if let Some(relay) = &container.stdin_relay {
            relay.close();
        }
        if let Some(cgroup) = container.cgroup.take() {
            self.remove_cgroup(cgroup).await;
        }
        if let Some(mounted) = container.rootfs.take() {
            mounted.unmount().await;
        }
        let _ = std::fs::remove_file(container.bundle.join(PLAN_FILE));
        let _ = std::fs::remove_file(container.bundle.join(PROGRAM_FILE));
    }
}

/// Applies the spec's `oomScoreAdj` to the guest. A kernel that refuses the value (lowering
/// it needs CAP_SYS_RESOURCE, which some hosts deny even to root) gets a warning, not a failed
/// container: the guest runs with the score it inherited.
fn set_oom_score_adj(id: &str, pid: u32, score: i32) {
    let path = format!("/proc/{pid}/oom_score_adj");
    if let Err(e) = std::fs::write(&path, score.to_string()) {
        warn!(
            "container {id}: cannot set oom_score_adj {score} for pid {pid}: {e}; keeping the inherited score"
        );
    }
}

/// Checks an artifact's wasm config against the host and `policy` before its layer is read.
fn preflight(
    declared: &DeclaredConfig,
    image: &str,
    wasm_layers: &[String],
    policy: &Policy,
) -> Result<(), String> {
    let context = || format!("image {image}: wasm config {}", declared.digest);
    declared
        .config
        .validate(wasm_layers)
        .map_err(|e| format!("{}: {e}", context()))?;
    if let Some(component) = &declared.config.component {
        host::check_declared(
            &component.imports,
            &component.exports,
            component.target.as_deref(),
            policy,
        )
        .map_err(|refusal| {
            format!(
                "{} (checked before reading the wasm layer): {refusal}",
                context()
            )
        })?;
    }
    Ok(())
}

fn with_policy(mut plan: GuestPlan, policy: &Policy) -> GuestPlan {
    plan.deny = policy.deny.clone();
    plan.policy_source = policy.source.clone();
    plan.allow_outbound = policy.allow_outbound.clone();
    plan
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        // containerd reads this shim's log from the FIFO of each container it hands over, while
        // that container exists.
        crate::shim_log::follow(&req.id, Path::new(&req.bundle));
        debug!("create {}", req.id);
        if self.containers.lock().await.contains_key(&req.id) {
            return Err(rpc_error(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        let created = self.create_container(&req).await;
        let container = match created {
            Ok(c) => c,
            Err(message) => {
                self.settle_claim(&req.id);
                warn!("container {}: create failed: {message}", req.id);
                return Err(rpc_error(
                    Code::FAILED_PRECONDITION,
                    format!("wasmcell: {message}"),
                ));
            }
        };
        let pid = container.pid;
        // A container's lifecycle lines (here, started, exited, deleted, and the server's own)
        // are debug, as runc's shim keeps them: containerd records each step as an event, and at
        // info every task sent five lines through containerd's log FIFO.
        debug!("container {} created, guest pid {pid}", req.id);
        let mut containers = self.containers.lock().await;
        containers.insert(req.id.clone(), container);
        // Now that it counts among the containers, its claim need not keep the shim.
        self.settle_claim(&req.id);
        if let Some(exit) = self.unclaimed_exits.lock().await.remove(&pid)
            && let Some(c) = containers.get_mut(&req.id)
        {
            self.record_exit(c, exit).await;
        }
        drop(containers);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, event).await;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        refuse_exec(&req.exec_id)?;
        let mut containers = self.containers.lock().await;
        let container = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        if !container.status.can_start() {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!(
                    "container {} cannot be started: it is {:?}",
                    req.id, container.status
                ),
            ));
        }
        let prepared = container.prepared.take().ok_or_else(|| {
            rpc_error(Code::FAILED_PRECONDITION, "guest is not waiting for start")
        })?;
        prepared
            .start()
            .map_err(|e| rpc_error(Code::INTERNAL, format!("starting the guest: {e}")))?;
        container.status = Status::Running;
        let pid = container.pid;
        debug!("container {} started", req.id);
        drop(containers);
        let event = TaskStart {
            container_id: req.id.clone(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, event).await;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        refuse_exec(&req.exec_id)?;
        let mut receiver = {
            let containers = self.containers.lock().await;
            containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id))?
                .exit
                .subscribe()
        };
        let exit = loop {
            if let Some(exit) = *receiver.borrow_and_update() {
                break exit;
            }
            if receiver.changed().await.is_err() {
                return Err(rpc_error(
                    Code::NOT_FOUND,
                    format!("container {} was deleted", req.id),
                ));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        refuse_exec(&req.exec_id)?;
        let containers = self.containers.lock().await;
        let container = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        if !container.status.can_kill() {
            return Err(rpc_error(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            ));
        }
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            rpc_error(
                Code::INVALID_ARGUMENT,
                format!("invalid signal {}", req.signal),
            )
        })?;
        debug!("container {}: signal {signal}", req.id);
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(container.pid as i32), signal) {
            // Reaped, its exit waiting for the reader to drain its output: already stopped.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(api::Empty::new()),
            Err(e) => Err(rpc_error(
                Code::INTERNAL,
                format!("signalling pid {}: {e}", container.pid),
            )),
        }
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        refuse_exec(&req.exec_id)?;
        let mut containers = self.containers.lock().await;
        let container = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        if !container.status.can_delete() {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!(
                    "container {} is running: stop it before deleting it",
                    req.id
                ),
            ));
        }
        if container.status == Status::Created {
            // Never started: closing the control pipe lets the guest exit; SIGKILL makes sure.
            container.prepared = None;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(container.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut receiver = container.exit.subscribe();
        drop(containers);
        let _ =
            tokio::time::timeout(Duration::from_secs(5), receiver.wait_for(Option::is_some)).await;
        let mut containers = self.containers.lock().await;
        let mut container = containers
            .remove(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        drop(containers);
        crate::shim_log::forget(&req.id);
        self.cleanup(&mut container).await;
        let exit = container.exited().unwrap_or(Exit {
            code: 137,
            at: SystemTime::now(),
        });
        debug!("container {} deleted", req.id);
        let event = TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: container.pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, event).await;
        Ok(api::DeleteResponse {
            pid: container.pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        refuse_exec(&req.exec_id)?;
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let exit = c.exited();
        Ok(api::StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: c.pid,
            status: c.status.as_task_status().into(),
            stdin: c.stdin.clone(),
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            terminal: false,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: MessageField::from_option(exit.map(|e| timestamp(e.at))),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let processes = if c.status == Status::Stopped {
            Vec::new()
        } else {
            vec![containerd_shim::protos::types::task::ProcessInfo {
                pid: c.pid,
                ..Default::default()
            }]
        };
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let containers = self.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let cgroup = c.cgroup.as_ref().ok_or_else(|| {
            rpc_error(
                Code::NOT_FOUND,
                format!("container {} has no cgroup (no linux.cgroupsPath)", req.id),
            )
        })?;
        let stats = cgroup
            .metrics()
            .map_err(|e| rpc_error(Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let containers = self.containers.lock().await;
        let task_pid = containers.get(&req.id).map_or(0, |c| c.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if !self.containers.lock().await.is_empty() {
            return Ok(api::Empty::new());
        }
        let service = self.clone();
        tokio::spawn(async move {
            // Let background cgroup removals finish (they stop by themselves within 30 s).
            while service.pending_cleanups.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            service.leave_if_idle().await;
        });
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let containers = self.containers.lock().await;
        if let Some(relay) = containers.get(&req.id).and_then(|c| c.stdin_relay.as_ref()) {
            relay.close();
        }
        Ok(api::Empty::new())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(not_supported("exec"))
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(not_supported("pause"))
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(not_supported("resume"))
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(not_supported("checkpoint"))
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        _req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(not_supported("update"))
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(not_supported("resize_pty (terminals)"))
    }
}
