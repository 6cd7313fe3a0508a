//! `containerd-shim-wasmcell-v1` under real containerd, driven with `ctr` as a user would.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::{DEMO_IMAGES, demo_tar};

pub(crate) const RUNTIME: &str = "io.containerd.wasmcell.v1";
pub(crate) const IMAGE: &str = "localhost/wasmcell/demo-app:latest";
const WASM_LAYER_IMAGE: &str = "localhost/wasmcell/demo-app-wasm-layer:latest";

on_2_1_and_1_7!(
    guest_behaves_like_a_container,
    signals_and_cleanup,
    artifact_runs_after_wasmcell_import,
    wasmcell_import_compiles_ahead,
    artifacts_with_foreign_configs_run_with_one_warning,
    preview1_module_runs,
    twenty_containers_at_once,
    bad_input_is_refused_with_a_clear_message,
    second_run_uses_the_compile_cache_and_survives_corruption,
    network_is_private_unless_host_networking_is_asked_for,
    memory_limit_stops_a_growing_guest,
    a_tampered_wasm_layer_is_refused,
    a_guest_survives_a_containerd_restart,
    programs_and_links_cannot_escape_the_rootfs,
    bind_mounts_appear_at_their_destination_honouring_read_only,
    a_listening_guest_answers_on_the_host_network,
    guests_die_with_a_killed_shim_and_nothing_is_left,
    the_writable_layer_is_volatile_and_settled_at_each_stop,
    concurrent_cold_starts_compile_once,
    a_full_or_read_only_cache_runs_uncached_with_one_warning,
    a_storm_of_sigterms_ends_a_guest_once,
    a_guest_killed_while_compiling_leaves_nothing_behind,
    guests_come_from_the_launcher_and_outlive_it,
    a_lone_containers_launcher_becomes_its_guest,
    an_instance_leaves_no_cgroup_behind,
    later_servers_are_forked_by_the_starter_which_can_die,
    a_lone_containers_server_waits_as_a_spare_for_the_next,
    a_spare_preloads_what_was_compiled_after_it_was_forked,
    no_starter_is_asked_or_started_under_shim_start_exec,
    a_sleeping_guest_is_one_thread_and_lets_go_of_its_start_up_code,
);

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A containerd with the demo images imported.
pub(crate) fn containerd_with_demo(version: Version) -> Option<Containerd> {
    containerd_with_demo_cache(version, false)
}

pub(crate) fn containerd_with_demo_cache(
    version: Version,
    private_cache: bool,
) -> Option<Containerd> {
    containerd_with_demo_images(version, &DEMO_IMAGES[..2], private_cache)
}

pub(crate) fn containerd_with_demo_images(
    version: Version,
    images: &[(&str, &str)],
    private_cache: bool,
) -> Option<Containerd> {
    let started = if private_cache {
        Containerd::start_with_private_cache(version)
    } else {
        Containerd::start(version)
    };
    let containerd = match started {
        Ok(c) => c,
        Err(reason) => {
            if wasmcell_tests::in_ci() {
                panic!(
                    "CI=true and containerd {} is unavailable: {reason}",
                    version.as_str()
                );
            }
            eprintln!(
                "\n*** SKIPPED (not CI): containerd {}: {reason} ***\n",
                version.as_str()
            );
            return None;
        }
    };
    for (file, _) in images {
        let tar = demo_tar(file);
        containerd.ctr_ok(&["image", "import", "--all-platforms", tar.to_str().unwrap()]);
    }
    Some(containerd)
}

/// `ctr run --rm` of the demo app with `args`, feeding `stdin`.
pub(crate) fn run_demo(
    containerd: &Containerd,
    image: &str,
    id: &str,
    extra: &[&str],
    args: &[&str],
    stdin: &[u8],
) -> Output {
    let program = if image == IMAGE {
        "/demo-app.wasm"
    } else {
        "demo-app.wasm"
    };
    let mut argv = vec![program];
    argv.extend(args);
    run_argv(containerd, image, id, extra, &argv, stdin)
}

/// `ctr run --rm` of `image` as container `id` with the whole `argv` (program first).
pub(crate) fn run_argv(
    containerd: &Containerd,
    image: &str,
    id: &str,
    extra: &[&str],
    argv: &[&str],
    stdin: &[u8],
) -> Output {
    let mut full = vec![
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
    ];
    full.extend(extra);
    full.push(image);
    full.push(id);
    full.extend(argv);
    containerd.ctr_with_stdin(&full, stdin)
}

/// Packages `module` as a classic image named `name` with `wasmcell package` (written to
/// `tar`) and imports it into `containerd`.
pub(crate) fn package_and_import(
    containerd: &Containerd,
    module: &std::path::Path,
    name: &str,
    tar: &std::path::Path,
) {
    let packaged = std::process::Command::new(wasmcell_tests::wasmcell_bin())
        .args(["package", "--format", "image", "--name", name, "--module"])
        .arg(module)
        .arg("-o")
        .arg(tar)
        .output()
        .unwrap();
    assert!(packaged.status.success(), "{}", text(&packaged.stderr));
    containerd.ctr_ok(&["image", "import", "--all-platforms", tar.to_str().unwrap()]);
}

/// `wasmcell import TAR` into `containerd`; panics with its stderr if it fails, else returns
/// it (warnings).
pub(crate) fn wasmcell_import(containerd: &Containerd, tar: &std::path::Path) -> String {
    let out = std::process::Command::new(wasmcell_tests::wasmcell_bin())
        .arg("import")
        .args(containerd.wasmcell_options())
        .arg(tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasmcell import: {}",
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// `ctr run -d` arguments for the demo image as container `id` running `args`.
pub(crate) fn detached_demo_args<'a>(id: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec![
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        id,
        "/demo-app.wasm",
    ];
    full.extend(args);
    full
}

/// Starts the demo image detached as container `id` running `args`; returns its guest's pid
/// once it runs.
pub(crate) fn run_demo_detached(containerd: &Containerd, id: &str, args: &[&str]) -> u32 {
    containerd.ctr_ok(&detached_demo_args(id, args));
    wait_for_status(containerd, id, "RUNNING")
}

/// SIGKILLs task `id`, waits until it has stopped, deletes the task and the container.
pub(crate) fn delete_stopped_after_kill(containerd: &Containerd, id: &str) {
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    wait_for_status(containerd, id, "STOPPED");
    containerd.ctr_ok(&["task", "delete", id]);
    containerd.ctr_ok(&["container", "delete", id]);
}

pub(crate) fn wait_for_status(containerd: &Containerd, id: &str, status: &str) -> u32 {
    // Generous: a cold compile in a debug build on a loaded 2-core machine takes a while.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let listed = text(&containerd.ctr(&["task", "ls"]).stdout);
        if let Some(line) = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            && line.contains(status)
        {
            return line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never reached {status}:\n{listed}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn guest_behaves_like_a_container(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    for image in [IMAGE, WASM_LAYER_IMAGE] {
        let out = run_demo(&containerd, image, "echo", &[], &["echo", "hello"], b"");
        assert_eq!(
            text(&out.stdout),
            "hello\n",
            "{image}: {}",
            text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));

        let out = run_demo(&containerd, image, "exit7", &[], &["exit", "7"], b"");
        assert_eq!(out.status.code(), Some(7), "{image}: {}", text(&out.stderr));

        let out = run_demo(&containerd, image, "trap", &[], &["trap"], b"");
        assert_ne!(out.status.code(), Some(0));
        let err = text(&out.stderr);
        assert!(
            err.contains("guest trapped") && err.contains("unreachable"),
            "{image}: {err}"
        );

        let out = run_demo(
            &containerd,
            image,
            "env",
            &["--env", "GREETING=hi there"],
            &["env"],
            b"",
        );
        assert!(
            text(&out.stdout).lines().any(|l| l == "GREETING=hi there"),
            "{}",
            text(&out.stdout)
        );

        let out = run_demo(
            &containerd,
            image,
            "stdin",
            &[],
            &["cat", "-"],
            b"through stdin\n",
        );
        assert_eq!(
            text(&out.stdout),
            "through stdin\n",
            "{image}: {}",
            text(&out.stderr)
        );
    }
    // The classic image's rootfs is the container's `/`, writable; beside the image's file
    // only the spec's tmpfs mounts (/dev, /run) are there, and no /proc or /sys.
    let out = run_demo(&containerd, IMAGE, "ls", &[], &["ls", "/"], b"");
    assert_eq!(text(&out.stdout), "demo-app.wasm\ndev\nrun\n");
    let out = run_demo(
        &containerd,
        IMAGE,
        "write",
        &[],
        &["write", "/note.txt", "written"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_demo(
        &containerd,
        IMAGE,
        "cat-host",
        &[],
        &["cat", "/etc/passwd"],
        b"",
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a host file must not be readable"
    );
}

/// The front alone in a directory, without the core next to it. A hard link where it can be:
/// a copy's write descriptor, inherited by a child another test forks meanwhile, would make
/// exec'ing it fail with "text file busy".
fn lone_front() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let front = dir.path().join("containerd-shim-wasmcell-v1");
    let installed = wasmcell_tests::containerd::shim_bin_dir().join("containerd-shim-wasmcell-v1");
    if std::fs::hard_link(&installed, &front).is_err() {
        std::fs::copy(&installed, &front).unwrap();
    }
    (dir, front)
}

/// containerd's cleanup `delete` after a clean exit (no cgroup left) is answered by the front
/// itself: it needs no core, removes the bundle's plan and program, and answers with
/// containerd's `DeleteResponse`.
#[test]
fn the_front_answers_a_clean_delete_without_the_core() {
    use containerd_shim::protos::protobuf::Message;
    let (_dir, front) = lone_front();
    let bundle = tempfile::tempdir().unwrap();
    std::fs::write(
        bundle.path().join("config.json"),
        r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"/wasmcell-test-absent/c1"}}"#,
    )
    .unwrap();
    std::fs::write(bundle.path().join("wasmcell-plan.json"), "{}").unwrap();
    std::fs::write(bundle.path().join("wasmcell-program.wasm"), "\0asm").unwrap();
    let out = Command::new(&front)
        .args([
            "-namespace",
            "default",
            "-address",
            "/nonexistent/containerd.sock",
        ])
        .args([
            "-publish-binary",
            "/nonexistent/containerd",
            "-id",
            "c1",
            "-bundle",
        ])
        .arg(bundle.path())
        .arg("delete")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let response = containerd_shim::DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(response.exit_status, 137);
    assert!(response.exited_at.seconds > 0);
    assert!(!bundle.path().join("wasmcell-plan.json").exists());
    assert!(!bundle.path().join("wasmcell-program.wasm").exists());
}

/// A shim socket at the address containerd's shims derive for `group` (sha256 of
/// `address/namespace/group` under `/run/containerd/s`), listening; `None` without root,
/// which may only happen outside CI.
fn listening_shim_socket(
    address: &str,
    namespace: &str,
    group: &str,
) -> Option<(std::os::unix::net::UnixListener, String)> {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(format!(
        "{address}/{namespace}/{group}"
    )));
    let dir = std::path::Path::new("/run/containerd/s");
    let path = dir.join(hash);
    let bound = std::fs::create_dir_all(dir).and_then(|()| {
        let _ = std::fs::remove_file(&path);
        std::os::unix::net::UnixListener::bind(&path)
    });
    match bound {
        Ok(listener) => Some((listener, format!("unix://{}", path.display()))),
        Err(e) if !wasmcell_tests::in_ci() => {
            eprintln!(
                "SKIPPED: binding a shim socket under {} needs root: {e}",
                dir.display()
            );
            None
        }
        Err(e) => panic!("binding a shim socket under {}: {e}", dir.display()),
    }
}

/// Runs the lone front's `start` for container `id` of `namespace` in `bundle`, with the shim
/// config file `config`.
fn front_start(
    front: &std::path::Path,
    bundle: &std::path::Path,
    config: &std::path::Path,
    address: &str,
    namespace: &str,
    id: &str,
) -> std::process::Output {
    Command::new(front)
        .args(["-namespace", namespace, "-address", address])
        .args([
            "-publish-binary",
            "/nonexistent/containerd",
            "-id",
            id,
            "start",
        ])
        .current_dir(bundle)
        .env("WASMCELL_CONFIG", config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The lone front handed the action to the core, which is not there.
fn assert_left_to_the_missing_core(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot run the shim core"),
        "{}",
        text(&out.stderr)
    );
}

/// A `start` whose group already has a shim serving (a pod's container after its sandbox,
/// any container under `group = "namespace"`) is answered by the front: no core, the address
/// on stdout and in the bundle's `address` file, and under `namespace` the container's claim
/// left for the shim. Without a serving shim, or with a config it cannot read, the core decides.
#[test]
fn the_front_answers_a_start_whose_shim_already_serves() {
    let (dir, front) = lone_front();
    let unique = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let containerd = format!("/nonexistent/{unique}/containerd.sock");
    let config = dir.path().join("config.toml");
    let bundle = tempfile::tempdir().unwrap();
    let pod = format!("pod-{unique}");
    std::fs::write(
        bundle.path().join("config.json"),
        format!(
            r#"{{"ociVersion":"1.0.2","annotations":{{"io.kubernetes.cri.sandbox-id":"{pod}"}}}}"#
        ),
    )
    .unwrap();

    let start = |namespace: &str, id: &str| {
        front_start(&front, bundle.path(), &config, &containerd, namespace, id)
    };

    // Per pod (no config file): the pod's shim serves.
    let Some((listener, address)) = listening_shim_socket(&containerd, "k8s.io", &pod) else {
        return;
    };
    let out = start("k8s.io", "app");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), address);
    assert_eq!(
        std::fs::read_to_string(bundle.path().join("address")).unwrap(),
        address
    );
    let socket = address.trim_start_matches("unix://").to_owned();
    drop(listener);
    std::fs::remove_file(&socket).unwrap();

    // No shim serves the pod: the core must start one (here: it is missing).
    let out = start("k8s.io", "app");
    assert_left_to_the_missing_core(&out);

    // Per namespace: the namespace's shim serves, and finds the container's claim.
    std::fs::write(&config, "group = \"namespace\"\n").unwrap();
    let namespace = format!("ns-{unique}");
    let group = format!("wasmcell-namespace-{namespace}");
    let (listener, address) = listening_shim_socket(&containerd, &namespace, &group).unwrap();
    let out = start(&namespace, "c/2");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), address);
    let socket = address.trim_start_matches("unix://").to_owned();
    assert!(
        std::path::Path::new(&format!("{socket}.claims/c%2f2")).exists(),
        "the claim keeps a leaving shim for this container"
    );

    // A config the front cannot read is the core's to report.
    std::fs::write(&config, "group = 3\n").unwrap();
    let out = start(&namespace, "c3");
    assert_left_to_the_missing_core(&out);
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir_all(format!("{socket}.claims"));
    let _ = std::fs::remove_file(format!("{socket}.lock"));
}

/// Every other action goes to the core next to the front; without it, the error names the
/// core's path.
#[test]
fn the_front_hands_other_actions_to_the_core() {
    let (_dir, front) = lone_front();
    let out = Command::new(&front).arg("-info").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot run the shim core")
            && stderr.contains("containerd-shim-wasmcell-v1-core"),
        "{stderr}"
    );
    let installed = wasmcell_tests::containerd::shim_bin_dir().join("containerd-shim-wasmcell-v1");
    let out = Command::new(installed).arg("-info").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("io.containerd.wasmcell.v1"),
        "the core's runtime info"
    );
}

#[test]
fn classic_image_runs_on_1_6() {
    // 1.6 unpacks only tar layers, so the classic image is what it can run.
    let Some(containerd) = containerd_with_demo_images(Version::V1_6, &DEMO_IMAGES[..1], false)
    else {
        return;
    };
    let out = run_demo(&containerd, IMAGE, "echo16", &[], &["echo", "hello"], b"");
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));
    let out = run_demo(&containerd, IMAGE, "exit16", &[], &["exit", "7"], b"");
    assert_eq!(out.status.code(), Some(7));
}

fn signals_and_cleanup(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    for (signal, expected) in [("SIGTERM", 143), ("SIGKILL", 137)] {
        let id = format!("sleep-{}", signal.to_lowercase());
        let mut child = containerd.ctr_command(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip2/wasm",
            IMAGE,
            &id,
            "/demo-app.wasm",
            "sleep",
            "600",
        ]);
        let pid = wait_for_status(&containerd, &id, "RUNNING");
        assert!(pid > 0);
        let ps = text(&containerd.ctr_ok(&["task", "ps", &id]).into_bytes());
        assert!(ps.contains(&pid.to_string()), "{ps}");
        containerd.ctr_ok(&["task", "kill", "--signal", signal, &id]);
        let status = wait_child(&mut child, Duration::from_secs(20));
        assert_eq!(
            status,
            Some(expected),
            "{signal} must end the guest with {expected}"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "guest {pid} still alive"
        );
    }

    // Detached: metrics, then kill, delete, and nothing left behind.
    containerd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "daemon",
        "/demo-app.wasm",
        "sleep",
        "600",
    ]);
    let pid = wait_for_status(&containerd, "daemon", "RUNNING");
    let metrics = containerd.ctr_ok(&["task", "metrics", "daemon"]);
    let usage = metrics
        .lines()
        .find(|l| l.starts_with("memory.usage_in_bytes") || l.starts_with("memory.usage "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(usage > 0, "memory usage must be non-zero:\n{metrics}");
    containerd.ctr_ok(&["task", "kill", "daemon"]);
    wait_for_status(&containerd, "daemon", "STOPPED");
    containerd.ctr(&["task", "delete", "daemon"]);
    containerd.ctr_ok(&["container", "delete", "daemon"]);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let bundle = containerd
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&containerd.namespace)
        .join("daemon");
    assert!(!bundle.exists(), "{} left behind", bundle.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // This instance's bundle only: the same test on another containerd runs alongside.
    let rootfs = bundle.join("rootfs").display().to_string();
    assert!(
        !mountinfo.contains(&rootfs),
        "rootfs mount {rootfs} left behind"
    );
    for controller in ["memory", "cpu", "pids"] {
        let cgroup = std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&containerd.namespace)
            .join("daemon");
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}

/// On cgroup v1 a guest joins a cpuset cgroup of its own only when its spec sets CPUs (or memory
/// nodes): creating and removing one rebuilds the kernel's scheduling domains. It never joins
/// one in the hierarchies where wasmcell sets and reads nothing (devices, freezer); every other
/// controller is joined as always, and nothing is left behind either way — not even a
/// directory in a hierarchy it did not join, as an earlier wasmcell's container leaves one.
/// (`--cpuset-cpus` needs ctr 2.x.)
#[test]
fn a_v1_guest_joins_only_the_hierarchies_it_uses() {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("SKIPPED: cgroup v2 host; this checks cgroup v1's cpuset handling");
        return;
    }
    let Some(containerd) = containerd_with_demo(Version::V2_1) else {
        return;
    };
    let run = |id: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip2/wasm",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, id, "/demo-app.wasm", "sleep", "600"]);
        containerd.ctr_ok(&args);
        wait_for_status(&containerd, id, "RUNNING")
    };
    let container_cgroup = |controller: &str, id: &str| {
        std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&containerd.namespace)
            .join(id)
    };
    let cgroup_of = |pid: u32, controller: &str| {
        let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        table
            .lines()
            .find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, names, path) = (fields.next()?, fields.next()?, fields.next()?);
                names
                    .split(',')
                    .any(|n| n == controller)
                    .then(|| path.to_owned())
            })
            .unwrap_or_else(|| panic!("no {controller} line in /proc/{pid}/cgroup:\n{table}"))
    };

    // As a container made by a wasmcell that joined every hierarchy leaves it.
    let earlier = container_cgroup("freezer", "plain");
    std::fs::create_dir_all(&earlier).unwrap();
    let plain = run("plain", &[]);
    let own = format!("/{}/plain", containerd.namespace);
    for joined in ["memory", "pids", "cpu", "cpuacct", "blkio"] {
        assert_eq!(cgroup_of(plain, joined), own, "{joined}");
    }
    for not_joined in ["cpuset", "devices", "freezer"] {
        assert_ne!(cgroup_of(plain, not_joined), own, "{not_joined}");
    }
    assert!(!container_cgroup("cpuset", "plain").exists());
    assert!(!container_cgroup("devices", "plain").exists());

    let pinned = run("pinned", &["--cpuset-cpus", "0"]);
    let own = format!("/{}/pinned", containerd.namespace);
    assert_eq!(cgroup_of(pinned, "cpuset"), own);
    assert_eq!(cgroup_of(pinned, "memory"), own);
    let cpus = std::fs::read_to_string(container_cgroup("cpuset", "pinned").join("cpuset.cpus"));
    assert_eq!(cpus.unwrap().trim(), "0");
    let status = std::fs::read_to_string(format!("/proc/{pinned}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Cpus_allowed_list:", "0"])),
        "the pinned guest must run on CPU 0 only:\n{status}"
    );

    for id in ["plain", "pinned"] {
        delete_stopped_after_kill(&containerd, id);
        for controller in ["cpuset", "memory", "pids", "freezer", "devices"] {
            let cgroup = container_cgroup(controller, id);
            assert!(!cgroup.exists(), "{} left behind", cgroup.display());
        }
    }
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn twenty_containers_at_once(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    // One run first, so the twenty measure starting containers rather than twenty compiles.
    let warm = run_demo(&containerd, IMAGE, "warm", &[], &["echo", "warm"], b"");
    assert_eq!(text(&warm.stdout), "warm\n");
    let children: Vec<_> = (0..20)
        .map(|i| {
            let id = format!("many-{i}");
            let word = format!("container-{i}");
            let child = containerd.ctr_command_piped(&[
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                "--platform",
                "wasip2/wasm",
                IMAGE,
                &id,
                "/demo-app.wasm",
                "echo",
                &word,
            ]);
            (word, child)
        })
        .collect();
    for (word, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            text(&out.stdout),
            format!("{word}\n"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

fn bad_input_is_refused_with_a_clear_message(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let missing = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "missing",
        "/no/such.wasm",
    ]);
    assert_ne!(missing.status.code(), Some(0));
    let err = text(&missing.stderr);
    assert!(
        err.contains("\"/no/such.wasm\"") && err.contains("does not exist"),
        "{err}"
    );

    // A terminal needs a pty on ctr's side; `script` gives it one.
    let tty = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} --address {} --namespace {} run --rm -t --runtime {RUNTIME} --platform wasip2/wasm {IMAGE} tty /demo-app.wasm echo",
            containerd.ctr_path().display(),
            containerd.address().display(),
            containerd.namespace
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = format!("{}{}", text(&tty.stdout), text(&tty.stderr));
    assert!(
        all.contains("terminals are not supported by wasmcell"),
        "{all}"
    );

    // exec is refused, promptly.
    containerd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "execme",
        "/demo-app.wasm",
        "sleep",
        "600",
    ]);
    wait_for_status(&containerd, "execme", "RUNNING");
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "x",
        "execme",
        "/demo-app.wasm",
        "echo",
    ]);
    assert_ne!(exec.status.code(), Some(0));
    assert!(
        text(&exec.stderr).contains("exec is not supported by wasmcell"),
        "{}",
        text(&exec.stderr)
    );
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "execme"]);
}

/// The cold start runs Winch's baseline code compiled by the helper, the shim has Cranelift's
/// code made in the background, and the next start maps it; corrupt entries are recompiled.
fn second_run_uses_the_compile_cache_and_survives_corruption(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    let first = run_demo(&containerd, IMAGE, "c1", &[], &["echo", "one"], b"");
    assert_eq!(text(&first.stdout), "one\n");
    let log = containerd.log();
    assert!(
        log.contains(
            "container c1: program loaded (compiled by a helper process, then mapped; baseline \
             code until the optimized code is ready; confined in "
        ),
        "the first run starts on baseline code the compile helper made"
    );
    wait_for_optimized_code(&containerd);
    runs_preloaded(
        &containerd,
        "c2",
        "two",
        "the second run's server comes from the starter, which has mapped and checked the \
         optimized code since it was compiled",
    );

    // Corrupt every cached artifact: the run still succeeds, recompiling.
    for entry in walk(&containerd.cache_dir()) {
        if entry.extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(&entry).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&entry, bytes).unwrap();
        }
    }
    let third = run_demo(&containerd, IMAGE, "c3", &[], &["echo", "three"], b"");
    assert_eq!(text(&third.stdout), "three\n", "{}", text(&third.stderr));
    assert!(
        containerd.log().contains(
            "container c3: program loaded (cache entry corrupt, recompiled; baseline code until \
             the optimized code is ready; confined in "
        ),
        "{}",
        containerd.log()
    );
    wait_for_optimized_code(&containerd);
    runs_preloaded(
        &containerd,
        "c4",
        "four",
        "the background compile replaced the corrupt optimized entry, and the starter dropped \
         the changed one and preloaded its replacement",
    );

    // The whole cache removed under the running starter: its engine makes the directories
    // again, so the cold start's stash for the optimizer, and then the optimized code, land.
    std::fs::remove_dir_all(containerd.cache_dir()).unwrap();
    let fifth = run_demo(&containerd, IMAGE, "c5", &[], &["echo", "five"], b"");
    assert_eq!(text(&fifth.stdout), "five\n", "{}", text(&fifth.stderr));
    let c5 = load_outcome(&containerd, "c5");
    assert!(
        c5.starts_with("compiled by a helper process, then mapped; baseline code until"),
        "{c5}"
    );
    assert!(
        !containerd.log().contains("container c5: cannot store"),
        "{}",
        containerd.log()
    );
    wait_for_optimized_code(&containerd);
    runs_preloaded(
        &containerd,
        "c6",
        "six",
        "after the cache was emptied, the optimized code is stored and preloaded again",
    );
}

/// A spare handed a container loads what the cache received since it was forked, as the
/// starter does before a fork, and its guests find the program preloaded. A program compiled
/// while a spare waited (here: the cache emptied, then `wasmcell import`) once left that
/// spare's guests building engines of their own: the program's file took a descriptor number
/// where a guest's handshake pipe is put, so the spare dropped its preloaded engine for good.
fn a_spare_preloads_what_was_compiled_after_it_was_forked(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    let first = run_demo(&containerd, IMAGE, "p1", &[], &["echo", "one"], b"");
    assert!(first.status.success(), "{}", text(&first.stderr));
    new_starter(&containerd, None);
    wait_for_optimized_code(&containerd);
    let preloaded = |id: &str| {
        let outcome = load_outcome(&containerd, id);
        outcome.starts_with("cache hit; confined in ")
            && outcome.ends_with("; preloaded by the starter")
    };
    run_demo_detached(&containerd, "p2", &["sleep", "600"]);
    assert!(preloaded("p2"), "{}", load_outcome(&containerd, "p2"));
    delete_stopped_after_kill(&containerd, "p2");
    let [spare] = wait_for_spares(&containerd)[..] else {
        panic!("one spare: {:?}", spares_of(&containerd));
    };

    // The cache emptied and filled again ahead of the next run, as the bench does before each
    // first run after `wasmcell import`.
    std::fs::remove_dir_all(containerd.cache_dir()).unwrap();
    let import = std::process::Command::new(wasmcell_tests::wasmcell_bin())
        .arg("import")
        .args(containerd.wasmcell_options())
        .arg(demo_tar("demo-app-image.tar"))
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", text(&import.stderr));
    assert!(
        text(&import.stdout).contains("compiled ahead"),
        "{}",
        text(&import.stdout)
    );

    let guest = run_demo_detached(&containerd, "p3", &["sleep", "600"]);
    assert_eq!(parent_of(guest), Some(spare), "the spare serves p3");
    assert!(
        preloaded("p3"),
        "the spare preloaded the program compiled after it was forked: {}",
        load_outcome(&containerd, "p3")
    );
    delete_stopped_after_kill(&containerd, "p3");
}

/// Runs the demo's `echo WORD` as container `id` and checks that its program came from the
/// starter's preloaded engine (`why` says why it should have).
fn runs_preloaded(containerd: &Containerd, id: &str, word: &str, why: &str) {
    let out = run_demo(containerd, IMAGE, id, &[], &["echo", word], b"");
    assert_eq!(
        text(&out.stdout),
        format!("{word}\n"),
        "{}",
        text(&out.stderr)
    );
    let outcome = load_outcome(containerd, id);
    assert!(
        outcome.starts_with("cache hit; confined in ")
            && outcome.ends_with("; preloaded by the starter"),
        "{why}: {outcome}"
    );
}

/// How the shim log says container `id`'s program was loaded (inside the parentheses; the log
/// line may go on after them).
fn load_outcome(containerd: &Containerd, id: &str) -> String {
    let marker = format!("container {id}: program loaded (");
    containerd
        .log()
        .lines()
        .find_map(|l| {
            l.split_once(marker.as_str())
                .map(|(_, rest)| rest.to_owned())
        })
        .and_then(|rest| rest.rsplit_once(')').map(|(outcome, _)| outcome.to_owned()))
        .unwrap_or_else(|| panic!("no load outcome for {id} in the shim log"))
}

/// Waits until the background optimizer has compiled every wasm copy a cold start left in the
/// cache (and removed the copies), and its entries verify: two code entries per program.
pub(crate) fn wait_for_optimized_code(containerd: &Containerd) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let files = walk(&containerd.cache_dir());
        let copies: Vec<_> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        let optimizer_running = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|p| {
                std::fs::read(p.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).contains("__wasmcell-optimize")
                        && String::from_utf8_lossy(&c)
                            .contains(&*containerd.cache_dir().to_string_lossy())
                })
            });
        if copies.is_empty() && !optimizer_running {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background optimizer did not finish in 60 s: {copies:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn network_is_private_unless_host_networking_is_asked_for(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Answer at most one connection: the --net-host run.
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::Write as _;
            let _ = stream.write_all(b"hello from the host\n");
        }
    });
    let target = format!("127.0.0.1:{port}");
    let private = run_demo(&containerd, IMAGE, "netns", &[], &["connect", &target], b"");
    assert_ne!(
        private.status.code(),
        Some(0),
        "a private netns must not reach the host's loopback"
    );
    let host = run_demo(
        &containerd,
        IMAGE,
        "nethost",
        &["--net-host"],
        &["connect", &target],
        b"",
    );
    assert_eq!(
        text(&host.stdout),
        "hello from the host\n",
        "{}",
        text(&host.stderr)
    );
    server.join().unwrap();
}

fn memory_limit_stops_a_growing_guest(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    assert_memory_limit_enforced(&|id, extra, args| {
        run_demo(&containerd, IMAGE, id, extra, args, b"")
    });
}

fn a_tampered_wasm_layer_is_refused(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let archive = wasmcell_oci::read_archive(
        &demo_tar("demo-app-wasm-layer.tar"),
        wasmcell_oci::ReadLimits::default(),
    )
    .unwrap();
    let digest = archive.images[0]
        .wasm_layer()
        .unwrap()
        .descriptor
        .digest()
        .to_string();
    let blob = containerd
        .dir
        .join("root/io.containerd.content.v1.content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = run_demo(
        &containerd,
        WASM_LAYER_IMAGE,
        "tampered",
        &[],
        &["echo", "x"],
        b"",
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("digest mismatch") && err.contains(&digest),
        "{err}"
    );
}

fn a_guest_survives_a_containerd_restart(version: Version) {
    let Some(mut containerd) = containerd_with_demo(version) else {
        return;
    };
    let pid = run_demo_detached(&containerd, "survivor", &["sleep", "600"]);
    containerd.restart().unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the guest died with containerd"
    );
    assert_eq!(wait_for_status(&containerd, "survivor", "RUNNING"), pid);
    containerd.ctr_ok(&["task", "kill", "survivor"]);
    wait_for_status(&containerd, "survivor", "STOPPED");
    let deleted = containerd.ctr(&["task", "delete", "survivor"]);
    let all = format!("{}{}", text(&deleted.stdout), text(&deleted.stderr));
    assert!(all.contains("143") || deleted.status.success(), "{all}");
    containerd.ctr_ok(&["container", "delete", "survivor"]);
}

fn programs_and_links_cannot_escape_the_rootfs(version: Version) {
    use wasmcell_tests::image::{Entry, write_image_tar};
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let wasm = wasmcell_tests::demo_component();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let temp = tempfile::tempdir().unwrap();
    let tar = temp.path().join("escape.tar");
    let name = "localhost/test/escape:latest";
    write_image_tar(
        &tar,
        name,
        &[
            ("app.wasm", Entry::File(wasm, 0o755)),
            (
                "script.sh",
                Entry::File(b"#!/bin/sh\necho not wasm\n".to_vec(), 0o755),
            ),
            ("abs-link", Entry::Symlink(secret.display().to_string())),
            (
                "up-link",
                Entry::Symlink(format!("../../../../../../..{}", secret.display())),
            ),
            (
                "prog-link",
                Entry::Symlink(format!("../../../../..{}", secret.display())),
            ),
        ],
    );
    containerd.ctr_ok(&["image", "import", "--all-platforms", tar.to_str().unwrap()]);
    let run = |id: &str, args: &[&str]| {
        let mut full = vec![
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip2/wasm",
            name,
            id,
        ];
        full.extend(args);
        containerd.ctr(&full)
    };
    for link in ["/abs-link", "/up-link"] {
        let out = run("escape", &["/app.wasm", "cat", link]);
        assert!(
            !text(&out.stdout).contains("host secret"),
            "{link} leaked the host file"
        );
        assert_ne!(out.status.code(), Some(0), "{link}");
    }
    let out = run("notwasm", &["/script.sh"]);
    let err = text(&out.stderr);
    assert!(err.contains("\"/script.sh\" is not a wasm binary"), "{err}");
    let out = run("proglink", &["/prog-link"]);
    assert!(text(&out.stderr).contains("does not exist in the container's root filesystem"));
}

/// `wasmcell import` leaves the program compiled in the shim's cache: found as a layer of an
/// artifact or as the entrypoint's file in an image's filesystem (the same wasm, so the same
/// entry), so the first container of either is a cache hit; `--no-compile` stores only.
fn wasmcell_import_compiles_ahead(version: Version) {
    let Some(containerd) = containerd_with_demo_images(version, &[], true) else {
        return;
    };
    let import = |tar: &str, extra: &[&str]| {
        let out = std::process::Command::new(wasmcell_tests::wasmcell_bin())
            .arg("import")
            .args(containerd.wasmcell_options())
            .args(extra)
            .arg(demo_tar(tar))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let cached = || {
        walk(&containerd.cache_dir())
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .count()
    };
    let out = import("demo-app-wasm-layer.tar", &["--no-compile"]);
    assert!(!out.contains("compiled"), "{out}");
    assert_eq!(cached(), 0, "--no-compile compiled");
    let out = import("demo-app-artifact.tar", &[]);
    assert!(out.contains("compiled ahead in"), "{out}");
    assert_eq!(cached(), 1);
    let out = import("demo-app-image.tar", &[]);
    assert!(out.contains("already compiled"), "{out}");
    for (image, id) in [
        (
            "localhost/wasmcell/demo-app-artifact:latest",
            "ahead-artifact",
        ),
        (IMAGE, "ahead-image"),
    ] {
        let out = run_demo(&containerd, image, id, &[], &["echo", "ahead"], b"");
        assert_eq!(text(&out.stdout), "ahead\n", "{}", text(&out.stderr));
        let log = containerd.log();
        assert!(
            log.contains(&format!("container {id}: program loaded (cache hit;")),
            "{id} compiled: {log}"
        );
    }
}

fn artifact_runs_after_wasmcell_import(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    wasmcell_import(&containerd, &demo_tar("demo-app-artifact.tar"));
    let image = "localhost/wasmcell/demo-app-artifact:latest";
    let out = run_demo(
        &containerd,
        image,
        "artifact",
        &[],
        &["echo", "from an artifact"],
        b"",
    );
    assert_eq!(
        text(&out.stdout),
        "from an artifact\n",
        "{}",
        text(&out.stderr)
    );
    let out = run_demo(
        &containerd,
        image,
        "artifact-exit",
        &[],
        &["exit", "5"],
        b"",
    );
    assert_eq!(out.status.code(), Some(5));
    let out = run_demo(&containerd, image, "artifact-trap", &[], &["trap"], b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        text(&out.stderr)
    );
    let out = run_demo(
        &containerd,
        image,
        "artifact-env",
        &["--env", "A=1"],
        &["env"],
        b"",
    );
    assert!(text(&out.stdout).lines().any(|l| l == "A=1"));
    let out = run_demo(
        &containerd,
        image,
        "artifact-stdin",
        &[],
        &["cat", "-"],
        b"piped\n",
    );
    assert_eq!(text(&out.stdout), "piped\n", "{}", text(&out.stderr));
}

/// Artifacts as they are found in registries, with a config that is not a wasm config: an
/// OCI 1.1 artifact with the empty config and one with a CRD as its config. `wasmcell import`
/// takes each with a warning, and each runs, validated from the binary alone, with the
/// warning, naming the config and the fix, in the shim's log.
fn artifacts_with_foreign_configs_run_with_one_warning(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let wasm = wasmcell_tests::demo_component();
    let dir = tempfile::tempdir().unwrap();
    let crd = b"apiVersion: core.oam.dev/v1beta2\nkind: Component\nmetadata:\n  name: demo\n";
    for (name, config, media_type) in [
        (
            "localhost/found/empty-config:latest",
            &b"{}"[..],
            "application/vnd.oci.empty.v1+json",
        ),
        (
            "localhost/found/crd-config:latest",
            &crd[..],
            "application/vnd.oam.dev.component.v1+yaml",
        ),
    ] {
        let tar = dir.path().join("found.tar");
        wasmcell_tests::image::write_found_artifact_tar(&tar, name, &wasm, config, media_type);
        let imported = wasmcell_import(&containerd, &tar);
        let warning = format!("its config ({media_type}) is not a wasm config");
        assert!(imported.contains(&warning), "{name}: {imported}");
        let out = run_demo(&containerd, name, "found", &[], &["echo", "found"], b"");
        assert_eq!(
            text(&out.stdout),
            "found\n",
            "{name}: {}",
            text(&out.stderr)
        );
        let log = containerd.log();
        assert!(
            log.contains(&warning) && log.contains("wasmcell package --format artifact"),
            "{name}: no warning in the shim's log:\n{log}"
        );
    }
}

/// A WASI preview 1 module (demo-app built for wasm32-wasip1 by this test), packaged as a
/// classic image with `wasmcell package`, runs like the component.
fn preview1_module_runs(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let module = temp.path().join("demo-p1.wasm");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let source = wasmcell_tests::workspace_root().join("demo-app/src/main.rs");
    let built = std::process::Command::new(rustc)
        .args(["--edition", "2024", "--target", "wasm32-wasip1", "-O", "-o"])
        .arg(&module)
        .arg(&source)
        .output()
        .unwrap();
    assert!(built.status.success(), "rustc: {}", text(&built.stderr));
    let tar = temp.path().join("p1.tar");
    let name = "localhost/test/demo-p1:latest";
    package_and_import(&containerd, &module, name, &tar);
    let run = |id: &str, args: &[&str]| {
        let mut full = vec![
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip1/wasm",
            name,
            id,
            "/demo-p1.wasm",
        ];
        full.extend(args);
        containerd.ctr(&full)
    };
    let out = run("p1-echo", &["echo", "from a module"]);
    assert_eq!(
        text(&out.stdout),
        "from a module\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(run("p1-exit", &["exit", "7"]).status.code(), Some(7));
    let out = run("p1-ls", &["ls", "/"]);
    assert_eq!(
        text(&out.stdout),
        "demo-p1.wasm\ndev\nrun\n",
        "{}",
        text(&out.stderr)
    );
}

fn bind_mounts_appear_at_their_destination_honouring_read_only(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    assert_bind_mounts_honoured(&|id, extra, args| {
        run_demo(&containerd, IMAGE, id, extra, args, b"")
    });
}

/// Runs a container: `(id, ctr_run_flags, program_args)` → its output.
pub(crate) type RunWith<'a> = dyn Fn(&str, &[&str], &[&str]) -> Output + 'a;

/// `--memory-limit 64 MiB` as a program with demo-app's `alloc MIB` sees it through
/// `run(id, ctr_run_flags, args)`: growing to 256 MiB ends the task with 137 and says why;
/// 16 MiB fits.
pub(crate) fn assert_memory_limit_enforced(run: &RunWith<'_>) {
    let limit = (64u64 << 20).to_string();
    let out = run("memlimit", &["--memory-limit", &limit], &["alloc", "256"]);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exceeded its memory limit"),
        "{}",
        text(&out.stderr)
    );
    let fits = run("memok", &["--memory-limit", &limit], &["alloc", "16"]);
    assert_eq!(fits.status.code(), Some(0), "{}", text(&fits.stderr));
}

/// A bind mount at `/data` as a program with demo-app's `cat FILE` and `write FILE TEXT` sees
/// it through `run(id, ctr_run_flags, args)`: readable, and writable only when mounted `rw`.
pub(crate) fn assert_bind_mounts_honoured(run: &RunWith<'_>) {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("greeting.txt"), "from the host\n").unwrap();
    let src = host.path().display().to_string();
    let ro = format!("type=bind,src={src},dst=/data,options=rbind:ro");
    let rw = format!("type=bind,src={src},dst=/data,options=rbind:rw");
    let out = run(
        "mount-read",
        &["--mount", &ro],
        &["cat", "/data/greeting.txt"],
    );
    assert_eq!(
        text(&out.stdout),
        "from the host\n",
        "{}",
        text(&out.stderr)
    );
    let out = run(
        "mount-ro",
        &["--mount", &ro],
        &["write", "/data/new.txt", "x"],
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "a read-only mount must refuse writes"
    );
    assert!(!host.path().join("new.txt").exists());
    let out = run(
        "mount-rw",
        &["--mount", &rw],
        &["write", "/data/new.txt", "written"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(host.path().join("new.txt")).unwrap(),
        "written"
    );
}

fn a_listening_guest_answers_on_the_host_network(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    containerd.ctr_ok(&[
        "run",
        "-d",
        "--net-host",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "listener",
        "/demo-app.wasm",
        "listen",
        &port.to_string(),
    ]);
    wait_for_status(&containerd, "listener", "RUNNING");
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut line = String::new();
            use std::io::BufRead as _;
            let _ = std::io::BufReader::new(stream).read_line(&mut line);
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the guest never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.starts_with("hello from demo-app listener"), "{line:?}");
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "listener"]);
}

pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What each of `pid`'s fds refers to, by fd number.
fn fd_targets(pid: u32) -> Vec<(u32, String)> {
    let mut targets: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|entry| {
                    let fd = entry.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(entry.path()).ok()?;
                    Some((fd, target.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    targets
}

/// The command line of `pid`, NULs as spaces.
fn cmdline_of(pid: u32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\0', " ")
}

/// The children of `pid` whose command line contains `needle`.
pub(crate) fn children_with(pid: u32, needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid) && cmdline_of(p).contains(needle))
        .collect()
}

/// A container outside any pod has a shim server of its own, which will start no other guest:
/// its launcher, forked in a new PID namespace, becomes the guest, so the guest is the server's
/// only child from the start (two shim-side processes per container, as runc has), PID 1 of a
/// namespace that is not the server's, and still stops on SIGTERM. A lone container whose spec
/// joins another PID namespace (here the first guest's) is not what that launcher can become:
/// its guest is exec'd into the namespace asked for. Under `WASMCELL_GUEST_START=launcher` the
/// launcher clones the guest instead, and the server lets it go once the guest runs.
fn a_lone_containers_launcher_becomes_its_guest(version: Version) {
    let Some(mut containerd) = containerd_with_demo(version) else {
        return;
    };
    let guest = run_demo_detached(&containerd, "alone", &["sleep", "600"]);
    let shim = parent_of(guest).expect("the guest's parent");
    let children = children_with(shim, "");
    assert_eq!(
        children,
        [guest],
        "shim {shim}'s children besides its guest {guest}: {:?}",
        children.iter().map(|&p| cmdline_of(p)).collect::<Vec<_>>()
    );
    assert!(
        cmdline_of(guest).contains("__wasmcell-guest"),
        "the guest's command line: {:?}",
        cmdline_of(guest)
    );
    assert_eq!(
        innermost_pid(guest),
        Some(1),
        "the guest is PID 1 of its namespace"
    );
    let pid_namespace = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    assert_ne!(pid_namespace(guest), pid_namespace(shim));

    let join = format!("pid:/proc/{guest}/ns/pid");
    let mut args = vec!["run", "-d", "--with-ns", &join];
    args.extend(&detached_demo_args("joins", &["sleep", "600"])[2..]);
    containerd.ctr_ok(&args);
    let joined = wait_for_status(&containerd, "joins", "RUNNING");
    assert_eq!(pid_namespace(joined), pid_namespace(guest));
    assert_ne!(innermost_pid(joined), Some(1));
    assert!(
        cmdline_of(joined).contains("__wasmcell-guest"),
        "the exec'd guest's command line: {:?}",
        cmdline_of(joined)
    );

    let log = containerd.log();
    let became = |id: &str| log.contains(&format!("container {id}: its launcher became its guest"));
    assert!(became("alone"), "no word of alone's launcher in:\n{log}");
    assert!(!became("joins"), "joins was exec'd, not its launcher");

    delete_stopped_after_kill(&containerd, "joins");
    containerd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "alone"]);
    wait_for_status(&containerd, "alone", "STOPPED");
    containerd.ctr_ok(&["task", "delete", "alone"]);
    containerd.ctr_ok(&["container", "delete", "alone"]);

    containerd
        .restart_with_env("WASMCELL_GUEST_START", "launcher")
        .expect("containerd restarts");
    let cloned = run_demo_detached(&containerd, "cloned", &["sleep", "600"]);
    let shim = parent_of(cloned).expect("the cloned guest's parent");
    assert_eq!(innermost_pid(cloned), Some(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while children_with(shim, "") != [cloned] {
        assert!(
            Instant::now() < deadline,
            "shim {shim} kept its launcher: {:?}",
            children_with(shim, "")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !containerd
            .log()
            .contains("container cloned: its launcher became its guest"),
        "the launcher cloned the guest under WASMCELL_GUEST_START=launcher"
    );
    delete_stopped_after_kill(&containerd, "cloned");
}

/// Process `pid`'s pid in its innermost PID namespace (the last `NSpid` field).
fn innermost_pid(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// A container's cgroup (`/NAMESPACE/ID` in every hierarchy) is removed at delete, and a test
/// instance's namespace cgroup when the instance is dropped: nothing is left on the host.
fn an_instance_leaves_no_cgroup_behind(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let namespace = containerd.namespace.clone();
    run_demo_detached(&containerd, "grouped-cg", &["sleep", "600"]);
    let in_trees = |name: &str| -> Vec<std::path::PathBuf> {
        wasmcell_tests::containerd::cgroup_roots()
            .into_iter()
            .map(|root| root.join(name))
            .filter(|p| p.is_dir())
            .collect()
    };
    let container = format!("{namespace}/grouped-cg");
    assert!(
        !in_trees(&container).is_empty(),
        "the running container's cgroup {container}"
    );
    delete_stopped_after_kill(&containerd, "grouped-cg");
    assert_eq!(in_trees(&container), Vec::<std::path::PathBuf>::new());
    drop(containerd);
    assert_eq!(in_trees(&namespace), Vec::<std::path::PathBuf>::new());
}

/// A shared shim forks its guests from its single-threaded launcher: a guest is the shim's
/// child, shows `__wasmcell-guest PLAN` in `ps`, and holds none of the shim's fds (no socket,
/// no log FIFO). The shim server, itself forked by `start`, shows a server's command line
/// (`-socket`, not `start`) and keeps containerd's environment. With the launcher SIGKILLed,
/// the shim falls back to exec'ing guests: the running guest is untouched and new containers
/// still run.
fn guests_come_from_the_launcher_and_outlive_it(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    std::fs::write(containerd.shim_config(), "group = \"namespace\"\n").unwrap();
    let first = run_demo_detached(&containerd, "launched", &["sleep", "600"]);
    let shim = parent_of(first).expect("the guest's parent");
    let launchers = children_with(shim, "__wasmcell-zygote");
    assert_eq!(launchers.len(), 1, "one launcher under shim {shim}");
    let shim_cmdline = cmdline_of(shim);
    assert!(
        shim_cmdline.contains(" -socket unix://")
            && shim_cmdline.contains(" -namespace ")
            && !shim_cmdline.split(' ').any(|arg| arg == "start"),
        "the shim server's command line: {shim_cmdline:?}"
    );
    let environ = std::fs::read(format!("/proc/{shim}/environ")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&environ).contains("TTRPC_ADDRESS="),
        "the shim server's environment: {:?}",
        String::from_utf8_lossy(&environ)
    );
    let launcher_cmdline = cmdline_of(launchers[0]);
    assert!(
        !launcher_cmdline.contains("-socket"),
        "the launcher's command line: {launcher_cmdline:?}"
    );
    let guest_cmdline = cmdline_of(first);
    assert!(
        guest_cmdline.contains("__wasmcell-guest") && guest_cmdline.contains("launched"),
        "the guest's command line: {guest_cmdline:?}"
    );
    let fds_of = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|target| target.display().to_string())
            .collect()
    };
    let (guest_fds, shim_fds) = (fds_of(first), fds_of(shim));
    let shared: Vec<&String> = guest_fds
        .iter()
        .filter(|t| t.starts_with("socket:") && shim_fds.contains(t) || t.ends_with("/log"))
        .collect();
    assert!(
        shared.is_empty(),
        "the guest holds the shim's {shared:?} (guest: {guest_fds:?})"
    );
    nix_kill(launchers[0]);
    let out = run_demo(
        &containerd,
        IMAGE,
        "after-launcher",
        &[],
        &["echo", "exec'd"],
        b"",
    );
    assert_eq!(text(&out.stdout), "exec'd\n", "{}", text(&out.stderr));
    let second = run_demo_detached(&containerd, "exec-sleeper", &["sleep", "600"]);
    assert_eq!(parent_of(second), Some(shim), "the same shared shim");
    assert!(
        std::path::Path::new(&format!("/proc/{first}")).exists(),
        "the first guest outlives its launcher"
    );
    for id in ["launched", "exec-sleeper"] {
        delete_stopped_after_kill(&containerd, id);
    }
}

/// The starters serving `containerd` (their command line names its socket).
fn starters_of(containerd: &Containerd) -> Vec<u32> {
    let address = containerd.address().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let cmdline = cmdline_of(p);
            cmdline.starts_with("wasmcell-shim-starter ") && cmdline.contains(&address)
        })
        .collect()
}

/// The spare servers waiting at `containerd`'s starter (their command line names its socket).
pub(crate) fn spares_of(containerd: &Containerd) -> Vec<u32> {
    let title = format!("wasmcell-shim-spare {}", containerd.address().display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| cmdline_of(p).trim_end() == title)
        .collect()
}

/// Waits up to 20 s until `containerd`'s starter has a spare server; returns them.
pub(crate) fn wait_for_spares(containerd: &Containerd) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spares = spares_of(containerd);
        if !spares.is_empty() {
            return spares;
        }
        assert!(Instant::now() < deadline, "no spare server came");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `containerd` has exactly one starter other than `old`, and returns it.
pub(crate) fn new_starter(containerd: &Containerd, old: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<u32> = starters_of(containerd)
            .into_iter()
            .filter(|&p| Some(p) != old)
            .collect();
        if let [one] = now[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no single new starter: {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the first pod's server (spawned by the front), one starter per containerd — orphaned,
/// not that server's child — forks the later pods' servers: such a server is the
/// starter's child in a session of its own, shows a server's command line, has containerd's
/// environment and the grouping, and is in containerd's cgroups. Garbage on the starter's
/// socket is declined and leaves it serving; a front in another namespace is declined and the
/// starter retires. A gone or SIGKILLed starter costs nothing but speed: the next pod's server
/// is spawned and forks a new starter, and running pods are untouched.
fn later_servers_are_forked_by_the_starter_which_can_die(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let out = run_demo(&containerd, IMAGE, "first", &[], &["echo", "first"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let starter = new_starter(&containerd, None);
    let adopter = parent_of(starter).expect("the starter's parent");
    assert!(
        !cmdline_of(adopter).contains("containerd-shim"),
        "the starter is no shim's child: {}",
        cmdline_of(adopter)
    );
    let guest = run_demo_detached(&containerd, "forked", &["sleep", "600"]);
    let server = parent_of(guest).expect("the guest's parent");
    assert_eq!(parent_of(server), Some(starter), "forked by the starter");
    assert_eq!(session_of(server), Some(server), "in a session of its own");
    assert!(
        cmdline_of(server).contains(" -socket "),
        "{}",
        cmdline_of(server)
    );
    let environ = std::fs::read(format!("/proc/{server}/environ")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("WASMCELL_CONFIG=") && environ.contains("WASMCELL_SHIM_GROUP=pod"),
        "containerd's environment and the grouping: {environ}"
    );
    let cgroup = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok();
    assert_eq!(
        cgroup(server),
        cgroup(containerd.pid().expect("containerd runs"))
    );

    // Anything but a well-formed server request with three fds is declined; the starter stays.
    let socket = wasmcell_shim_front::starter::starter_socket(
        &containerd.address().display().to_string(),
        &wasmcell_tests::containerd::shim_bin_dir().join("containerd-shim-wasmcell-v1-core"),
    )
    .expect("the core's metadata");
    for garbage in [&b""[..], b"\xff\xff\xff\x7f", b"\x04\0\0\0abcd"] {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.write_all(garbage).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert_eq!(reply, b"d", "declined: {garbage:?}");
    }
    assert_eq!(
        starters_of(&containerd),
        vec![starter],
        "it survives garbage"
    );

    // A front in another namespace (its containerd moved) is declined, and the starter retires.
    let foreign = Command::new("unshare")
        .args(["--uts", "perl", "-MIO::Socket::UNIX", "-e"])
        .arg(concat!(
            "my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die $!; ",
            "$s->recv(my $r, 1); print $r"
        ))
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(foreign.stdout, b"d", "{}", text(&foreign.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while starters_of(&containerd).contains(&starter) {
        assert!(Instant::now() < deadline, "the starter did not retire");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run_demo(
        &containerd,
        IMAGE,
        "after-retiring",
        &[],
        &["echo", "ok"],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let starter = new_starter(&containerd, Some(starter));

    nix_kill(starter);
    let out = run_demo(&containerd, IMAGE, "after-kill", &[], &["echo", "ok"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok");
    let replacement = new_starter(&containerd, Some(starter));
    let guest_again = run_demo_detached(&containerd, "forked-again", &["sleep", "600"]);
    let server_again = parent_of(guest_again).expect("the guest's parent");
    assert_eq!(parent_of(server_again), Some(replacement));
    assert!(
        std::path::Path::new(&format!("/proc/{guest}")).exists(),
        "running guests outlive a starter"
    );
    for id in ["forked", "forked-again"] {
        delete_stopped_after_kill(&containerd, id);
    }
}

/// A lone container's server, once its container is deleted, waits at the starter as a spare
/// (its child, titled `wasmcell-shim-spare ADDRESS`, holding none of the container's fds or
/// directories) and serves the next new container — with that container's command line, its
/// output, its log lines reaching containerd, and as many fds of its own as it had serving the
/// first. With
/// `WASMCELL_SERVER_REUSE=off` in containerd's environment a server exits with its container.
fn a_lone_containers_server_waits_as_a_spare_for_the_next(version: Version) {
    let Some(mut containerd) = containerd_with_demo(version) else {
        return;
    };
    let out = run_demo(&containerd, IMAGE, "warm", &[], &["echo", "warm"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let starter = new_starter(&containerd, None);
    let wait_until_spare = |server: u32| {
        assert_eq!(
            wait_for_spares(&containerd),
            [server],
            "server {server} is the spare"
        );
    };

    let first = run_demo_detached(&containerd, "spare-1", &["sleep", "600"]);
    let server = parent_of(first).expect("the guest's parent");
    assert_eq!(parent_of(server), Some(starter), "forked by the starter");
    assert!(
        cmdline_of(server).contains(" -id spare-1 "),
        "{}",
        cmdline_of(server)
    );
    // The preloaded programs' files are left out: which programs a server has loaded follows
    // the cache (a spare refreshes them when it is handed a container, and the optimized
    // compile the first run started may land in between), not the containers it served.
    let cache = containerd.cache_dir();
    let own_fds = |pid: u32| -> Vec<(u32, String)> {
        fd_targets(pid)
            .into_iter()
            .filter(|(_, target)| !std::path::Path::new(target).starts_with(&cache))
            .collect()
    };
    let serving_fds = own_fds(server);
    delete_stopped_after_kill(&containerd, "spare-1");
    wait_until_spare(server);
    let code_as_spare = resident_code_kib(server);
    // Left waiting, it lets go of the code its last container ran, as an idle server does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while resident_code_kib(server) > SPARE_CODE_KIB {
        assert!(
            Instant::now() < deadline,
            "spare {server} still maps {} KiB of the binary's code ({code_as_spare} KiB when it \
             began to wait)",
            resident_code_kib(server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        parent_of(server),
        Some(starter),
        "a spare waits at its starter"
    );
    let cwd = std::fs::read_link(format!("/proc/{server}/cwd")).unwrap();
    assert_eq!(cwd, std::path::Path::new("/"), "a spare leaves the bundle");
    let held: Vec<_> = std::fs::read_dir(format!("/proc/{server}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.starts_with(&containerd.dir))
        .collect();
    assert!(held.is_empty(), "the spare holds {held:?}");

    let second = run_demo_detached(&containerd, "spare-2", &["sleep", "600"]);
    assert_eq!(
        parent_of(second),
        Some(server),
        "the spare serves the next container"
    );
    assert!(
        cmdline_of(server).contains(" -id spare-2 "),
        "{}",
        cmdline_of(server)
    );
    let serving_again = own_fds(server);
    assert_eq!(
        serving_again.len(),
        serving_fds.len(),
        "the same fds as serving the first: {serving_again:#?} against {serving_fds:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containerd.log().contains("container spare-2 created") {
        assert!(
            Instant::now() < deadline,
            "the spare's log lines do not reach containerd:\n{}",
            containerd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    delete_stopped_after_kill(&containerd, "spare-2");
    wait_until_spare(server);
    // Its output reaches the client, through the third container's streams.
    let out = run_demo(&containerd, IMAGE, "spare-3", &[], &["echo", "third"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "third");
    wait_until_spare(server);

    // Turned off: a server exits with its container.
    containerd
        .restart_with_env("WASMCELL_SERVER_REUSE", "off")
        .expect("containerd restarts");
    let guest = run_demo_detached(&containerd, "no-spare", &["sleep", "600"]);
    let last = parent_of(guest).expect("the guest's parent");
    delete_stopped_after_kill(&containerd, "no-spare");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{last}")).exists()
        && parent_of(last) == Some(starter)
        && !cmdline_of(last).is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "with reuse off, server {last} stayed: {:?}",
            cmdline_of(last)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `WASMCELL_SHIM_START=exec` in containerd's environment: every pod's server is spawned by
/// its front (adopted once the front exits), and no starter is ever started or asked.
fn no_starter_is_asked_or_started_under_shim_start_exec(version: Version) {
    let Some(mut containerd) = containerd_with_demo(version) else {
        return;
    };
    containerd
        .restart_with_env("WASMCELL_SHIM_START", "exec")
        .expect("containerd restarts");
    let out = run_demo(&containerd, IMAGE, "first", &[], &["echo", "first"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let guest = run_demo_detached(&containerd, "spawned", &["sleep", "600"]);
    let server = parent_of(guest).expect("the guest's parent");
    assert!(
        cmdline_of(server).contains(" -socket "),
        "{}",
        cmdline_of(server)
    );
    let adopter = parent_of(server).expect("the server's parent");
    assert!(
        !cmdline_of(adopter).contains("wasmcell-shim-starter"),
        "spawned, not forked by a starter"
    );
    assert_eq!(starters_of(&containerd), Vec::<u32>::new());
    delete_stopped_after_kill(&containerd, "spawned");
}

/// The session of `pid` (`/proc/PID/stat` field 6).
fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// A shim killed with SIGKILL (as the OOM killer would) takes its guests with it, and
/// containerd's cleanup (`shim delete`) leaves no cgroup, mount or bundle behind.
fn guests_die_with_a_killed_shim_and_nothing_is_left(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let guest = run_demo_detached(&containerd, "orphan", &["sleep", "600"]);
    let shim = parent_of(guest).expect("the guest's parent");
    let cmdline = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("containerd-shim-wasmcell-v1"),
        "the guest's parent is its shim"
    );
    nix_kill(shim);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{guest}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{guest}/stat")).unwrap_or_default();
        if state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            break; // dead, waiting to be reaped by its new parent
        }
        assert!(Instant::now() < deadline, "the guest outlived its shim");
        std::thread::sleep(Duration::from_millis(20));
    }
    // containerd notices the dead shim; delete runs its cleanup.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        containerd.ctr(&["task", "delete", "-f", "orphan"]);
        let listed = text(&containerd.ctr(&["task", "ls"]).stdout);
        if !listed.lines().any(|l| l.starts_with("orphan ")) {
            break;
        }
        assert!(Instant::now() < deadline, "the task stayed:\n{listed}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_settled(&containerd, "orphan");
    containerd.ctr_ok(&["container", "delete", "orphan"]);
    let bundle = containerd
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&containerd.namespace)
        .join("orphan");
    // containerd removes the bundle once its cleanup of the dead shim has run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bundle.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !bundle.exists(),
        "{} left behind: {:?}",
        bundle.display(),
        walk(&bundle)
    );
    let rootfs = bundle.join("rootfs").display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&rootfs),
        "rootfs mount {rootfs} left behind"
    );
    for controller in ["memory", "cpu", "pids"] {
        let cgroup = std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&containerd.namespace)
            .join("orphan");
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}

/// The work directory of container `id`'s writable layer (its overlay snapshot's `workdir`).
fn snapshot_workdir(containerd: &Containerd, id: &str) -> std::path::PathBuf {
    let mounts = containerd.ctr_ok(&["snapshots", "mounts", "/mnt", id]);
    let workdir = mounts
        .split([',', ' '])
        .find_map(|option| option.strip_prefix("workdir="))
        .unwrap_or_else(|| panic!("no workdir in the snapshot's mounts: {mounts}"));
    std::path::PathBuf::from(workdir)
}

/// Container `id`'s writable layer carries no `volatile` marker: its last mount was settled.
fn assert_settled(containerd: &Containerd, id: &str) {
    let incompat = snapshot_workdir(containerd, id).join("work/incompat");
    assert!(
        !incompat.exists(),
        "{} left behind: {:?}",
        incompat.display(),
        walk(&incompat)
    );
}

/// The options of the mount at container `id`'s bundle rootfs, as the host sees them.
fn rootfs_mount_options(containerd: &Containerd, id: &str) -> String {
    let rootfs = containerd
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&containerd.namespace)
        .join(id)
        .join("rootfs")
        .display()
        .to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(rootfs.as_str()))
        .filter_map(|line| line.rsplit(' ').next())
        .next_back()
        .unwrap_or_else(|| panic!("{rootfs} is not mounted"))
        .to_owned()
}

/// `volatile` as the mount table shows it (`fsync=volatile` from Linux 6.12).
fn is_volatile(option: &str) -> bool {
    option == "volatile" || option == "fsync=volatile"
}

/// The rootfs overlay is mounted `volatile` (no `syncfs` of containerd's filesystem at each
/// stop), and each stop settles it: what the guest wrote is in the layer, and the layer
/// mounts again for the container's next task. A layer left unsettled (the host stopped) is
/// refused by name; `sync_rootfs = true` mounts the overlay as containerd gives it.
fn the_writable_layer_is_volatile_and_settled_at_each_stop(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    run_demo_detached(&containerd, "volatile", &["sleep", "600"]);
    let options = rootfs_mount_options(&containerd, "volatile");
    assert!(options.split(',').any(is_volatile), "{options}");
    delete_stopped_after_kill(&containerd, "volatile");

    // `ctr run` without --rm: the task goes, the container and its layer stay.
    let run = [
        "run",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "layer",
        "/demo-app.wasm",
        "write",
        "/note",
        "kept",
    ];
    let out = containerd.ctr(&run);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_settled(&containerd, "layer");
    let workdir = snapshot_workdir(&containerd, "layer");
    let upper = workdir.with_file_name("fs");
    assert_eq!(std::fs::read_to_string(upper.join("note")).unwrap(), "kept");
    // The layer mounts again: a second task of the same container.
    let again = containerd.ctr(&["task", "start", "layer"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    containerd.ctr(&["task", "delete", "layer"]);
    assert_settled(&containerd, "layer");

    // The host went down under a volatile mount: the marker stays, the layer is refused.
    let marker = workdir.join("work/incompat/volatile");
    std::fs::create_dir_all(&marker).unwrap();
    let refused = containerd.ctr(&["task", "start", "layer"]);
    let stderr = text(&refused.stderr);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr.contains(&marker.display().to_string()) && stderr.contains("not unmounted cleanly"),
        "{stderr}"
    );
    containerd.ctr(&["task", "delete", "layer"]);
    std::fs::remove_dir_all(workdir.join("work/incompat")).unwrap();
    let out = containerd.ctr(&["task", "start", "layer"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    containerd.ctr(&["task", "delete", "layer"]);
    containerd.ctr_ok(&["container", "delete", "layer"]);

    std::fs::write(containerd.shim_config(), "sync_rootfs = true\n").unwrap();
    run_demo_detached(&containerd, "synced", &["sleep", "600"]);
    let options = rootfs_mount_options(&containerd, "synced");
    assert!(!options.split(',').any(is_volatile), "{options}");
    delete_stopped_after_kill(&containerd, "synced");
    std::fs::remove_file(containerd.shim_config()).unwrap();
}

/// A command guest runs on its one thread: the engine's I/O runtime is driven by the guest's
/// own thread and nothing else starts one (a second thread would make every unmap, and the
/// exit, a cross-CPU TLB shootdown). Once it has slept past the settle delay, on that same
/// thread, it has let go of the shim code that starting it touched.
fn a_sleeping_guest_is_one_thread_and_lets_go_of_its_start_up_code(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let guest = run_demo_detached(&containerd, "settler", &["sleep", "600"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut code = resident_code_kib(guest);
    while code > SETTLED_CODE_KIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        code = resident_code_kib(guest);
    }
    eprintln!("settler: {code} KiB of code resident");
    assert!(
        code <= SETTLED_CODE_KIB,
        "guest {guest} still maps {code} KiB of the shim's code"
    );
    let status = std::fs::read_to_string(format!("/proc/{guest}/status")).unwrap_or_default();
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:"));
    assert_eq!(threads.map(str::trim), Some("1"), "guest {guest}: {status}");
    delete_stopped_after_kill(&containerd, "settler");
}

/// At most this much of the shim binary's code stays mapped in a settled guest: what sleeping
/// has touched again since, 64 KiB per fault (a guest that has just started maps ~33 MiB of a
/// debug build's code, several MiB of a release build's; settled, 2.5 MiB and less).
const SETTLED_CODE_KIB: u64 = 4096;

/// At most this much of the shim binary's code stays mapped in a spare server left waiting: what
/// the wait itself touches, 64 KiB per fault (a debug build's spare maps ~18 MiB as it begins to
/// wait, ~1 MiB once it has let go).
const SPARE_CODE_KIB: u64 = 2048;

/// Resident KiB of `pid`'s executable mappings of the shim core binary.
fn resident_code_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut total = 0;
    let mut counting = false;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            counting = fields.get(1).is_some_and(|perms| perms.contains('x'))
                && fields
                    .last()
                    .is_some_and(|path| path.ends_with("containerd-shim-wasmcell-v1-core"));
        } else if counting && fields.first() == Some(&"Rss:") {
            total += fields
                .get(1)
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Four containers of one program started together with an empty compile cache: one guest
/// has it compiled (by the compile helper), the others wait for its entry and map it.
fn concurrent_cold_starts_compile_once(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    let ids = ["cold-a", "cold-b", "cold-c", "cold-d"];
    std::thread::scope(|scope| {
        for id in ids {
            let containerd = &containerd;
            scope.spawn(move || {
                containerd.ctr_ok(&detached_demo_args(id, &["sleep", "60"]));
            });
        }
    });
    for id in ids {
        wait_for_status(&containerd, id, "RUNNING");
    }
    let log = containerd.log();
    let outcomes: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(": program loaded (").map(|(_, rest)| rest))
        .collect();
    assert_eq!(outcomes.len(), ids.len(), "{outcomes:?}");
    let compiled = outcomes
        .iter()
        .filter(|o| o.starts_with("compiled by a helper process"))
        .count();
    assert_eq!(
        compiled, 1,
        "exactly one guest has the program compiled, by a helper: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.starts_with("compiled by a helper process")
                || o.starts_with("compiled by a concurrent start")
                || o.starts_with("cache hit")),
        "{outcomes:?}"
    );
    let leftovers: Vec<_> = walk(&containerd.cache_dir())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "partial entries: {leftovers:?}");
    for id in ids {
        containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        wait_for_status(&containerd, id, "STOPPED");
        containerd.ctr(&["task", "delete", id]);
        containerd.ctr(&["container", "delete", id]);
    }
}

fn mount_cmd(args: &[&str]) {
    let out = Command::new("mount").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?}: {}",
        text(&out.stderr)
    );
}

/// A compile cache that is full (a 64 KiB tmpfs) or read-only costs speed, never the container:
/// the guest runs uncached, the shim warns once per container, and no partial entry is left.
fn a_full_or_read_only_cache_runs_uncached_with_one_warning(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    let cache = containerd.cache_dir();
    std::fs::create_dir_all(&cache).unwrap();
    let cache_arg = cache.to_str().unwrap();
    mount_cmd(&[
        "-t",
        "tmpfs",
        "-o",
        "size=64k,mode=0700",
        "tmpfs",
        cache_arg,
    ]);
    let out = run_demo(&containerd, IMAGE, "full", &[], &["echo", "runs"], b"");
    assert_eq!(text(&out.stdout), "runs\n", "{}", text(&out.stderr));
    let warned = |id: &str, what: &str| {
        containerd
            .log()
            .lines()
            .filter(|l| l.contains(&format!("container {id}: {what}")))
            .count()
    };
    assert_eq!(
        warned("full", "the compile cache cannot store compiled code"),
        1,
        "one warning for a full cache:\n{}",
        containerd.log()
    );
    let files = walk(&cache);
    assert!(
        !files.iter().any(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(".tmp-") || name.ends_with(".cwasm")
        }),
        "a partial entry was left: {files:?}"
    );

    mount_cmd(&["-o", "remount,ro", cache_arg]);
    let out = run_demo(
        &containerd,
        IMAGE,
        "read-only",
        &[],
        &["echo", "still runs"],
        b"",
    );
    assert_eq!(text(&out.stdout), "still runs\n", "{}", text(&out.stderr));
    assert_eq!(
        warned("read-only", "the compile cache is unusable")
            + warned("read-only", "the compile cache cannot store"),
        1,
        "one warning for a read-only cache:\n{}",
        containerd.log()
    );
    let _ = Command::new("umount").arg(cache_arg).status();
}

/// 100 SIGTERMs at once: the guest ends once with 143 and the shim serves the next container.
fn a_storm_of_sigterms_ends_a_guest_once(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let mut child = containerd.ctr_command(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
        IMAGE,
        "storm",
        "/demo-app.wasm",
        "sleep",
        "600",
    ]);
    wait_for_status(&containerd, "storm", "RUNNING");
    let mut kills: Vec<_> = (0..100)
        .map(|_| containerd.ctr_command(&["task", "kill", "--signal", "SIGTERM", "storm"]))
        .collect();
    for kill in &mut kills {
        let _ = kill.wait();
    }
    assert_eq!(wait_child(&mut child, Duration::from_secs(60)), Some(143));
    let out = run_demo(
        &containerd,
        IMAGE,
        "after-storm",
        &[],
        &["echo", "calm"],
        b"",
    );
    assert_eq!(text(&out.stdout), "calm\n", "{}", text(&out.stderr));
}

/// The guest SIGKILLed while it compiles during `create`: `ctr run` fails with a clear message,
/// no mount, cgroup or partial cache entry is left, and the next start compiles at once (no
/// stale compile lock).
fn a_guest_killed_while_compiling_leaves_nothing_behind(version: Version) {
    let Some(containerd) = containerd_with_demo_cache(version, true) else {
        return;
    };
    let child = containerd
        .ctr_base()
        .args([
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--platform",
            "wasip2/wasm",
            IMAGE,
            "doomed",
            "/demo-app.wasm",
            "echo",
            "never",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guest = wait_for_compiling_guest(&containerd, "doomed");
    let _ = Command::new("kill").args(["-9", &guest]).status();
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the guest process exited during setup"),
        "the failure says the guest died during setup: {stderr}"
    );
    let partial: Vec<_> = walk(&containerd.cache_dir())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .collect();
    assert!(partial.is_empty(), "partial entries: {partial:?}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let bundle = containerd
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&containerd.namespace)
        .join("doomed");
    assert!(!mountinfo.contains(&bundle.join("rootfs").display().to_string()));
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(&containerd.namespace)
        .join("doomed");
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());

    let out = run_demo(
        &containerd,
        IMAGE,
        "after-kill",
        &[],
        &["echo", "compiles"],
        b"",
    );
    assert_eq!(text(&out.stdout), "compiles\n", "{}", text(&out.stderr));
    assert!(
        containerd.log().contains(
            "container after-kill: program loaded (compiled by a helper process, then mapped; \
                 baseline code until the optimized code is ready; confined in "
        ),
        "the next start compiles itself, not waiting on a stale lock"
    );
}

/// The pid of container `id`'s guest once it is compiling (it then holds the cache entry's
/// compile lock open). This instance's guest only: the same test runs against another
/// containerd alongside.
pub(crate) fn wait_for_compiling_guest(containerd: &Containerd, id: &str) -> String {
    let plan = containerd
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&containerd.namespace)
        .join(id)
        .display()
        .to_string();
    let holds_compile_lock = |proc: &std::path::Path| {
        std::fs::read_dir(proc.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.extension().is_some_and(|e| e == "lock"))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find_map(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (cmdline.contains("__wasmcell-guest")
                    && cmdline.contains(&plan)
                    && holds_compile_lock(&entry.path()))
                .then(|| entry.file_name().to_string_lossy().into_owned())
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the guest of {id} never compiled"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
