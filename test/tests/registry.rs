//! The registry verbs against Debian's docker-registry on loopback: `push` keeps the manifest
//! byte for byte (skopeo, an independent client, reads the same bytes back), `pull` stores each
//! demo form so `ctr run` runs it, and `inspect` reads straight from the registry.

use std::process::{Command, Output};

use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::cri::Registry;
use wasmcell_tests::{demo_tar, wasmcell_bin};

use crate::shim::{run_argv, text};

on_2_1_and_1_7!(
    pushed_demo_forms_pull_into_containerd_and_run,
    artifacts_pushed_with_oras_run_with_a_warning_and_show_their_referrers,
    a_lying_registry_is_refused_in_bounded_time_and_nothing_is_stored,
);

/// A private containerd and registry, or a loud skip (a failure under CI).
fn containerd_and_registry(version: Version) -> Option<(Containerd, Registry)> {
    or_skip(Containerd::start(version).and_then(|c| Ok((c, Registry::start()?))))
}

/// A private containerd, or a loud skip (a failure under CI).
fn containerd_or_skip(version: Version) -> Option<Containerd> {
    or_skip(Containerd::start(version))
}

fn or_skip<T>(started: Result<T, String>) -> Option<T> {
    match started {
        Ok(started) => Some(started),
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
    pull_with(containerd, &[], reference)
}

/// `wasmcell pull OPTIONS… REFERENCE` into `containerd`.
fn pull_with(containerd: &Containerd, options: &[&str], reference: &str) -> Output {
    let client = containerd.wasmcell_options();
    let mut args = vec!["pull"];
    args.extend(options);
    args.extend(client.iter().map(String::as_str));
    args.push(reference);
    wasmcell(&args)
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
    let Some(registry) = or_skip(Registry::start_with_users(&[("alice", "s3cret")])) else {
        return;
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

/// A registry that lies gets a clear error from `pull` within a bounded time, and nothing is
/// stored in containerd: other bytes than the digest says, fewer bytes than the descriptor, a
/// 10 GiB `Content-Length`, a 10 GiB descriptor, a redirect loop, and a response that stalls.
fn a_lying_registry_is_refused_in_bounded_time_and_nothing_is_stored(version: Version) {
    use wasmcell_tests::lying_registry::{Lie, LyingRegistry};
    let Some(containerd) = containerd_or_skip(version) else {
        return;
    };
    for (lie, reason) in [
        (Lie::WrongDigest, "sha256"),
        (Lie::ShortBody, "announced"),
        (Lie::HugeContentLength, "announced 10737418240 bytes"),
        (Lie::HugeDescriptor, "over the 1073741824 byte limit"),
        (Lie::RedirectLoop, "too many redirects"),
        (Lie::Stall, "the registry stopped sending"),
        (
            Lie::HugeManifestLength,
            "is 10737418240 bytes, over the 4194304 byte limit",
        ),
        (Lie::EndlessManifest, "over the 4194304 byte limit"),
    ] {
        let registry = LyingRegistry::start(lie).unwrap();
        let reference = format!("{}/lie/app:v1", registry.address);
        let started = std::time::Instant::now();
        let out = pull_with(&containerd, &["--read-timeout", "2"], &reference);
        let took = started.elapsed();
        let error = text(&out.stderr);
        eprintln!("{lie:?} ({took:?}): {}", error.trim());
        assert!(!out.status.success(), "{lie:?}: pulled");
        assert!(error.contains(reason), "{lie:?}: {error}");
        assert!(
            took < std::time::Duration::from_secs(30),
            "{lie:?}: took {took:?}: {error}"
        );
        let images = containerd.ctr_ok(&["image", "ls", "-q"]);
        assert!(!images.contains("lie/app"), "{lie:?}: stored: {images}");
    }
}

/// Artifacts as other tools push them: `oras push` with a Kubernetes CRD (an OAM Component) as
/// the config, and as an OCI 1.1 artifact with the empty config. Both pull and run, with the
/// warning naming the fix in `pull`'s output and in the shim's log; SBOMs `oras attach`ed to
/// one show among its referrers in `inspect REF`, their subject checked.
fn artifacts_pushed_with_oras_run_with_a_warning_and_show_their_referrers(version: Version) {
    let oras = match wasmcell_tests::newer_tool("oras", "oras") {
        Ok(oras) => oras,
        Err(reason) => return or_skip::<()>(Err(reason)).unwrap_or_default(),
    };
    let Some((containerd, registry)) = containerd_and_registry(version) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("demo-app.wasm"),
        wasmcell_tests::demo_component(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("component.yaml"),
        "apiVersion: core.oam.dev/v1beta2\nkind: Component\nmetadata:\n  name: demo\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sbom.spdx.json"),
        r#"{"spdxVersion": "SPDX-2.3", "name": "demo-app"}"#,
    )
    .unwrap();
    let oras_ok = |args: &[&str]| {
        let out = Command::new(&oras)
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oras {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    let crd = format!("{}/wasmcell/oam-component:v1", registry.address);
    oras_ok(&[
        "push",
        "--plain-http",
        "--config",
        "component.yaml:application/vnd.oam.dev.component.v1+yaml",
        &crd,
        "demo-app.wasm:application/wasm",
    ]);
    let empty = format!("{}/wasmcell/oci-artifact:v1", registry.address);
    oras_ok(&[
        "push",
        "--plain-http",
        "--artifact-type",
        "application/vnd.example.wasm.module",
        &empty,
        "demo-app.wasm:application/wasm",
    ]);
    for (reference, config_type) in [
        (&crd, "application/vnd.oam.dev.component.v1+yaml"),
        (&empty, "application/vnd.oci.empty.v1+json"),
    ] {
        let warning = format!("its config ({config_type}) is not a wasm config");
        let out = pull(&containerd, reference);
        assert!(
            out.status.success(),
            "pull {reference}: {}",
            text(&out.stderr)
        );
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(said.contains(&warning), "pull {reference}: {said}");
        let ran = run_argv(
            &containerd,
            reference,
            "oras-pushed",
            &[],
            &["demo-app.wasm", "echo", "found"],
            b"",
        );
        assert_eq!(
            text(&ran.stdout),
            "found\n",
            "{reference}: {}",
            text(&ran.stderr)
        );
        let log = containerd.log();
        assert!(
            log.contains(&warning) && log.contains("wasmcell package --format artifact"),
            "{reference}: no warning in the shim's log:\n{log}"
        );
    }

    for artifact_type in ["application/spdx+json", "application/vnd.cyclonedx+json"] {
        oras_ok(&[
            "attach",
            "--plain-http",
            "--artifact-type",
            artifact_type,
            &crd,
            "sbom.spdx.json:application/json",
        ]);
    }
    let out = wasmcell(&["inspect", &crd]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("is not a wasm config"),
        "{shown}{}",
        text(&out.stderr)
    );
    for artifact_type in ["application/spdx+json", "application/vnd.cyclonedx+json"] {
        let line = shown
            .lines()
            .find(|l| l.contains("referrer") && l.contains(artifact_type))
            .unwrap_or_else(|| panic!("no {artifact_type} referrer in: {shown}"));
        assert!(!line.contains("does not name"), "{line}");
    }
}
