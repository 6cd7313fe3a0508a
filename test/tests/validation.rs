//! Import validation end to end: what a guest imports is checked against this host's worlds
//! and the operator's policy at task creation, so `ctr run` fails before anything runs, with
//! every refused import named. Fixture guests are built here from WebAssembly text.

use std::path::Path;

use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::image::write_artifact_tar;

use crate::shim::{
    IMAGE, RUNTIME, containerd_with_demo, package_and_import, run_demo, text, wasmcell_import,
};

on_2_1_and_1_7!(
    imports_are_checked_by_name_and_version_at_create,
    an_artifact_is_refused_from_its_config_before_its_layer_is_read,
    an_artifact_config_that_hides_an_import_is_refused,
    a_deny_policy_refuses_sockets_from_runtime_options_or_the_shim_config,
);

/// A component that imports only `wasi:cli/exit@0.2.0` and exits with code 42 through it, so
/// a run proves the import was linked and called.
pub(crate) const EXIT_42: &str = r#"(component
    (import "wasi:cli/exit@0.2.0" (instance $exit
        (export "exit-with-code" (func (param "status-code" u8)))))
    (core func $exit_lowered (canon lower (func $exit "exit-with-code")))
    (core module $m
        (import "host" "exit" (func $exit (param i32)))
        (func (export "run") (result i32)
            i32.const 42
            call $exit
            i32.const 0))
    (core instance $host (export "exit" (func $exit_lowered)))
    (core instance $i (instantiate $m (with "host" (instance $host))))
    (func $run (result (result)) (canon lift (core func $i "run")))
    (instance $run_instance (export "run" (func $run)))
    (export "wasi:cli/run@0.2.0" (instance $run_instance)))"#;

const KEYVALUE: &str = r#"(component
    (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "open" (func)))))"#;

const ENVIRONMENT_0_3: &str = r#"(component
    (import "wasi:cli/environment@0.3.0" (instance
        (export "get-environment" (func (result (list (tuple string string))))))))"#;

const ENV_FOO_MODULE: &str = r#"(module
    (import "env" "foo" (func))
    (memory (export "memory") 1)
    (func (export "_start")))"#;

/// A preview 1 module that imports `sock_accept` (and never calls it).
const SOCK_ACCEPT_MODULE: &str = r#"(module
    (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")))"#;

/// Fixture images holding core modules (their platform is wasip1).
const MODULE_IMAGES: [&str; 2] = ["/envfoo:", "/sock:"];

fn write_wasm(dir: &Path, file: &str, wat_text: &str) -> std::path::PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, wat::parse_str(wat_text).unwrap()).unwrap();
    path
}

/// Packages `wat_text` as a classic image `localhost/test/NAME:latest` with `/NAME.wasm`.
pub(crate) fn classic_image(
    containerd: &Containerd,
    dir: &Path,
    name: &str,
    wat_text: &str,
) -> String {
    let wasm = write_wasm(dir, &format!("{name}.wasm"), wat_text);
    let image = format!("localhost/test/{name}:latest");
    package_and_import(containerd, &wasm, &image, &dir.join(format!("{name}.tar")));
    image
}

/// `ctr run --rm` of `image` with `args`, plus `extra` flags before the image. Programs
/// named `*.wasm` built from a `(module …)` run on the wasip1 platform, the rest on wasip2.
fn run(
    containerd: &Containerd,
    image: &str,
    id: &str,
    extra: &[&str],
    args: &[&str],
) -> std::process::Output {
    let platform = if MODULE_IMAGES.iter().any(|m| image.contains(m)) {
        "wasip1/wasm"
    } else {
        "wasip2/wasm"
    };
    let mut full = vec!["run", "--rm", "--runtime", RUNTIME, "--platform", platform];
    full.extend(extra);
    full.extend([image, id]);
    full.extend(args);
    containerd.ctr(&full)
}

/// Asserts `out` failed at task creation and its stderr holds every one of `parts`.
fn assert_refused_at_create(out: &std::process::Output, parts: &[&str]) {
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "expected a refusal: {err}");
    assert!(err.contains("failed to create shim task"), "{err}");
    for part in parts {
        assert!(err.contains(part), "missing {part:?} in: {err}");
    }
}

fn imports_are_checked_by_name_and_version_at_create(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();

    let exit = classic_image(&containerd, dir, "exit42", EXIT_42);
    let out = run(&containerd, &exit, "exit42", &[], &["/exit42.wasm"]);
    assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));

    let keyvalue = classic_image(&containerd, dir, "kv", KEYVALUE);
    let out = run(&containerd, &keyvalue, "kv", &[], &["/kv.wasm"]);
    assert_refused_at_create(
        &out,
        &[
            "program \"/kv.wasm\": the component cannot run on this host: 1 import cannot be \
             satisfied on this host (wasi:cli/command@0.2.12): wasi:keyvalue/store@0.2.0-draft \
             (not provided by this host)",
        ],
    );
    // The shim logs the refusal too (containerd copies shim logs into its own).
    assert!(
        containerd
            .log()
            .contains("wasi:keyvalue/store@0.2.0-draft (not provided by this host)"),
        "the shim did not log the refusal"
    );

    let environment = classic_image(&containerd, dir, "env03", ENVIRONMENT_0_3);
    let out = run(&containerd, &environment, "env03", &[], &["/env03.wasm"]);
    assert_refused_at_create(
        &out,
        &["wasi:cli/environment@0.3.0 (not provided; the host has wasi:cli/environment@0.2.12)"],
    );

    let module = classic_image(&containerd, dir, "envfoo", ENV_FOO_MODULE);
    let out = run(&containerd, &module, "envfoo", &[], &["/envfoo.wasm"]);
    assert_refused_at_create(
        &out,
        &[
            "the module cannot run on this host",
            "env.foo (not provided; the host has wasi_snapshot_preview1.*)",
        ],
    );
}

fn an_artifact_is_refused_from_its_config_before_its_layer_is_read(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let package_artifact = |name: &str, wat_text: &str| {
        let wasm = write_wasm(dir, &format!("{name}.wasm"), wat_text);
        let tar = dir.join(format!("{name}-artifact.tar"));
        let image = format!("localhost/test/{name}-artifact:latest");
        let out = std::process::Command::new(wasmcell_tests::wasmcell_bin())
            .args([
                "package", "--format", "artifact", "--name", &image, "--module",
            ])
            .arg(&wasm)
            .arg("-o")
            .arg(&tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        wasmcell_import(&containerd, &tar);
        (image, std::fs::read(&wasm).unwrap())
    };

    // Control: an artifact whose config and binary agree runs.
    let (exit, _) = package_artifact("exit42", EXIT_42);
    let out = run(&containerd, &exit, "exit-artifact", &[], &["exit42.wasm"]);
    assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));

    // `wasmcell inspect --containerd` gives the same verdict without running anything.
    let (keyvalue, wasm) = package_artifact("kv", KEYVALUE);
    let out = std::process::Command::new(wasmcell_tests::wasmcell_bin())
        .args(["inspect", "--containerd", "--address"])
        .arg(containerd.address())
        .args(["--namespace", &containerd.namespace, "--ctr"])
        .arg(containerd.ctr_path())
        .arg(&keyvalue)
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused exits 1: {}",
        text(&out.stderr)
    );
    assert!(
        shown.contains("(exported from containerd, every blob verified)"),
        "{shown}"
    );
    assert!(shown.contains("  verdict (no policy): refused"), "{shown}");
    assert!(
        shown.contains("    wasm config: 1 import cannot be satisfied on this host (wasi:cli/command@0.2.12): wasi:keyvalue/store@0.2.0-draft (not provided by this host)"),
        "{shown}"
    );

    // Remove the keyvalue artifact's wasm layer from the content store: if the shim read it,
    // the error would be about the missing blob, not about the config.
    let digest = wasmcell_oci::digest::sha256_digest(&wasm);
    let blob = containerd
        .dir
        .join("root/io.containerd.content.v1.content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::remove_file(&blob).unwrap();
    let out = run(&containerd, &keyvalue, "kv-artifact", &[], &["kv.wasm"]);
    assert_refused_at_create(
        &out,
        &[
            "image localhost/test/kv-artifact:latest: wasm config sha256:",
            "(checked before reading the wasm layer): 1 import cannot be satisfied on this host \
             (wasi:cli/command@0.2.12): wasi:keyvalue/store@0.2.0-draft (not provided by this host)",
        ],
    );
    assert!(
        !text(&out.stderr).contains(&digest),
        "{}",
        text(&out.stderr)
    );
}

fn an_artifact_config_that_hides_an_import_is_refused(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let wasm = wat::parse_str(EXIT_42).unwrap();
    let tar = temp.path().join("liar.tar");
    let name = "localhost/test/liar:latest";
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "component": { "imports": [], "exports": ["wasi:cli/run@0.2.0"] }
    });
    write_artifact_tar(&tar, name, &wasm, config);
    wasmcell_import(&containerd, &tar);
    let out = run(&containerd, name, "liar", &[], &["liar.wasm"]);
    assert_refused_at_create(
        &out,
        &[
            "the artifact's wasm config and its binary disagree: config declares [], binary \
             imports [wasi:cli/exit@0.2.0]; not declared: wasi:cli/exit@0.2.0",
        ],
    );
}

fn a_deny_policy_refuses_sockets_from_runtime_options_or_the_shim_config(version: Version) {
    let Some(containerd) = containerd_with_demo(version) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let strict = temp.path().join("strict.toml");
    std::fs::write(
        &strict,
        "deny = [\"wasi:sockets/*\", \"wasi:http/outgoing-handler\"]\n",
    )
    .unwrap();
    let strict_flag = strict.display().to_string();

    // The demo app imports wasi:sockets (it has `listen` and `connect`).
    let with_options = ["--runtime-config-path", strict_flag.as_str()];
    let out = run_demo(
        &containerd,
        IMAGE,
        "denied",
        &with_options,
        &["echo", "hi"],
        b"",
    );
    assert_refused_at_create(
        &out,
        &[
            "the component cannot run on this host",
            &format!(
                "wasi:sockets/tcp@0.2.6 (denied by policy \"wasi:sockets/*\" from {strict_flag})"
            ),
        ],
    );
    let out = run_demo(&containerd, IMAGE, "allowed", &[], &["echo", "hi"], b"");
    assert_eq!(text(&out.stdout), "hi\n", "{}", text(&out.stderr));

    // The same through the shim config file, which applies when no runtime options are given;
    // a preview 1 module's sock_* imports count as wasi:sockets.
    let module = classic_image(&containerd, temp.path(), "sock", SOCK_ACCEPT_MODULE);
    let out = run(&containerd, &module, "sock-allowed", &[], &["/sock.wasm"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::copy(&strict, containerd.shim_config()).unwrap();
    let out = run(&containerd, &module, "sock-denied", &[], &["/sock.wasm"]);
    let config = containerd.shim_config().display().to_string();
    assert_refused_at_create(
        &out,
        &[&format!(
            "wasi_snapshot_preview1.sock_accept (denied by policy \"wasi:sockets/*\" from {config})"
        )],
    );

    // A broken policy fails closed, naming the file.
    std::fs::write(containerd.shim_config(), "deny = \"wasi:sockets/*\"\n").unwrap();
    let out = run(&containerd, &module, "sock-broken", &[], &["/sock.wasm"]);
    assert_refused_at_create(&out, &[&format!("parsing the wasmcell policy {config}")]);
}
