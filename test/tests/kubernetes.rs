//! Pods through containerd's CRI plugin, driven the way the kubelet drives it: a RuntimeClass
//! handler `wasmcell`, images pulled from a real registry, pod networking from CNI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use wasmcell_tests::containerd::{Containerd, CriSetup, Version};
use wasmcell_tests::cri::{Cri, Registry, log_dir};
use wasmcell_tests::demo_tar;
use wasmcell_tests::image::{Entry, write_image_tar};

on_2_1_and_1_7!(a_one_shot_pod_exits_zero_and_logs_through_cri,);

/// Everything a pod test needs; dropped in reverse order of need.
struct Node {
    cri: Cri,
    containerd: Containerd,
    registry: Registry,
    /// Pushed references: the classic demo image.
    demo_image: String,
    temp: tempfile::TempDir,
}

/// Skips (fails under CI) with `reason`, returning `None` for the scenario to return on.
fn missing(reason: String) -> Option<Node> {
    if wasmcell_tests::in_ci() {
        panic!("CI=true and a prerequisite is missing: {reason}");
    }
    eprintln!("\n*** SKIPPED (not CI): {reason} ***\n");
    None
}

fn node(version: Version) -> Option<Node> {
    let registry = match Registry::start() {
        Ok(r) => r,
        Err(reason) => return missing(format!("registry: {reason}")),
    };
    let temp = tempfile::tempdir().unwrap();
    let pause_tar = temp.path().join("pause.tar");
    write_image_tar(
        &pause_tar,
        "localhost/wasmcell/pause:1",
        &[(
            "pause",
            Entry::File(b"never run by wasmcell\n".to_vec(), 0o755),
        )],
    );
    let sandbox_image = registry.push(&pause_tar, "wasmcell/pause:1").unwrap();
    let demo_image = registry
        .push(&demo_tar("demo-app-image.tar"), "wasmcell/demo-app:latest")
        .unwrap();
    let setup = CriSetup {
        registry: registry.address.clone(),
        sandbox_image,
        runtime_options: None,
    };
    let containerd = match Containerd::start_with_cri(version, &setup) {
        Ok(c) => c,
        Err(reason) => {
            return missing(format!(
                "containerd {} with CRI: {reason}",
                version.as_str()
            ));
        }
    };
    let cri = Cri::connect(&containerd.address()).unwrap();
    Some(Node {
        cri,
        containerd,
        registry,
        demo_image,
        temp,
    })
}

impl Node {
    fn sandbox_config(&self, name: &str, host_network: bool) -> cri::PodSandboxConfig {
        let mode = if host_network {
            cri::NamespaceMode::Node
        } else {
            cri::NamespaceMode::Pod
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("uid-{name}"),
                namespace: "default".to_owned(),
                attempt: 0,
            }),
            hostname: name.to_owned(),
            log_directory: log_dir(self.temp.path(), name).display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                // Under the instance's unique name, which the harness cleans up.
                cgroup_parent: format!("/{}/{name}", self.containerd.namespace),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: mode as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run_pod(&self, config: &cri::PodSandboxConfig) -> String {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: "wasmcell".to_owned(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.containerd.log()))
            .into_inner()
            .pod_sandbox_id
    }

    fn pull(&self, image: &str, sandbox: &cri::PodSandboxConfig) {
        let mut client = self.cri.images.clone();
        self.cri
            .block_on(client.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: Some(sandbox.clone()),
            }))
            .unwrap_or_else(|e| panic!("PullImage {image}: {e}"));
    }

    fn create(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String, tonic::Status> {
        let mut client = self.cri.runtime.clone();
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };
        self.cri
            .block_on(client.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))
            .map(|r| r.into_inner().container_id)
    }

    fn start(&self, id: &str) {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
    }

    fn status(&self, id: &str) -> cri::ContainerStatus {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            }))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
            .status
            .unwrap_or_default()
    }

    fn wait_exited(&self, id: &str) -> cri::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status(id);
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(Instant::now() < deadline, "{id} never exited: {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_and_remove_pod(&self, pod: &str) {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.to_owned(),
            }))
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
        self.cri
            .block_on(client.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod.to_owned(),
            }))
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    }

    fn log_file(&self, pod: &str, container: &str) -> PathBuf {
        log_dir(self.temp.path(), pod).join(format!("{container}.log"))
    }
}

/// The message lines of a CRI log file (`<RFC 3339 time> <stream> <F|P> <text>`), checking the
/// format of every line.
fn cri_log_lines(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading CRI log {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag, message) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            assert!(
                time.len() > 20 && time.contains('T'),
                "not a CRI log line: {line:?}"
            );
            assert!(tag == "F" || tag == "P", "not a CRI log line: {line:?}");
            (stream.to_owned(), message.to_owned())
        })
        .collect()
}

fn a_one_shot_pod_exits_zero_and_logs_through_cri(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    let sandbox = node.sandbox_config("oneshot", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let id = node
        .create(
            &pod,
            &sandbox,
            "echo",
            &node.demo_image,
            &["/demo-app.wasm", "echo", "hello"],
        )
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", node.containerd.log()));
    node.start(&id);
    let status = node.wait_exited(&id);
    assert_eq!(status.exit_code, 0, "{status:?}");
    let lines = cri_log_lines(&node.log_file("oneshot", "echo"));
    assert_eq!(lines, [("stdout".to_owned(), "hello".to_owned())]);
    node.stop_and_remove_pod(&pod);
    drop(node.registry);
}
