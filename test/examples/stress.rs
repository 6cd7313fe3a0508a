//! `make bench`'s throughput figure: short-lived tasks driven straight through containerd's
//! API (as runwasi's stress test does), not through one `ctr` process per task, whose own
//! start-up and client work would dominate what is measured.
//!
//!     stress ADDRESS NAMESPACE TEMPLATE TASKS PARALLEL
//!
//! TEMPLATE is a container made with `ctr container create` (image, runtime, runtime options
//! and spec come from it). Each task: create a container (the template's spec with its own
//! cgroup path), prepare its snapshot on the template's parent, create, start, wait for and
//! delete the task, remove the snapshot and delete the container. Prints the wall time of all TASKS,
//! PARALLEL at a time, in microseconds; fails if any task fails or exits non-zero.

use std::sync::Arc;
use std::time::Instant;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, StartRequest, WaitRequest,
};
use containerd_client::{Client, with_namespace};
use tokio::sync::Semaphore;
use tonic::Request;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Template {
    namespace: String,
    image: String,
    runtime: Option<Runtime>,
    spec: serde_json::Value,
    spec_type: String,
    snapshotter: String,
    parent: String,
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, namespace, template, tasks, parallel] = args.as_slice() else {
        return Err("usage: stress ADDRESS NAMESPACE TEMPLATE TASKS PARALLEL".into());
    };
    let tasks: usize = tasks.parse()?;
    let parallel: usize = parallel.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Arc::new(Client::from_path(address).await?);
        let template = Arc::new(load_template(&client, namespace, template).await?);
        let limit = Arc::new(Semaphore::new(parallel));
        let started = Instant::now();
        let mut handles = Vec::new();
        for i in 0..tasks {
            let permit = limit.clone().acquire_owned().await?;
            let (client, template) = (client.clone(), template.clone());
            handles.push(tokio::spawn(async move {
                let begun = Instant::now();
                let result = run_one(&client, &template, &format!("stress-{i}")).await;
                if std::env::var_os("STRESS_TRACE").is_some() {
                    eprintln!("stress-{i}: {} ms", begun.elapsed().as_millis());
                }
                drop(permit);
                result
            }));
        }
        for handle in handles {
            handle.await??;
        }
        println!("{}", started.elapsed().as_micros());
        Ok(())
    })
}

async fn load_template(client: &Client, ns: &str, id: &str) -> Result<Template, BoxError> {
    let container = client
        .containers()
        .get(with_namespace!(
            GetContainerRequest { id: id.to_owned() },
            ns
        ))
        .await?
        .into_inner()
        .container
        .ok_or("template container not found")?;
    let spec_any = container.spec.ok_or("template has no spec")?;
    let info = client
        .snapshots()
        .stat(with_namespace!(
            StatSnapshotRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            },
            ns
        ))
        .await?
        .into_inner()
        .info
        .ok_or("template snapshot not found")?;
    Ok(Template {
        namespace: ns.to_owned(),
        image: container.image,
        runtime: container.runtime,
        spec: serde_json::from_slice(&spec_any.value)?,
        spec_type: spec_any.type_url,
        snapshotter: container.snapshotter,
        parent: info.parent,
    })
}

async fn run_one(client: &Client, t: &Template, id: &str) -> Result<(), BoxError> {
    let ns = t.namespace.as_str();
    let mut spec = t.spec.clone();
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{ns}/{id}"));
    let container = Container {
        id: id.to_owned(),
        image: t.image.clone(),
        runtime: t.runtime.clone(),
        spec: Some(prost_types::Any {
            type_url: t.spec_type.clone(),
            value: serde_json::to_vec(&spec)?,
        }),
        snapshotter: t.snapshotter.clone(),
        snapshot_key: id.to_owned(),
        ..Default::default()
    };
    client
        .containers()
        .create(with_namespace!(
            CreateContainerRequest {
                container: Some(container)
            },
            ns
        ))
        .await?;
    // After the container exists: it references the snapshot key, so garbage collection
    // cannot take the snapshot before the task uses it.
    let mounts = client
        .snapshots()
        .prepare(with_namespace!(
            PrepareSnapshotRequest {
                snapshotter: t.snapshotter.clone(),
                key: id.to_owned(),
                parent: t.parent.clone(),
                labels: Default::default(),
            },
            ns
        ))
        .await?
        .into_inner()
        .mounts;
    let mut tasks = client.tasks();
    tasks
        .create(with_namespace!(
            CreateTaskRequest {
                container_id: id.to_owned(),
                rootfs: mounts,
                ..Default::default()
            },
            ns
        ))
        .await?;
    let mut waiter = client.tasks();
    let wait_id = id.to_owned();
    let namespace = ns.to_owned();
    let wait = tokio::spawn(async move {
        waiter
            .wait(with_namespace!(
                WaitRequest {
                    container_id: wait_id,
                    exec_id: String::new(),
                },
                namespace.as_str()
            ))
            .await
    });
    tasks
        .start(with_namespace!(
            StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            },
            ns
        ))
        .await?;
    let status = wait.await??.into_inner().exit_status;
    tasks
        .delete(with_namespace!(
            DeleteTaskRequest {
                container_id: id.to_owned()
            },
            ns
        ))
        .await?;
    // The snapshot first: once the container is gone, garbage collection may take it.
    client
        .snapshots()
        .remove(with_namespace!(
            RemoveSnapshotRequest {
                snapshotter: t.snapshotter.clone(),
                key: id.to_owned(),
            },
            ns
        ))
        .await?;
    client
        .containers()
        .delete(with_namespace!(
            DeleteContainerRequest { id: id.to_owned() },
            ns
        ))
        .await?;
    if status != 0 {
        return Err(format!("task {id} exited with {status}").into());
    }
    Ok(())
}
