//! Pods through containerd's CRI plugin, driven the way the kubelet drives it: a RuntimeClass
//! handler `wasmcell`, images pulled from a real registry, pod networking from CNI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use wasmcell_tests::containerd::{Containerd, CriSetup, Version};
use wasmcell_tests::cri::{Cri, Registry, log_dir};
use wasmcell_tests::demo_tar;
use wasmcell_tests::image::{Entry, write_artifact_tar, write_image_tar};

on_2_1_and_1_7!(
    a_one_shot_pod_exits_zero_and_logs_through_cri,
    a_daemon_pod_stops_on_sigterm_and_leaves_nothing_behind,
    two_containers_share_the_pod_network_and_not_the_hosts,
    containers_are_recreated_measured_and_refused_exec_in_a_running_pod,
    an_unsatisfiable_import_fails_the_container_with_the_full_message,
    the_cncf_artifact_runs_as_a_pod_image,
    a_policy_in_the_handlers_runtime_options_denies_sockets,
    wasmcell_containerd_config_patches_a_node_config,
    a_pods_security_context_reaches_its_guests,
    broken_and_lying_images_from_the_registry_are_refused_with_the_reason,
);

/// Everything a pod test needs; dropped in reverse order of need.
pub(crate) struct Node {
    cri: Cri,
    pub(crate) containerd: Containerd,
    pub(crate) registry: Registry,
    /// Pushed references: the classic demo image.
    pub(crate) demo_image: String,
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

pub(crate) fn node(version: Version) -> Option<Node> {
    node_with(version, true, None)
}

pub(crate) fn node_with(
    version: Version,
    restrict_oom_score_adj: bool,
    runtime_options: Option<&str>,
) -> Option<Node> {
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
        runtime_options: runtime_options.map(str::to_owned),
        restrict_oom_score_adj,
        private_cache: false,
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
    pub(crate) fn sandbox_config(&self, name: &str, host_network: bool) -> cri::PodSandboxConfig {
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

    pub(crate) fn run_pod(&self, config: &cri::PodSandboxConfig) -> String {
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

    pub(crate) fn pull(&self, image: &str, sandbox: &cri::PodSandboxConfig) {
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

    pub(crate) fn create(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String, tonic::Status> {
        self.create_with(
            pod,
            sandbox,
            name,
            image,
            command,
            cri::LinuxContainerConfig::default(),
            Vec::new(),
        )
    }

    /// [`Node::create`] with the container's Linux settings (security context) and mounts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_with(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
        linux: cri::LinuxContainerConfig,
        mounts: Vec<cri::Mount>,
    ) -> Result<String, tonic::Status> {
        let config = cri::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            linux: Some(linux),
            mounts,
            ..container_config(name, image)
        };
        self.create_from(pod, sandbox, config)
    }

    /// CreateContainer with a whole `config` (see [`container_config`]).
    pub(crate) fn create_from(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))
            .map(|r| r.into_inner().container_id)
    }

    /// Creates and starts container `name` in `pod`, waits for it to exit and returns its
    /// exit code and its CRI log lines.
    pub(crate) fn run_to_exit(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> (i32, Vec<(String, String)>) {
        let id = self
            .create(pod, sandbox, name, image, command)
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.containerd.log()));
        self.start(&id);
        let status = self.wait_exited(&id);
        let pod_name = sandbox
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        (
            status.exit_code,
            cri_log_lines(&self.log_file(&pod_name, name)),
        )
    }

    /// [`Node::run_to_exit`] of the demo app with `args`.
    pub(crate) fn demo_to_exit(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        name: &str,
        args: &[&str],
    ) -> (i32, Vec<(String, String)>) {
        let mut command = vec!["/demo-app.wasm"];
        command.extend(args);
        self.run_to_exit(pod, sandbox, name, &self.demo_image, &command)
    }

    pub(crate) fn start(&self, id: &str) {
        if let Err(message) = self.try_start(id) {
            panic!("StartContainer {id}: {message}");
        }
    }

    /// StartContainer, with CRI's error message on failure.
    pub(crate) fn try_start(&self, id: &str) -> Result<(), String> {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            }))
            .map(|_| ())
            .map_err(|e| e.message().to_owned())
    }

    pub(crate) fn status(&self, id: &str) -> cri::ContainerStatus {
        self.container_status(id, false).status.unwrap_or_default()
    }

    pub(crate) fn container_status(&self, id: &str, verbose: bool) -> cri::ContainerStatusResponse {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.container_status(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose,
            }))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
    }

    /// The host pid of a running container's guest (from CRI's verbose status).
    pub(crate) fn container_pid(&self, id: &str) -> u32 {
        verbose_pid(&self.container_status(id, true).info)
    }

    /// The host pid of a pod's sandbox process.
    pub(crate) fn sandbox_pid(&self, pod: &str) -> u32 {
        verbose_pid(&self.sandbox_status(pod).info)
    }

    /// PodSandboxStatus, verbose (its `info` has the runtime spec and the pid).
    pub(crate) fn sandbox_status(&self, pod: &str) -> cri::PodSandboxStatusResponse {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.to_owned(),
                verbose: true,
            }))
            .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}"))
            .into_inner()
    }

    pub(crate) fn wait_exited(&self, id: &str) -> cri::ContainerStatus {
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

    pub(crate) fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status(id);
            if status.state == cri::ContainerState::ContainerRunning as i32 {
                return;
            }
            assert!(
                status.state != cri::ContainerState::ContainerExited as i32,
                "{id} exited: {status:?}"
            );
            assert!(Instant::now() < deadline, "{id} never ran: {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn stop_container(&self, id: &str, timeout_seconds: i64) {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.stop_container(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: timeout_seconds,
            }))
            .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    }

    pub(crate) fn remove_container(&self, id: &str) {
        let mut client = self.cri.runtime.clone();
        self.cri
            .block_on(client.remove_container(cri::RemoveContainerRequest {
                container_id: id.to_owned(),
            }))
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }

    /// The pod's IP and its network namespace path (from the sandbox's runtime spec).
    pub(crate) fn pod_network(&self, pod: &str) -> (String, Option<String>) {
        let response = self.sandbox_status(pod);
        let ip = response
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let info: serde_json::Value = response
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .map(str::to_owned);
        (ip, netns)
    }

    /// A demo container started in `pod` and running `command` (args after the program).
    pub(crate) fn run_demo(
        &self,
        pod: &str,
        sandbox: &cri::PodSandboxConfig,
        name: &str,
        args: &[&str],
    ) -> String {
        let mut command = vec!["/demo-app.wasm"];
        command.extend(args);
        let id = self
            .create(pod, sandbox, name, &self.demo_image, &command)
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"));
        self.start(&id);
        id
    }

    pub(crate) fn stop_and_remove_pod(&self, pod: &str) {
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

    pub(crate) fn log_file(&self, pod: &str, container: &str) -> PathBuf {
        log_dir(self.temp.path(), pod).join(format!("{container}.log"))
    }
}

/// The `pid` in CRI's verbose `info` JSON.
fn verbose_pid(info: &std::collections::HashMap<String, String>) -> u32 {
    let info: serde_json::Value = info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    let pid = info["pid"].as_u64().unwrap_or(0) as u32;
    assert!(pid > 0, "no pid in CRI's verbose info: {info}");
    pid
}

/// The message lines of a CRI log file (`<RFC 3339 time> <stream> <F|P> <text>`), checking the
/// format of every line.
pub(crate) fn cri_log_lines(path: &Path) -> Vec<(String, String)> {
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

/// Also without `restrict_oom_score_adj`: CRI then asks for an oom_score_adj of -998 for the
/// sandbox, which this machine's kernel refuses; wasmcell warns and runs the pod anyway.
fn a_one_shot_pod_exits_zero_and_logs_through_cri(version: Version) {
    let Some(node) = node_with(version, false, None) else {
        return;
    };
    let sandbox = node.sandbox_config("oneshot", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let (code, lines) = node.run_to_exit(
        &pod,
        &sandbox,
        "echo",
        &node.demo_image,
        &["/demo-app.wasm", "echo", "hello"],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines, [("stdout".to_owned(), "hello".to_owned())]);
    // `args:` without `command:` are the program's arguments: the image's entrypoint is the
    // program, as with any container image.
    let config = cri::ContainerConfig {
        args: vec!["echo".to_owned(), "hello from args".to_owned()],
        ..container_config("args", &node.demo_image)
    };
    let id = node
        .create_from(&pod, &sandbox, config)
        .unwrap_or_else(|e| panic!("CreateContainer args: {e}\n{}", node.containerd.log()));
    node.start(&id);
    let status = node.wait_exited(&id);
    let lines = cri_log_lines(&node.log_file("oneshot", "args"));
    assert_eq!(status.exit_code, 0, "{lines:?}");
    assert_eq!(lines, [("stdout".to_owned(), "hello from args".to_owned())]);
    // Probe in a child so this process keeps its own score.
    let refused = !std::process::Command::new("sh")
        .args(["-c", "echo -998 > /proc/self/oom_score_adj"])
        .status()
        .unwrap()
        .success();
    if refused {
        assert!(
            node.containerd
                .log()
                .contains("cannot set oom_score_adj -998"),
            "no warning about the refused oom_score_adj"
        );
    }
    node.stop_and_remove_pod(&pod);
    drop(node.registry);
}

/// A container named `name` running `image` as the image says (no command, no args), logging
/// to `NAME.log`.
pub(crate) fn container_config(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// Every trace of `ids` that must be gone once their pod is removed: processes naming them
/// (shims by `-id`, guests by their bundle), mounts, cgroups, shim state and the netns.
pub(crate) fn assert_nothing_left(node: &Node, ids: &[&str], netns: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if ids.iter().any(|id| cmdline.contains(id)) {
                left.push(format!(
                    "process {}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if ids.iter().any(|id| line.contains(id)) || netns.is_some_and(|n| line.contains(n)) {
                left.push(format!("mount {line}"));
            }
        }
        for id in ids {
            let state = node
                .containerd
                .dir
                .join("state/io.containerd.runtime.v2.task/k8s.io")
                .join(id);
            if state.exists() {
                left.push(format!("state {}", state.display()));
            }
        }
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for controller in controllers.flatten() {
                let pods = controller.path().join(&node.containerd.namespace);
                for pod_dir in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
                    for id in ids {
                        if pod_dir.path().join(id).exists() {
                            left.push(format!("cgroup {}", pod_dir.path().join(id).display()));
                        }
                    }
                }
            }
        }
        if let Some(netns) = netns
            && Path::new(netns).exists()
        {
            left.push(format!("netns {netns}"));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn a_daemon_pod_stops_on_sigterm_and_leaves_nothing_behind(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    let sandbox = node.sandbox_config("daemon", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let id = node.run_demo(&pod, &sandbox, "daemon", &["daemon"]);
    node.wait_running(&id);
    let (_, netns) = node.pod_network(&pod);
    assert!(netns.is_some(), "the sandbox has no network namespace path");
    std::thread::sleep(Duration::from_millis(1500));
    // The kubelet's order: StopContainer with the grace period, then StopPodSandbox. CRI sends
    // SIGTERM and escalates to SIGKILL (exit 137) only once the grace period is over, so 143
    // shows the guest ended on SIGTERM within it (no timing is asserted).
    node.stop_container(&id, 30);
    let status = node.wait_exited(&id);
    assert_eq!(
        status.exit_code, 143,
        "SIGTERM should end the guest: {status:?}"
    );
    let lines = cri_log_lines(&node.log_file("daemon", "daemon"));
    assert!(
        lines
            .iter()
            .any(|(stream, text)| stream == "stdout" && text == "daemon tick 0"),
        "{lines:?}"
    );
    node.stop_and_remove_pod(&pod);
    assert_nothing_left(&node, &[&pod, &id], netns.as_deref());
}

fn two_containers_share_the_pod_network_and_not_the_hosts(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    // A line-serving listener on the host's loopback, which pods must not reach.
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        for stream in host_listener.incoming().flatten() {
            use std::io::Write as _;
            let mut stream = stream;
            let _ = writeln!(stream, "hello from the host");
        }
    });

    let sandbox = node.sandbox_config("pair", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let port = "8080";
    let server = node.run_demo(&pod, &sandbox, "server", &["listen", port]);
    node.wait_running(&server);
    // A pod's shim keeps its launcher for the pod's next containers.
    let shim = crate::shim::parent_of(node.container_pid(&server)).expect("the guest's parent");
    assert_eq!(
        crate::shim::children_with(shim, "__wasmcell-zygote").len(),
        1,
        "the launcher under the pod's shim {shim}"
    );
    // The pod's IP on the CNI bridge answers from the host.
    let (ip, _) = node.pod_network(&pod);
    assert!(!ip.is_empty(), "the pod has no IP");
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        if let Ok(stream) = std::net::TcpStream::connect(format!("{ip}:{port}")) {
            let mut line = String::new();
            use std::io::BufRead as _;
            let _ = std::io::BufReader::new(stream).read_line(&mut line);
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the pod never listened on {ip}:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(line.starts_with("hello from demo-app listener"), "{line:?}");

    let inside = format!("127.0.0.1:{port}");
    let (code, lines) = node.demo_to_exit(&pod, &sandbox, "client", &["connect", &inside]);
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(_, text)| text.starts_with("hello from demo-app listener")),
        "{lines:?}"
    );
    let host_loopback = format!("127.0.0.1:{host_port}");
    let (code, _) = node.demo_to_exit(&pod, &sandbox, "escape", &["connect", &host_loopback]);
    assert_ne!(code, 0, "the host's loopback was reachable from the pod");

    // A host-network pod reaches the host's loopback.
    let host_sandbox = node.sandbox_config("hostnet", true);
    let host_pod = node.run_pod(&host_sandbox);
    let (code, lines) = node.demo_to_exit(
        &host_pod,
        &host_sandbox,
        "reach",
        &["connect", &host_loopback],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        [("stdout".to_owned(), "hello from the host".to_owned())]
    );
    node.stop_and_remove_pod(&pod);
    node.stop_and_remove_pod(&host_pod);
}

fn containers_are_recreated_measured_and_refused_exec_in_a_running_pod(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    let sandbox = node.sandbox_config("lifecycle", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let first = node.run_demo(&pod, &sandbox, "once", &["echo", "first"]);
    assert_eq!(node.wait_exited(&first).exit_code, 0);
    node.remove_container(&first);
    // Re-created from the wasm-layer image (runwasi's format), also pulled by CRI.
    let wasm_layer = node
        .registry
        .push(
            &demo_tar("demo-app-wasm-layer.tar"),
            "wasmcell/demo-app-wasm-layer:latest",
        )
        .unwrap();
    node.pull(&wasm_layer, &sandbox);
    let (code, lines) = node.run_to_exit(
        &pod,
        &sandbox,
        "once",
        &wasm_layer,
        &["demo-app.wasm", "echo", "again"],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert!(lines.iter().any(|(_, t)| t == "again"), "{lines:?}");

    let daemon = node.run_demo(&pod, &sandbox, "daemon", &["daemon"]);
    node.wait_running(&daemon);
    let mut client = node.cri.runtime.clone();
    let stats = node
        .cri
        .block_on(client.container_stats(cri::ContainerStatsRequest {
            container_id: daemon.clone(),
        }))
        .unwrap_or_else(|e| panic!("ContainerStats: {e}"))
        .into_inner()
        .stats
        .unwrap_or_default();
    let memory = stats.memory.unwrap_or_default();
    let working_set = memory.working_set_bytes.map_or(0, |v| v.value);
    let usage = memory.usage_bytes.map_or(0, |v| v.value);
    assert!(
        working_set > 0 || usage > 0,
        "no memory reported: {memory:?}"
    );

    let exec = node.cri.block_on(client.exec_sync(cri::ExecSyncRequest {
        container_id: daemon.clone(),
        cmd: vec!["/demo-app.wasm".into(), "echo".into(), "x".into()],
        timeout: 10,
    }));
    let err = exec
        .err()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(err.contains("not supported"), "exec: {err:?}");
    node.stop_container(&daemon, 10);
    node.stop_and_remove_pod(&pod);
}

fn an_unsatisfiable_import_fails_the_container_with_the_full_message(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    let wasm = node.temp.path().join("kv.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(
            r#"(component (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "open" (func)))))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let tar = node.temp.path().join("kv.tar");
    let out = std::process::Command::new(wasmcell_tests::wasmcell_bin())
        .args([
            "package",
            "--format",
            "image",
            "--name",
            "localhost/test/kv:latest",
            "--module",
        ])
        .arg(&wasm)
        .arg("-o")
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = node.registry.push(&tar, "test/kv:latest").unwrap();
    let sandbox = node.sandbox_config("kv", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&image, &sandbox);
    let id = node
        .create(&pod, &sandbox, "kv", &image, &["/kv.wasm"])
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"));
    // CRI creates the task (where the shim checks) at StartContainer.
    let err = node.try_start(&id).err().unwrap_or_default();
    assert!(
        err.contains(
            "program \"/kv.wasm\": the component cannot run on this host: 1 import cannot be \
             satisfied on this host (wasi:cli/command@0.2.12): wasi:keyvalue/store@0.2.0-draft \
             (not provided by this host)"
        ),
        "{err}"
    );
    node.stop_and_remove_pod(&pod);
}

fn the_cncf_artifact_runs_as_a_pod_image(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    let image = node
        .registry
        .push(
            &demo_tar("demo-app-artifact.tar"),
            "wasmcell/demo-app-artifact:latest",
        )
        .unwrap();
    let sandbox = node.sandbox_config("artifact", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&image, &sandbox);
    let (code, lines) = node.run_to_exit(
        &pod,
        &sandbox,
        "hello",
        &image,
        &["demo-app.wasm", "echo", "from an artifact"],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(
        lines,
        [("stdout".to_owned(), "from an artifact".to_owned())]
    );
    node.stop_and_remove_pod(&pod);
}

/// What a registry can serve that must not run: an artifact whose config hides an import, a
/// classic image whose program is a truncated component, and one whose program is a script.
/// CRI pulls each (the digests hold; the lie is inside); StartContainer refuses each with the
/// reason, and the node keeps nothing of the attempts.
fn broken_and_lying_images_from_the_registry_are_refused_with_the_reason(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    crate::churn::warm_up_node(&node);
    let before = crate::churn::footprint(&node.containerd);
    let dir = node.temp.path();
    let exit_42 = wat::parse_str(crate::validation::EXIT_42).unwrap();

    let liar = dir.join("liar.tar");
    let lying_config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "component": { "imports": [], "exports": ["wasi:cli/run@0.2.0"] }
    });
    write_artifact_tar(&liar, "localhost/test/liar:1", &exit_42, lying_config);
    let truncated = dir.join("truncated.tar");
    let half = exit_42[..exit_42.len() / 2].to_vec();
    write_image_tar(
        &truncated,
        "localhost/test/truncated:1",
        &[("truncated.wasm", Entry::File(half, 0o755))],
    );
    let script = dir.join("script.tar");
    write_image_tar(
        &script,
        "localhost/test/script:1",
        &[(
            "script.wasm",
            Entry::File(b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        )],
    );
    let cases = [
        (
            &liar,
            "test/liar:1",
            "liar.wasm",
            "the artifact's wasm config and its binary disagree: config declares [], binary \
             imports [wasi:cli/exit@0.2.0]; not declared: wasi:cli/exit@0.2.0",
        ),
        (
            &truncated,
            "test/truncated:1",
            "/truncated.wasm",
            "program \"/truncated.wasm\": cannot compile the component (sha256:",
        ),
        (
            &script,
            "test/script:1",
            "/script.wasm",
            "\"/script.wasm\" is not a wasm binary",
        ),
    ];
    let sandbox = node.sandbox_config("hostile", false);
    let pod = node.run_pod(&sandbox);
    for (tar, reference, program, reason) in cases {
        let image = node.registry.push(tar, reference).unwrap();
        node.pull(&image, &sandbox);
        let name = reference.trim_start_matches("test/").replace(':', "-");
        let id = node
            .create(&pod, &sandbox, &name, &image, &[program])
            .unwrap_or_else(|e| panic!("CreateContainer {image}: {e}"));
        let err = node.try_start(&id).err().unwrap_or_default();
        assert!(err.contains(reason), "{image}: {err}");
        if program == "/truncated.wasm" {
            // The parser's reason, not just "cannot compile".
            assert!(err.contains("is out of bounds"), "{image}: {err}");
        }
        node.remove_container(&id);
    }
    // The pod is unharmed: the demo still runs in it.
    let (code, _) = node.demo_to_exit(&pod, &sandbox, "after", &["echo", "still fine"]);
    assert_eq!(code, 0);
    node.stop_and_remove_pod(&pod);
    crate::churn::remove_pod_cgroup(&node, "hostile");
    crate::churn::assert_back_to_baseline(&node.containerd, &before, "refused images");
}

/// A node config as an installer leaves it, with private paths; the comment must survive.
fn sample_config(version: Version, dir: &Path) -> String {
    let d = dir.display();
    let common = format!(
        "root = \"{d}/root\"\nstate = \"{d}/state\"\n# kept by wasmcell containerd-config\n\n\
         [grpc]\n  address = \"{d}/c.sock\"\n\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
    );
    match version {
        Version::V2_1 => format!(
            "version = 3\n{common}disabled_plugins = [\"io.containerd.nri.v1.nri\"]\n\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n  \
             stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\n\
             [plugins.\"io.containerd.cri.v1.runtime\".cni]\n  bin_dirs = [\"/usr/lib/cni\"]\n  \
             conf_dir = \"{d}/cni\"\n"
        ),
        _ => format!(
            "version = 2\n{common}\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  \
             disable_tcp_service = true\n  stream_server_address = \"127.0.0.1\"\n  \
             stream_server_port = \"0\"\n  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    \
             bin_dir = \"/usr/lib/cni\"\n    conf_dir = \"{d}/cni\"\n"
        ),
    }
}

fn wasmcell_containerd_config_patches_a_node_config(version: Version) {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("config.toml");
    let policy = temp.path().join("strict.toml");
    std::fs::write(&policy, "deny = [\"wasi:sockets/*\"]\n").unwrap();
    let patch = |file: &Path| {
        let out = std::process::Command::new(wasmcell_tests::wasmcell_bin())
            .arg("containerd-config")
            .arg("--config")
            .arg(file)
            .arg("--policy")
            .arg(&policy)
            .arg("--write")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let started = Containerd::start_with_config(version, |dir| {
        let original = sample_config(version, dir);
        std::fs::write(&file, &original).unwrap();
        // What it would print parses on its own.
        let printed = std::process::Command::new(wasmcell_tests::wasmcell_bin())
            .arg("containerd-config")
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
        let parsed: toml::Table = toml::from_str(&printed).unwrap();
        assert!(
            printed.contains("runtime_type = \"io.containerd.wasmcell.v1\""),
            "{printed}"
        );
        assert!(parsed.contains_key("plugins"), "{printed}");

        let said = patch(&file);
        assert!(said.contains("added runtime wasmcell"), "{said}");
        let backup = temp.path().join("config.toml.wasmcell-backup");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
        let patched = std::fs::read_to_string(&file).unwrap();
        assert!(
            patched.contains("# kept by wasmcell containerd-config"),
            "{patched}"
        );
        toml::from_str::<toml::Table>(&patched).unwrap();
        let said = patch(&file);
        assert!(said.contains("nothing changed"), "{said}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            patched,
            "not idempotent"
        );
        patched
    });
    let containerd = match started {
        Ok(c) => c,
        Err(reason) => wasmcell_tests::skip_or_fail!("containerd {}: {reason}", version.as_str()),
    };
    let cri = Cri::connect(&containerd.address()).unwrap();
    let mut client = cri.runtime.clone();
    let status = cri
        .block_on(client.status(cri::StatusRequest { verbose: true }))
        .unwrap_or_else(|e| panic!("CRI Status: {e}\n{}", containerd.log()))
        .into_inner();
    let info = status.info.values().cloned().collect::<Vec<_>>().join("\n");
    assert!(
        info.contains("io.containerd.wasmcell.v1"),
        "CRI does not list wasmcell:\n{info}"
    );
    assert!(info.contains(&policy.display().to_string()), "{info}");
}

/// The handler's `options` table in containerd's CRI config reaches the shim as the policy.
fn a_policy_in_the_handlers_runtime_options_denies_sockets(version: Version) {
    let Some(node) = node_with(version, true, Some("      deny = [\"wasi:sockets/*\"]")) else {
        return;
    };
    let sandbox = node.sandbox_config("strict", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let id = node
        .create(
            &pod,
            &sandbox,
            "sockets",
            &node.demo_image,
            &["/demo-app.wasm", "echo", "x"],
        )
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"));
    let err = node.try_start(&id).err().unwrap_or_default();
    assert!(
        err.contains(
            "wasi:sockets/tcp@0.2.6 (denied by policy \"wasi:sockets/*\" from containerd runtime options)"
        ),
        "{err}"
    );
    node.stop_and_remove_pod(&pod);
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn same_namespace(a: u32, b: u32, kind: &str) -> bool {
    let link = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    link(a) == link(b)
}

/// What the kubelet asks for with runAsUser, runAsGroup, supplementalGroups,
/// readOnlyRootFilesystem, allowPrivilegeEscalation: false, capabilities.drop: [ALL] and
/// seccompProfile: RuntimeDefault; and the files it mounts (/etc/hosts, resolv.conf).
fn a_pods_security_context_reaches_its_guests(version: Version) {
    let Some(node) = node(version) else {
        return;
    };
    let mut sandbox = node.sandbox_config("secure", false);
    sandbox.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".to_owned()],
        searches: vec!["default.svc.cluster.local".to_owned()],
        options: vec!["ndots:5".to_owned()],
    });
    let pod = node.run_pod(&sandbox);
    node.pull(&node.demo_image, &sandbox);
    let hosts = node.temp.path().join("etc-hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n10.1.2.3 wasmcell-alias.example\n",
    )
    .unwrap();
    let secure = || cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 3000 }),
            supplemental_groups: vec![4000],
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(cri::Capability {
                drop_capabilities: vec!["ALL".to_owned()],
                ..Default::default()
            }),
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            // What the kubelet sends without shareProcessNamespace.
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Pod as i32,
                pid: cri::NamespaceMode::Container as i32,
                ipc: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let kubelet_mounts = || {
        vec![cri::Mount {
            container_path: "/etc/hosts".to_owned(),
            host_path: hosts.display().to_string(),
            ..Default::default()
        }]
    };
    let run = |name: &str, args: &[&str]| {
        let mut command = vec!["/demo-app.wasm"];
        command.extend(args);
        let id = node
            .create_with(
                &pod,
                &sandbox,
                name,
                &node.demo_image,
                &command,
                secure(),
                kubelet_mounts(),
            )
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", node.containerd.log()));
        node.start(&id);
        id
    };
    let sleeper = run("sleeper", &["sleep", "120"]);
    node.wait_running(&sleeper);
    let pid = node.container_pid(&sleeper);
    assert_eq!(status_field(pid, "Uid"), "1000 1000 1000 1000");
    assert_eq!(status_field(pid, "Gid"), "3000 3000 3000 3000");
    let groups = status_field(pid, "Groups");
    assert!(
        groups.split(' ').any(|g| g == "4000"),
        "supplementalGroups: {groups}"
    );
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(
        status_field(pid, "CapBnd"),
        "0000000000000000",
        "capabilities.drop: [ALL]"
    );
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");

    // The pod's sandbox holds IPC and UTS for its containers; PID is per container here.
    let sandbox_pid = node.sandbox_pid(&pod);
    assert!(
        same_namespace(pid, sandbox_pid, "ipc"),
        "containers share the pod's IPC namespace"
    );
    assert!(
        same_namespace(pid, sandbox_pid, "uts"),
        "containers share the pod's UTS namespace"
    );
    assert!(same_namespace(pid, sandbox_pid, "net"));
    assert!(
        !same_namespace(pid, sandbox_pid, "pid"),
        "PID namespace per container"
    );
    assert!(!same_namespace(pid, std::process::id(), "uts"));
    let hostname = std::process::Command::new("nsenter")
        .args(["--uts", "--target", &sandbox_pid.to_string(), "hostname"])
        .output()
        .unwrap();
    assert_eq!(
        text(&hostname.stdout).trim(),
        "secure",
        "the pod's hostname"
    );

    for (name, args, expect) in [
        (
            "hosts",
            &["cat", "/etc/hosts"][..],
            "10.1.2.3 wasmcell-alias.example",
        ),
        (
            "resolv",
            &["cat", "/etc/resolv.conf"][..],
            "nameserver 10.96.0.10",
        ),
        (
            "resolve",
            &["resolve", "wasmcell-alias.example"][..],
            "10.1.2.3",
        ),
    ] {
        let id = run(name, args);
        let status = node.wait_exited(&id);
        let lines = cri_log_lines(&node.log_file("secure", name));
        assert_eq!(status.exit_code, 0, "{name}: {lines:?}");
        assert!(
            lines.iter().any(|(_, text)| text == expect),
            "{name}: expected {expect:?} in {lines:?}"
        );
    }
    let id = run("write-root", &["write", "/note", "x"]);
    let status = node.wait_exited(&id);
    let lines = cri_log_lines(&node.log_file("secure", "write-root"));
    assert_ne!(
        status.exit_code, 0,
        "readOnlyRootFilesystem refuses writes: {lines:?}"
    );

    // seccompProfile: Localhost, a profile file on the node: sockets refused.
    let profile = node.temp.path().join("no-sockets.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let mut localhost = secure();
    if let Some(ctx) = localhost.security_context.as_mut() {
        ctx.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: profile.display().to_string(),
        });
    }
    let id = node
        .create_with(
            &pod,
            &sandbox,
            "no-sockets",
            &node.demo_image,
            &["/demo-app.wasm", "connect", "127.0.0.1:9"],
            localhost,
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("CreateContainer no-sockets: {e}"));
    node.start(&id);
    let status = node.wait_exited(&id);
    let lines = cri_log_lines(&node.log_file("secure", "no-sockets"));
    assert_ne!(status.exit_code, 0);
    // WASI reports the filter's EPERM on socket() as access-denied.
    assert!(
        lines
            .iter()
            .any(|(_, text)| text.contains("Permission denied")),
        "the Localhost profile's EPERM, not a refused connection: {lines:?}"
    );

    // shareProcessNamespace: the pod's containers join the sandbox's PID namespace.
    let mut shared = node.sandbox_config("shared-pid", false);
    if let Some(ctx) = shared
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|c| c.namespace_options.as_mut())
    {
        ctx.pid = cri::NamespaceMode::Pod as i32;
    }
    let shared_pod = node.run_pod(&shared);
    let member = node.run_demo(&shared_pod, &shared, "member", &["sleep", "120"]);
    node.wait_running(&member);
    let member_pid = node.container_pid(&member);
    assert!(
        same_namespace(member_pid, node.sandbox_pid(&shared_pod), "pid"),
        "shareProcessNamespace shares the sandbox's PID namespace"
    );
    node.stop_and_remove_pod(&shared_pod);
    node.stop_and_remove_pod(&pod);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
