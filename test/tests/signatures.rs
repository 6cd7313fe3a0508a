//! `require_signature` at create, with real signatures: Debian's cosign 2 (legacy
//! `sha256-<hex>.sig` tags) and cosign 3 (Sigstore bundles as referrers) sign images in
//! Debian's docker-registry on loopback; oras moves and edits signatures to make the bad cases.
//! Signed images run; unsigned, another key's, another digest's and tampered signatures are
//! refused at create with the reason, through `ctr run` and through CRI; without the policy
//! nothing changes, and a verified digest is remembered.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use wasmcell_tests::containerd::{Containerd, Version};
use wasmcell_tests::cri::Registry;
use wasmcell_tests::image::{Entry, write_image_tar};
use wasmcell_tests::{demo_component, demo_tar, newer_tool, wasmcell_bin};

use crate::shim::{run_argv, text};

on_2_1_and_1_7!(
    signed_images_run_and_the_rest_are_refused_through_ctr,
    images_wasmcell_pull_stored_are_checked_against_what_the_registry_served,
    signed_images_run_and_the_rest_are_refused_through_cri,
);

/// The newer tools, or a loud skip (a failure under CI).
struct Tools {
    cosign2: PathBuf,
    cosign3: PathBuf,
    oras: PathBuf,
}

fn tools() -> Option<Tools> {
    let found = newer_tool("cosign-2", "cosign").and_then(|cosign2| {
        Ok(Tools {
            cosign2,
            cosign3: newer_tool("cosign-3", "cosign")?,
            oras: newer_tool("oras", "oras")?,
        })
    });
    match found {
        Ok(tools) => Some(tools),
        Err(reason) if wasmcell_tests::in_ci() => {
            panic!("CI=true and a prerequisite is missing: {reason}")
        }
        Err(reason) => {
            eprintln!("\n*** SKIPPED (not CI): {reason} ***\n");
            None
        }
    }
}

/// Two cosign key pairs (`release` trusted, `other` not) in `dir`, without passwords.
fn key_pairs(tools: &Tools, dir: &Path) -> PathBuf {
    for name in ["release", "other"] {
        run_tool(
            &tools.cosign2,
            dir,
            &["generate-key-pair", "--output-key-prefix", name],
        );
    }
    dir.join("release.pub")
}

fn run_tool(tool: &Path, dir: &Path, args: &[&str]) -> String {
    let out: Output = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .env("COSIGN_PASSWORD", "")
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        tool.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The digest the registry serves for `reference`.
fn digest_of(tools: &Tools, dir: &Path, reference: &str) -> String {
    run_tool(&tools.oras, dir, &["resolve", "--plain-http", reference])
        .trim()
        .to_owned()
}

/// Signs what `reference` names, by digest, with `cosign` and the key file `key` in `dir`;
/// returns the digest.
fn cosign_sign(
    tools: &Tools,
    cosign: &Path,
    dir: &Path,
    key: &str,
    reference: &str,
    extra: &[&str],
) -> String {
    let digest = digest_of(tools, dir, reference);
    let pinned = format!("{}@{digest}", reference.rsplit_once(':').unwrap().0);
    let mut args = vec![
        "sign",
        "--key",
        key,
        "--tlog-upload=false",
        "--allow-http-registry",
        "--allow-insecure-registry",
        "--yes",
    ];
    args.extend(extra);
    args.push(&pinned);
    run_tool(cosign, dir, &args);
    digest
}

/// The images of each case, pushed to `registry` and signed (or mis-signed) as named.
struct Cases {
    legacy: String,
    bundle: String,
    unsigned: String,
    other_key: String,
    other_digest: String,
    tampered: String,
}

impl Cases {
    /// Each refused case with what the refusal must say.
    fn refused(&self) -> [(&str, &str); 4] {
        [
            (&self.unsigned, "found: nothing (no tag sha256-"),
            (&self.other_key, "signed by none of the trusted keys"),
            (&self.other_digest, "not this digest"),
            (
                &self.tampered,
                "signed by none of the trusted keys (or tampered with)",
            ),
        ]
    }
}

fn sign_cases(tools: &Tools, dir: &Path, registry: &Registry) -> Cases {
    // Each case its own digest (a file naming it next to the program): a verdict is about a
    // digest, wherever it is stored, so cases must not share one.
    let program = demo_component();
    let push = |repository: &str| {
        let tar = dir.join(format!("{repository}.tar"));
        write_image_tar(
            &tar,
            &format!("localhost/wasmcell/{repository}:v1"),
            &[
                ("demo-app.wasm", Entry::File(program.clone(), 0o755)),
                ("case", Entry::File(repository.as_bytes().to_vec(), 0o644)),
            ],
        );
        registry
            .push(&tar, &format!("wasmcell/{repository}:v1"))
            .unwrap()
    };
    let digest_of = |reference: &str| digest_of(tools, dir, reference);
    let cosign_sign = |cosign: &Path, key: &str, reference: &str, extra: &[&str]| {
        cosign_sign(tools, cosign, dir, key, reference, extra);
    };
    let legacy = push("signed-legacy");
    cosign_sign(&tools.cosign2, "release.key", &legacy, &[]);
    let bundle = push("signed-bundle");
    cosign_sign(
        &tools.cosign3,
        "release.key",
        &bundle,
        &["--use-signing-config=false"],
    );
    let unsigned = push("unsigned");
    let other_key = push("other-key");
    cosign_sign(&tools.cosign2, "other.key", &other_key, &[]);

    // A valid signature of the legacy image, copied next to an image with another digest.
    let other_digest = push("other-digest");
    let signature_tag = |reference: &str| {
        format!(
            "{}:{}.sig",
            reference.rsplit_once(':').unwrap().0,
            digest_of(reference).replace(':', "-")
        )
    };
    run_tool(
        &tools.oras,
        dir,
        &[
            "cp",
            "--from-plain-http",
            "--to-plain-http",
            &signature_tag(&legacy),
            &signature_tag(&other_digest),
        ],
    );

    // A good signature whose bytes were changed afterwards.
    let tampered = push("tampered");
    cosign_sign(&tools.cosign2, "release.key", &tampered, &[]);
    let tag = signature_tag(&tampered);
    let manifest = run_tool(
        &tools.oras,
        dir,
        &["manifest", "fetch", "--plain-http", &tag],
    );
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let annotation =
        &mut manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut signature = b64.decode(annotation.as_str().unwrap()).unwrap();
    let middle = signature.len() / 2;
    signature[middle] ^= 0x01;
    *annotation = serde_json::Value::String(b64.encode(signature));
    let edited = dir.join("tampered.json");
    std::fs::write(&edited, serde_json::to_vec(&manifest).unwrap()).unwrap();
    run_tool(
        &tools.oras,
        dir,
        &[
            "manifest",
            "push",
            "--plain-http",
            "--media-type",
            "application/vnd.oci.image.manifest.v1+json",
            &tag,
            edited.to_str().unwrap(),
        ],
    );
    Cases {
        legacy,
        bundle,
        unsigned,
        other_key,
        other_digest,
        tampered,
    }
}

fn policy_toml(key: &Path) -> String {
    format!("require_signature = {{ keys = [\"{}\"] }}\n", key.display())
}

/// What the `ctr` scenarios share: a private containerd and registry, two key pairs and a
/// policy file that trusts `release.pub`.
struct Scene {
    tools: Tools,
    containerd: Containerd,
    registry: Registry,
    temp: tempfile::TempDir,
    key: PathBuf,
    policy: PathBuf,
}

fn scene(version: Version) -> Option<Scene> {
    let tools = tools()?;
    let started = Containerd::start(version).and_then(|c| Ok((c, Registry::start()?)));
    let (containerd, registry) = match started {
        Ok(started) => started,
        Err(reason) if wasmcell_tests::in_ci() => panic!("CI=true: {reason}"),
        Err(reason) => {
            eprintln!("\n*** SKIPPED (not CI): {reason} ***\n");
            return None;
        }
    };
    let temp = tempfile::tempdir().unwrap();
    let key = key_pairs(&tools, temp.path());
    let policy = temp.path().join("signed-only.toml");
    std::fs::write(&policy, policy_toml(&key)).unwrap();
    Some(Scene {
        tools,
        containerd,
        registry,
        temp,
        key,
        policy,
    })
}

fn signed_images_run_and_the_rest_are_refused_through_ctr(version: Version) {
    let Some(Scene {
        tools,
        containerd,
        registry,
        temp,
        key,
        policy,
    }) = scene(version)
    else {
        return;
    };
    let dir = temp.path();
    let cases = sign_cases(&tools, dir, &registry);
    let with_policy = ["--runtime-config-path", policy.to_str().unwrap()];
    let pull = |reference: &str| {
        containerd.ctr_ok(&["image", "pull", "--plain-http", reference]);
    };

    // Through a mirror, as containerd's hosts.toml says: pulled by a name that resolves only
    // through the hosts directory, and checked through the same one (with both keys, so the
    // verdict is not one remembered from the runs below).
    let hosts_dir = dir.join("certs.d");
    let mirrored_host = "registry.wasmcell.test";
    std::fs::create_dir_all(hosts_dir.join(mirrored_host)).unwrap();
    std::fs::write(
        hosts_dir.join(mirrored_host).join("hosts.toml"),
        format!(
            "server = \"https://{mirrored_host}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.address
        ),
    )
    .unwrap();
    let mirrored_policy = dir.join("mirrored.toml");
    std::fs::write(
        &mirrored_policy,
        format!(
            "[require_signature]\nkeys = [\"{}\", \"{}\"]\nhosts_dirs = [\"{}\"]\n",
            dir.join("other.pub").display(),
            key.display(),
            hosts_dir.display()
        ),
    )
    .unwrap();
    let mirrored = cases.bundle.replace(&registry.address, mirrored_host);
    containerd.ctr_ok(&[
        "image",
        "pull",
        "--hosts-dir",
        hosts_dir.to_str().unwrap(),
        &mirrored,
    ]);
    let out = run_argv(
        &containerd,
        &mirrored,
        "mirrored",
        &["--runtime-config-path", mirrored_policy.to_str().unwrap()],
        &["/demo-app.wasm", "echo", "mirrored"],
        b"",
    );
    assert_eq!(text(&out.stdout), "mirrored\n", "{}", text(&out.stderr));

    for (n, signed) in [&cases.legacy, &cases.bundle].into_iter().enumerate() {
        pull(signed);
        let out = run_argv(
            &containerd,
            signed,
            &format!("signed-{n}"),
            &with_policy,
            &["/demo-app.wasm", "echo", "signed"],
            b"",
        );
        assert_eq!(
            text(&out.stdout),
            "signed\n",
            "{signed}: {}\n{}",
            text(&out.stderr),
            containerd.log()
        );
    }
    for (n, (image, reason)) in cases.refused().into_iter().enumerate() {
        pull(image);
        let out = run_argv(
            &containerd,
            image,
            &format!("refused-{n}"),
            &with_policy,
            &["/demo-app.wasm", "echo", "refused"],
            b"",
        );
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{image} ran: {err}");
        for part in [
            "require_signature",
            image,
            &format!("key {}", key.display()),
            reason,
        ] {
            assert!(err.contains(part), "{image}: missing {part:?} in: {err}");
        }
        assert!(text(&out.stdout).is_empty(), "{image}: the guest ran");
    }

    // `wasmcell verify` gives the same verdicts.
    let verify = |reference: &str| {
        Command::new(wasmcell_bin())
            .args(["verify", "--key", key.to_str().unwrap(), reference])
            .output()
            .unwrap()
    };
    for signed in [&cases.legacy, &cases.bundle] {
        let out = verify(signed);
        assert!(
            out.status.success(),
            "verify {signed}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("signed by"),
            "{}",
            text(&out.stdout)
        );
    }
    for (image, reason) in cases.refused() {
        let out = verify(image);
        assert_eq!(out.status.code(), Some(1), "verify {image}");
        assert!(
            text(&out.stderr).contains(reason),
            "verify {image}: {}",
            text(&out.stderr)
        );
    }

    // A verified digest is remembered: with the registry gone, the signed image still runs
    // under the policy, while an unverified one is refused; without the policy, the unsigned
    // image runs and nothing is asked of the (stopped) registry.
    drop(registry);
    let out = run_argv(
        &containerd,
        &cases.legacy,
        "remembered",
        &with_policy,
        &["/demo-app.wasm", "echo", "remembered"],
        b"",
    );
    assert_eq!(text(&out.stdout), "remembered\n", "{}", text(&out.stderr));
    let out = run_argv(
        &containerd,
        &cases.unsigned,
        "unreachable",
        &with_policy,
        &["/demo-app.wasm", "echo", "x"],
        b"",
    );
    assert!(
        text(&out.stderr).contains("require_signature"),
        "{}",
        text(&out.stderr)
    );
    let out = run_argv(
        &containerd,
        &cases.unsigned,
        "no-policy",
        &[],
        &["/demo-app.wasm", "echo", "unchecked"],
        b"",
    );
    assert_eq!(text(&out.stdout), "unchecked\n", "{}", text(&out.stderr));
}

fn signed_images_run_and_the_rest_are_refused_through_cri(version: Version) {
    let Some(tools) = tools() else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let key = key_pairs(&tools, keys.path());
    let options = format!("      {}", policy_toml(&key));
    let Some(node) = crate::kubernetes::node_with(version, true, Some(options.trim_end())) else {
        return;
    };
    let cases = sign_cases(&tools, keys.path(), &node.registry);
    let sandbox = node.sandbox_config("signed", false);
    let pod = node.run_pod(&sandbox);
    for (n, signed) in [&cases.legacy, &cases.bundle].into_iter().enumerate() {
        node.pull(signed, &sandbox);
        let (code, lines) = node.run_to_exit(
            &pod,
            &sandbox,
            &format!("signed-{n}"),
            signed,
            &["/demo-app.wasm", "echo", "signed"],
        );
        assert_eq!(code, 0, "{signed}: {lines:?}\n{}", node.containerd.log());
        assert!(lines.iter().any(|(_, l)| l == "signed"), "{lines:?}");
    }
    for (n, (image, reason)) in cases.refused().into_iter().enumerate() {
        node.pull(image, &sandbox);
        let id = node
            .create(
                &pod,
                &sandbox,
                &format!("refused-{n}"),
                image,
                &["/demo-app.wasm", "echo", "refused"],
            )
            .unwrap_or_else(|e| panic!("CreateContainer {image}: {e}"));
        let err = node.try_start(&id).err().unwrap_or_default();
        for part in ["require_signature", image, reason] {
            assert!(err.contains(part), "{image}: missing {part:?} in: {err}");
        }
    }
    node.stop_and_remove_pod(&pod);
}

/// `wasmcell pull` stores an artifact made runnable (a manifest of its own) and, from an index,
/// the one manifest it chose: the signature is looked for on what the registry served, and
/// what runs must be what that lists. A label pointing at another signed manifest is refused.
fn images_wasmcell_pull_stored_are_checked_against_what_the_registry_served(version: Version) {
    let Some(Scene {
        tools,
        containerd,
        registry,
        temp,
        key: _,
        policy,
    }) = scene(version)
    else {
        return;
    };
    let dir = temp.path();
    let with_policy = ["--runtime-config-path", policy.to_str().unwrap()];
    let wasmcell_ok = |args: &[&str]| {
        let out = Command::new(wasmcell_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "wasmcell {args:?}: {}",
            text(&out.stderr)
        );
    };
    let client = containerd.wasmcell_options();
    let pull = |reference: &str| {
        let mut args = vec!["pull"];
        args.extend(client.iter().map(String::as_str));
        args.push(reference);
        wasmcell_ok(&args)
    };
    let sign =
        |reference: &str| cosign_sign(&tools, &tools.cosign2, dir, "release.key", reference, &[]);
    // Runs `reference` under the policy and finds the verdict naming `signed` in the log.
    let runs_made_from = |reference: &str, word: &str, signed: &str| {
        let out = run_argv(
            &containerd,
            reference,
            word,
            &with_policy,
            &["demo-app.wasm", "echo", word],
            b"",
        );
        assert_eq!(
            text(&out.stdout),
            format!("{word}\n"),
            "{}",
            text(&out.stderr)
        );
        let log = containerd.log();
        assert!(
            log.contains(&format!("made from the signed {signed}")),
            "{log}"
        );
    };
    let artifact = demo_tar("demo-app-artifact.tar");

    // A signed artifact, made runnable by `wasmcell pull`.
    let signed = format!("{}/wasmcell/signed-artifact:v1", registry.address);
    wasmcell_ok(&["push", artifact.to_str().unwrap(), &signed]);
    let signed_digest = sign(&signed);
    pull(&signed);
    runs_made_from(&signed, "converted", &signed_digest);

    // The same artifact behind a signed index: the index is what the tag names.
    let indexed = format!("{}/wasmcell/signed-artifact:indexed", registry.address);
    run_tool(
        &tools.oras,
        dir,
        &[
            "manifest",
            "index",
            "create",
            "--plain-http",
            &indexed,
            &signed_digest,
        ],
    );
    let index_digest = sign(&indexed);
    pull(&indexed);
    runs_made_from(&indexed, "indexed", &index_digest);

    // Unsigned: refused, naming the manifest the registry served.
    let unsigned = format!("{}/wasmcell/unsigned-artifact:v1", registry.address);
    let other = dir.join("other.tar");
    write_image_tar(
        &other,
        "localhost/wasmcell/other:v1",
        &[("case", Entry::File(b"other".to_vec(), 0o644))],
    );
    wasmcell_ok(&["push", artifact.to_str().unwrap(), &unsigned]);
    pull(&unsigned);
    let refusal = |id: &str| {
        let out = run_argv(
            &containerd,
            &unsigned,
            id,
            &with_policy,
            &["demo-app.wasm", "echo", "x"],
            b"",
        );
        assert!(text(&out.stdout).is_empty(), "{id}: the guest ran");
        text(&out.stderr)
    };
    let err = refusal("unsigned-artifact");
    assert!(
        err.contains("require_signature") && err.contains("found: nothing"),
        "{err}"
    );

    // A label that points at some other signed manifest does not lend its signature.
    let stranger = registry
        .push(&other, "wasmcell/unsigned-artifact:stranger")
        .unwrap();
    let stranger_digest = sign(&stranger);
    containerd.ctr_ok(&[
        "image",
        "label",
        &unsigned,
        &format!("dev.wasmcell.pulled-from={stranger_digest}"),
    ]);
    let err = refusal("relabelled");
    assert!(
        err.contains(&format!(
            "the signed {stranger_digest} does not list what runs"
        )),
        "{err}"
    );
}
