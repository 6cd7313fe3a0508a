//! `make bench`'s pod figure: one pod of N sleeping containers through containerd's CRI, and
//! the PSS of every shim-side process while it runs.
//!
//!     cri_pod_pss RUNTIME_HANDLER IMAGE_TAR SANDBOX_TAR N OUT.json -- COMMAND...
//!
//! Starts a private registry and a CRI-enabled containerd 2.1 (shim from `WASMCELL_BIN_DIR`,
//! with an empty compile cache of its own), pushes IMAGE_TAR and SANDBOX_TAR, creates the pod's
//! N containers running COMMAND, starts them all at once (the cold start the compile cache's
//! lock exists for), waits until all run, writes `bench/pss.py`'s JSON for the instance plus
//! `first_start_ms` (first StartContainer sent to the last container running), `pull_ms` (the
//! CRI PullImage of IMAGE) and `create_ms` (the N CreateContainer calls) to OUT.json,
//! and removes the pod. `wasmcell` never runs the sandbox image; for `runc` it must be a real
//! long-running program.

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use wasmcell_tests::containerd::{Containerd, CriSetup, Version};
use wasmcell_tests::cri::{Cri, Registry, log_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        return Err(
            "usage: cri_pod_pss HANDLER IMAGE_TAR SANDBOX_TAR N OUT.json -- COMMAND...".into(),
        );
    };
    let [_, handler, image_tar, sandbox_tar, n, out] = &args[..split] else {
        return Err(
            "usage: cri_pod_pss HANDLER IMAGE_TAR SANDBOX_TAR N OUT.json -- COMMAND...".into(),
        );
    };
    let command: Vec<String> = args[split + 1..].to_vec();
    let n: usize = n.parse()?;
    let registry = Registry::start()?;
    let image = registry.push(image_tar.as_ref(), "bench/pod-image:latest")?;
    let sandbox_image = registry.push(sandbox_tar.as_ref(), "bench/pause:latest")?;
    let containerd = Containerd::start_with_cri(
        Version::V2_1,
        &CriSetup {
            registry: registry.address.clone(),
            sandbox_image,
            runtime_options: None,
            restrict_oom_score_adj: true,
            private_cache: true,
        },
    )?;
    let cri = Cri::connect(&containerd.address())?;
    let mut runtime = cri.runtime.clone();
    let mut images = cri.images.clone();
    let temp = tempfile::tempdir()?;
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "bench".into(),
            uid: "bench-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir(temp.path(), "bench").display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}/bench", containerd.namespace),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = cri
        .block_on(runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: handler.clone(),
        }))?
        .into_inner()
        .pod_sandbox_id;
    let pulling = Instant::now();
    cri.block_on(images.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: Some(sandbox.clone()),
    }))?;
    let pull_ms = pulling.elapsed().as_secs_f64() * 1000.0;
    let creating = Instant::now();
    let mut ids = Vec::new();
    for i in 0..n {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: format!("c{i}"),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            command: command.clone(),
            log_path: format!("c{i}.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let id = cri
            .block_on(runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))?
            .into_inner()
            .container_id;
        ids.push(id);
    }
    let create_ms = creating.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    cri.block_on(async {
        let mut starts = tokio::task::JoinSet::new();
        for id in &ids {
            let mut runtime = runtime.clone();
            let request = cri::StartContainerRequest {
                container_id: id.clone(),
            };
            starts.spawn(async move { runtime.start_container(request).await });
        }
        while let Some(done) = starts.join_next().await {
            done??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let state = cri
                .block_on(runtime.container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                }))?
                .into_inner()
                .status
                .map_or(0, |s| s.state);
            if state == cri::ContainerState::ContainerRunning as i32 {
                break;
            }
            if state == cri::ContainerState::ContainerExited as i32 {
                return Err(format!("container {id} exited").into());
            }
            if Instant::now() > deadline {
                return Err(format!("container {id} is not running (state {state})").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let first_start_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_secs(2));
    let pss = std::process::Command::new("python3")
        .arg(wasmcell_tests::workspace_root().join("bench/pss.py"))
        .arg(containerd.address())
        .output()?;
    if !pss.status.success() {
        return Err(String::from_utf8_lossy(&pss.stderr).into_owned().into());
    }
    let mut figures: serde_json::Value = serde_json::from_slice(&pss.stdout)?;
    figures["first_start_ms"] = serde_json::json!(first_start_ms);
    figures["pull_ms"] = serde_json::json!(pull_ms);
    figures["create_ms"] = serde_json::json!(create_ms);
    std::fs::write(out, serde_json::to_vec_pretty(&figures)?)?;
    cri.block_on(runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))?;
    cri.block_on(runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    }))?;
    eprintln!(
        "{handler}: pod of {n} containers, all running {first_start_ms:.0} ms after the first start, measured into {out}"
    );
    Ok(())
}
