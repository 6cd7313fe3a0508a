//! The registry verbs against Debian's docker-registry on loopback: `push` keeps the manifest
//! byte for byte (skopeo, an independent client, reads the same bytes back), `pull` stores each
//! demo form so `ctr run` runs it, and `inspect` reads straight from the registry.

use std::process::{Command, Output};

use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::cri::Registry;
use wasmcell_tests::{demo_tar, wasmcell_bin};

use crate::shim::{run_argv, text};

on_2_1_and_1_7!(pushed_demo_forms_pull_into_containerd_and_run);

/// A private containerd and registry, or a loud skip (a failure under CI).
fn containerd_and_registry(version: Version) -> Option<(Containerd, Registry)> {
    let started = Containerd::start(version).and_then(|c| Ok((c, Registry::start()?)));
    match started {
        Ok(both) => Some(both),
        Err(reason) if wasmcell_tests::in_ci() => {
            panic!("CI=true and a prerequisite is missing: {reason}")
        }
        Err(reason) => {
            eprintln!("\n*** SKIPPED (not CI): {reason} ***\n");
            None
        }
    }
}

fn wasmcell(args: &[&str]) -> Output {
    Command::new(wasmcell_bin()).args(args).output().unwrap()
}

/// `wasmcell pull REFERENCE` into `containerd`.
fn pull(containerd: &Containerd, reference: &str) -> Output {
    wasmcell(&[
        "pull",
        "--address",
        containerd.address().to_str().unwrap(),
        "--namespace",
        &containerd.namespace,
        "--ctr",
        containerd.ctr_path().to_str().unwrap(),
        reference,
    ])
}

fn pushed_demo_forms_pull_into_containerd_and_run(version: Version) {
    let Some((containerd, registry)) = containerd_and_registry(version) else {
        return;
    };
    for (form, program) in [
        ("image", "/demo-app.wasm"),
        ("wasm-layer", "demo-app.wasm"),
        ("artifact", "demo-app.wasm"),
    ] {
        let tar = demo_tar(&format!("demo-app-{form}.tar"));
        let reference = format!("{}/wasmcell/pulled-{form}:v1", registry.address);
        let out = wasmcell(&["push", tar.to_str().unwrap(), &reference]);
        assert!(out.status.success(), "push {form}: {}", text(&out.stderr));
        // The registry serves the archive's manifest, byte for byte.
        let archive =
            wasmcell_oci::read_archive(&tar, wasmcell_oci::ReadLimits::default()).unwrap();
        let served = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(served.status.success(), "{}", text(&served.stderr));
        assert_eq!(
            served.stdout, archive.images[0].manifest_bytes,
            "{form}: the registry's manifest differs from the archive's"
        );
        let out = pull(&containerd, &reference);
        assert!(out.status.success(), "pull {form}: {}", text(&out.stderr));
        let ran = run_argv(
            &containerd,
            &reference,
            &format!("pulled-{form}"),
            &[],
            &[program, "echo", form],
            b"",
        );
        assert_eq!(
            text(&ran.stdout),
            format!("{form}\n"),
            "{}",
            text(&ran.stderr)
        );
    }
    // inspect reads from the registry, with the referrers (none were attached).
    let reference = format!("{}/wasmcell/pulled-artifact:v1", registry.address);
    let out = wasmcell(&["inspect", &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("from its registry, every blob verified"),
        "{shown}"
    );
    assert!(shown.contains("referrers none"), "{shown}");
    // A tag the registry does not have is an error that names it; nothing is stored.
    let missing = format!("{}/wasmcell/pulled-artifact:absent", registry.address);
    let out = pull(&containerd, &missing);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pulled-artifact:absent"),
        "{}",
        text(&out.stderr)
    );
    let images = containerd.ctr_ok(&["image", "ls", "-q"]);
    assert!(!images.contains("absent"), "{images}");
}

/// A registry that asks for credentials: `--creds`, an auth file given with `--authfile` or
/// `$REGISTRY_AUTH_FILE` (Docker's format) get in; without them push and inspect fail with a
/// message that says how to give them.
#[test]
fn credentials_come_from_creds_or_an_auth_file() {
    let registry = match Registry::start_with_users(&[("alice", "s3cret")]) {
        Ok(registry) => registry,
        Err(reason) if wasmcell_tests::in_ci() => {
            panic!("CI=true and a prerequisite is missing: {reason}")
        }
        Err(reason) => {
            eprintln!("\n*** SKIPPED (not CI): {reason} ***\n");
            return;
        }
    };
    let tar = demo_tar("demo-app-artifact.tar");
    let tar = tar.to_str().unwrap();
    let reference = format!("{}/private/app:v1", registry.address);
    let how = "give them with --creds or an auth file";
    let out = wasmcell(&["push", tar, &reference]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(how), "{}", text(&out.stderr));
    let out = wasmcell(&["push", "--creds", "alice:wrong", tar, &reference]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(how), "{}", text(&out.stderr));
    let out = wasmcell(&["push", "--creds", "alice:s3cret", tar, &reference]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    let encoded = "YWxpY2U6czNjcmV0"; // base64 of alice:s3cret
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{encoded}"}}}}}}"#,
            registry.address
        ),
    )
    .unwrap();
    let out = wasmcell(&[
        "inspect",
        "--authfile",
        auth_file.to_str().unwrap(),
        &reference,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new(wasmcell_bin())
        .args(["inspect", &reference])
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new(wasmcell_bin())
        .args(["inspect", &reference])
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(how), "{}", text(&out.stderr));
}
