//! `make bench`'s throughput ceiling: a containerd shim v2 whose tasks do nothing. Installed
//! by the bench as `containerd-shim-wcnull-v1` (runtime `io.containerd.wcnull.v1`), it speaks
//! the same protocol a real shim does — containerd runs `start` (which spawns the server),
//! the task calls over ttrpc, the task events published back, `shutdown`, and containerd's
//! `delete` after the shim disconnects — but a task's process exits with 0 the moment it
//! starts, and there is no cgroup, mount, stdio or guest. What containerd sustains with it is
//! what containerd alone sustains on this machine, shims included: the ceiling a real runtime
//! is measured against.
//!
//! Built on the containerd-shim crate's own `run`, which answers `start` with task API v3:
//! containerd 2.x only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, Shim, run, spawn};
use containerd_shim::protos::api;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts, TtrpcResult};

const TASK_CREATE: &str = "/tasks/create";
const TASK_START: &str = "/tasks/start";
const TASK_EXIT: &str = "/tasks/exit";
const TASK_DELETE: &str = "/tasks/delete";

#[derive(Clone)]
struct NullShim {
    exit: Arc<ExitSignal>,
    namespace: String,
}

#[async_trait]
impl Shim for NullShim {
    type T = NullTasks;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        NullShim {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let grouping = opts.id.clone();
        spawn(opts, &grouping, Vec::new()).await
    }

    async fn delete_shim(&mut self) -> Result<api::DeleteResponse, Error> {
        Ok(api::DeleteResponse::new())
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> NullTasks {
        NullTasks {
            exit: self.exit.clone(),
            namespace: self.namespace.clone(),
            publisher: Arc::new(publisher),
            exits: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

#[derive(Clone)]
struct NullTasks {
    exit: Arc<ExitSignal>,
    namespace: String,
    publisher: Arc<RemotePublisher>,
    /// Exit time of every started task, by id.
    exits: Arc<Mutex<HashMap<String, Timestamp>>>,
}

impl NullTasks {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = containerd_shim::protos::ttrpc::context::with_timeout(0);
        let _ = self
            .publisher
            .publish(ctx, topic, &self.namespace, event)
            .await;
    }

    fn exited_at(&self, id: &str) -> Timestamp {
        self.exits
            .lock()
            .ok()
            .and_then(|exits| exits.get(id).cloned())
            .unwrap_or_else(Timestamp::now)
    }
}

#[async_trait]
impl Task for NullTasks {
    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = std::process::id();
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            pid,
            ..Default::default()
        };
        self.publish(TASK_CREATE, Box::new(event)).await;
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
        let pid = std::process::id();
        let now = Timestamp::now();
        if let Ok(mut exits) = self.exits.lock() {
            exits.insert(req.id.clone(), now.clone());
        }
        let start = TaskStart {
            container_id: req.id.clone(),
            pid,
            ..Default::default()
        };
        self.publish(TASK_START, Box::new(start)).await;
        let exit = TaskExit {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exit_status: 0,
            exited_at: MessageField::some(now),
            ..Default::default()
        };
        self.publish(TASK_EXIT, Box::new(exit)).await;
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
        Ok(api::WaitResponse {
            exit_status: 0,
            exited_at: MessageField::some(self.exited_at(&req.id)),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        Ok(api::StateResponse {
            id: req.id.clone(),
            pid: std::process::id(),
            status: api::Status::STOPPED.into(),
            exited_at: MessageField::some(self.exited_at(&req.id)),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, _req: api::KillRequest) -> TtrpcResult<api::Empty> {
        Ok(api::Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let exited_at = self.exited_at(&req.id);
        if let Ok(mut exits) = self.exits.lock() {
            exits.remove(&req.id);
        }
        let pid = std::process::id();
        let event = TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid,
            exited_at: MessageField::some(exited_at.clone()),
            ..Default::default()
        };
        self.publish(TASK_DELETE, Box::new(event)).await;
        Ok(api::DeleteResponse {
            pid,
            exit_status: 0,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        self.exit.signal();
        Ok(api::Empty::default())
    }
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("null shim: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run::<NullShim>("io.containerd.wcnull.v1", None));
}
