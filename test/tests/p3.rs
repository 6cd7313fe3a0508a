//! WASI 0.3 commands through containerd: demo-p3 (a `wasi:cli/command@0.3.0` component) runs
//! as demo-app does — arguments, exit codes, environment, stdin, files in a mount, a trap, a
//! memory limit, SIGTERM — from the image and the artifact, by `ctr run` and as a pod; and a
//! 0.3 component a policy or its own config rules out is refused at create, with the reason.
//! (demo-p3-http is served in `http.rs`.)

use std::time::{Duration, Instant};

use wasmcell_oci::{Config, ReadLimits, read_archive};
use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::image::write_artifact_tar;

use crate::shim::{
    RUNTIME, containerd_with_demo_images, run_argv, text, wait_for_status, wasmcell_import,
};

on_2_1_and_1_7!(
    p3_commands_run_like_p2_ones,
    p3_artifact_runs_and_is_checked_at_create,
    p3_command_runs_as_a_pod,
);

const IMAGE: &str = "localhost/wasmcell/demo-p3:latest";
const PROGRAM: &str = "/demo-p3.wasm";
const ARTIFACT: &str = "localhost/wasmcell/demo-p3-artifact:latest";

fn containerd_with_p3(version: Version) -> Option<Containerd> {
    containerd_with_demo_images(version, &[("demo-p3-image.tar", IMAGE)], false)
}

/// `ctr run --rm` of demo-p3 as `id` with `args`, extra `ctr run` flags and `stdin`.
fn run_p3(
    containerd: &Containerd,
    id: &str,
    extra: &[&str],
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut argv = vec![PROGRAM];
    argv.extend(args);
    run_argv(containerd, IMAGE, id, extra, &argv, stdin)
}

fn p3_commands_run_like_p2_ones(version: Version) {
    let Some(containerd) = containerd_with_p3(version) else {
        return;
    };
    let out = run_p3(&containerd, "echo", &[], &["echo", "hello", "0.3"], b"");
    assert_eq!(text(&out.stdout), "hello 0.3\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    // The guest was loaded as a 0.3 command.
    let log = containerd.log();
    assert!(log.contains("container echo: program loaded"), "{log}");

    let out = run_p3(&containerd, "exit7", &[], &["exit", "7"], b"");
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // `run` returning `Err` is exit status 1, with the guest's own message on stderr.
    let out = run_p3(&containerd, "unknown", &[], &["nonesuch"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("demo-p3 nonesuch: unknown command"),
        "{}",
        text(&out.stderr)
    );

    let out = run_p3(
        &containerd,
        "env",
        &["--env", "GREETING=hi there"],
        &["env"],
        b"",
    );
    assert!(
        text(&out.stdout).lines().any(|l| l == "GREETING=hi there"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = run_p3(
        &containerd,
        "stdin",
        &[],
        &["cat", "-"],
        b"through a 0.3 stream\n",
    );
    assert_eq!(
        text(&out.stdout),
        "through a 0.3 stream\n",
        "{}",
        text(&out.stderr)
    );

    // Files through 0.3's filesystem: a bind mount is a preopen of its own, read-only where
    // the mount says so.
    crate::shim::assert_bind_mounts_honoured(&|id, extra, args| {
        run_p3(&containerd, id, extra, args, b"")
    });
    let out = run_p3(&containerd, "cat-host", &[], &["cat", "/etc/passwd"], b"");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a host file must not be readable"
    );

    let out = run_p3(&containerd, "trap", &[], &["trap"], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("guest trapped") && err.contains("unreachable"),
        "{err}"
    );

    crate::shim::assert_memory_limit_enforced(&|id, extra, args| {
        run_p3(&containerd, id, extra, args, b"")
    });

    // SIGTERM ends a guest waiting on the 0.3 clock, as it ends any container: 128 + 15.
    let mut run = vec![
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--platform",
        "wasip2/wasm",
    ];
    run.extend([IMAGE, "sleeper", PROGRAM, "sleep", "60"]);
    containerd.ctr_ok(&run);
    wait_for_status(&containerd, "sleeper", "RUNNING");
    let signalled = Instant::now();
    containerd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "sleeper"]);
    wait_for_status(&containerd, "sleeper", "STOPPED");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let listed = containerd.ctr_ok(&["task", "ls"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("sleeper") && l.contains("STOPPED")),
        "{listed}"
    );
    containerd.ctr(&["task", "delete", "sleeper"]);
    containerd.ctr(&["container", "delete", "sleeper"]);
}

/// The artifact form (imported with `wasmcell import`, target `wasi:cli/command@0.3.0`) runs
/// like the image; a host policy denying `wasi:cli/run@0.3.0` refuses it at create naming the
/// export, and an artifact whose config claims a 0.3 import its binary lacks is refused at
/// create naming the import.
fn p3_artifact_runs_and_is_checked_at_create(version: Version) {
    let Some(containerd) = containerd_with_demo_images(version, &[], false) else {
        return;
    };
    wasmcell_import(
        &containerd,
        &wasmcell_tests::demo_tar("demo-p3-artifact.tar"),
    );
    let out = run_argv(
        &containerd,
        ARTIFACT,
        "artifact",
        &[],
        &["demo-p3", "echo", "from the artifact"],
        b"",
    );
    assert_eq!(
        text(&out.stdout),
        "from the artifact\n",
        "{}",
        text(&out.stderr)
    );

    let temp = tempfile::tempdir().unwrap();
    let policy = temp.path().join("no-p3.toml");
    std::fs::write(&policy, "deny = [\"wasi:cli/run@0.3.*\"]\n").unwrap();
    let policy = policy.display().to_string();
    let out = run_argv(
        &containerd,
        ARTIFACT,
        "denied",
        &["--runtime-config-path", &policy],
        &["demo-p3", "echo", "never"],
        b"",
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(
        stderr.contains("(wasi:cli/command@0.3.0)")
            && stderr.contains(&format!(
                "export wasi:cli/run@0.3.0 (this host does not run it: denied by policy \
                 \"wasi:cli/run@0.3.*\" from {policy})"
            )),
        "{stderr}"
    );

    // A config that claims an import the binary does not have: the config passes the
    // pre-flight (the host has it), the binary check catches the lie.
    let archive = read_archive(
        &wasmcell_tests::demo_tar("demo-p3-artifact.tar"),
        ReadLimits::default(),
    )
    .unwrap();
    let image = &archive.images[0];
    let Config::Wasm(config) = &image.config else {
        panic!("the demo-p3 artifact has no wasm config");
    };
    let section = config.component.as_ref().expect("a component section");
    let mut imports = section.imports.clone();
    imports.push("wasi:random/random@0.3.0".to_owned());
    let tar = temp.path().join("claims.tar");
    write_artifact_tar(
        &tar,
        "localhost/wasmcell/demo-p3-claims:latest",
        &image.layers[0].bytes,
        serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "component": {
                "imports": imports,
                "exports": section.exports,
                "target": "wasi:cli/command@0.3.0",
            },
        }),
    );
    wasmcell_import(&containerd, &tar);
    let out = run_argv(
        &containerd,
        "localhost/wasmcell/demo-p3-claims:latest",
        "claims",
        &[],
        &["demo-p3", "echo", "never"],
        b"",
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(
        stderr.contains("wasi:random/random@0.3.0"),
        "the refusal names the claimed import: {stderr}"
    );
}

/// demo-p3 as a pod's containers through CRI: its output reaches the CRI log, its exit code
/// and a trap reach the container's status, and the pod's `env:` and `args:` reach it.
fn p3_command_runs_as_a_pod(version: Version) {
    let Some(node) = crate::kubernetes::node(version) else {
        return;
    };
    let image = node
        .registry
        .push(
            &wasmcell_tests::demo_tar("demo-p3-image.tar"),
            "wasmcell/demo-p3:latest",
        )
        .unwrap();
    let sandbox = node.sandbox_config("p3", false);
    let pod = node.run_pod(&sandbox);
    node.pull(&image, &sandbox);
    let (code, lines) = node.run_to_exit(
        &pod,
        &sandbox,
        "echo",
        &image,
        &[PROGRAM, "echo", "hello from 0.3"],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines, [("stdout".to_owned(), "hello from 0.3".to_owned())]);
    let (code, lines) = node.run_to_exit(&pod, &sandbox, "exit", &image, &[PROGRAM, "exit", "3"]);
    assert_eq!(code, 3, "{lines:?}");
    let (code, lines) = node.run_to_exit(&pod, &sandbox, "trap", &image, &[PROGRAM, "trap"]);
    assert_ne!(code, 0, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(stream, text)| stream == "stderr" && text.contains("unreachable")),
        "{lines:?}"
    );
    // A pod's `env:` is the component's 0.3 environment; `args:` its arguments.
    let config = k8s_cri::v1::ContainerConfig {
        args: vec!["env".to_owned()],
        envs: vec![k8s_cri::v1::KeyValue {
            key: "GREETING".to_owned(),
            value: "hi from a pod".to_owned(),
        }],
        ..crate::kubernetes::container_config("env", &image)
    };
    let id = node
        .create_from(&pod, &sandbox, config)
        .unwrap_or_else(|e| panic!("CreateContainer env: {e}"));
    node.start(&id);
    let status = node.wait_exited(&id);
    let lines = crate::kubernetes::cri_log_lines(&node.log_file("p3", "env"));
    assert_eq!(status.exit_code, 0, "{lines:?}");
    assert!(
        lines.contains(&("stdout".to_owned(), "GREETING=hi from a pod".to_owned())),
        "{lines:?}"
    );
    node.stop_and_remove_pod(&pod);
}
