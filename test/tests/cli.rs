//! The `wasmcell` command as a user runs it.

use wasmcell_tests::{demo_tar, run, run_ok, wasmcell_bin};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["package", "--help"],
        &["inspect", "--help"],
        &["push", "--help"],
        &["pull", "--help"],
        &["help"],
    ] {
        let text = run_ok(wasmcell_bin(), args);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let text = run_ok(wasmcell_bin(), &["package", "--help"]);
    for flag in ["--format", "--name", "--module", "--annotation", "--output"] {
        assert!(text.contains(flag), "package --help lacks {flag}");
    }
    let text = run_ok(wasmcell_bin(), &["pull", "--help"]);
    for flag in [
        "--creds",
        "--authfile",
        "--plain-http",
        "--max-blob-size",
        "--address",
    ] {
        assert!(text.contains(flag), "pull --help lacks {flag}");
    }
}

/// The demo component, taken out of the wasm-layer demo image.
fn demo_component(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("app.wasm");
    std::fs::write(&path, wasmcell_tests::demo_component()).unwrap();
    path
}

#[test]
fn package_then_inspect_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let module = demo_component(dir.path());
    let out = dir.path().join("app.tar");
    let module_arg = module.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let printed = run_ok(
        wasmcell_bin(),
        &[
            "package",
            "--format",
            "artifact",
            "--name",
            "127.0.0.1:5000/me/app:1.0",
            "--module",
            module_arg,
            "--annotation",
            "org.example.team=wasm",
            "--target",
            "wasi:cli/command@0.2.0",
            "-o",
            out_arg,
        ],
    );
    assert!(
        printed.contains("127.0.0.1:5000/me/app:1.0 component"),
        "{printed}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&run_ok(wasmcell_bin(), &["inspect", "--json", out_arg])).unwrap();
    let image = &json["images"][0];
    assert_eq!(image["names"][0], "127.0.0.1:5000/me/app:1.0");
    assert_eq!(
        image["config"]["descriptor"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(image["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(image["config"]["content"]["os"], "wasip2");
    assert_eq!(
        image["config"]["content"]["target"],
        "wasi:cli/command@0.2.0"
    );
    assert_eq!(
        image["config"]["content"]["imports"],
        image["layers"][0]["wasm"]["imports"]
    );

    let text = run_ok(wasmcell_bin(), &["inspect", out_arg]);
    for needle in [
        "every blob verified",
        "application/wasm",
        "wasi:cli/run@0.2.0",
        "os wasip2",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks {needle:?}:\n{text}"
        );
    }

    // Same inputs, same bytes.
    let again = dir.path().join("again.tar");
    run_ok(
        wasmcell_bin(),
        &[
            "package",
            "--format",
            "artifact",
            "--name",
            "127.0.0.1:5000/me/app:1.0",
            "--module",
            module_arg,
            "--annotation",
            "org.example.team=wasm",
            "--target",
            "wasi:cli/command@0.2.0",
            "-o",
            again.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap());
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("script.sh");
    std::fs::write(&not_wasm, "#!/bin/sh\necho hi\n").unwrap();
    let out = dir.path().join("out.tar");
    let result = run(
        wasmcell_bin(),
        &[
            "package",
            "--format",
            "image",
            "--name",
            "x",
            "--module",
            not_wasm.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(result.status.code(), Some(1));
    let err = stderr(&result);
    assert!(
        err.contains("script.sh") && err.contains("not a wasm binary"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "a failed package must not leave {}",
        out.display()
    );

    let module = demo_component(dir.path());
    for (args, expected) in [
        (vec!["--name", "UPPER/case"], "path component \"UPPER\""),
        (
            vec!["--name", "ok", "--annotation", "novalue"],
            "must be KEY=VALUE",
        ),
        (
            vec!["--name", "ok", "--path", "relative.wasm"],
            "must be absolute",
        ),
    ] {
        let mut full = vec![
            "package",
            "--format",
            "image",
            "--module",
            module.to_str().unwrap(),
        ];
        full.extend(args);
        full.extend(["-o", out.to_str().unwrap()]);
        let result = run(wasmcell_bin(), &full);
        assert_eq!(result.status.code(), Some(1), "{full:?}");
        assert!(
            stderr(&result).contains(expected),
            "{full:?}: {}",
            stderr(&result)
        );
        assert!(!out.exists());
    }

    let result = run(
        wasmcell_bin(),
        &["package", "--format", "zip", "--name", "x"],
    );
    assert_eq!(result.status.code(), Some(2), "usage errors exit 2");
    assert!(stderr(&result).contains("unknown package format \"zip\""));

    let result = run(wasmcell_bin(), &["inspect", not_wasm.to_str().unwrap()]);
    assert_eq!(result.status.code(), Some(2), "unreadable input exits 2");
    assert!(
        stderr(&result).contains("is not an image archive"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn worlds_lists_what_the_host_provides() {
    let text = run_ok(wasmcell_bin(), &["worlds"]);
    assert!(
        text.starts_with(
            "wasi:cli/command@0.2.12 (components exporting wasi:cli/run@0.2.x; imports at any \
             0.2.x version match)"
        ),
        "{text}"
    );
    for name in [
        "  wasi:cli/environment@0.2.12",
        "  wasi:sockets/tcp@0.2.12",
        "wasi:http/proxy@0.2.12 (components exporting wasi:http/incoming-handler@0.2.x, served \
         over HTTP, a fresh instance per request; imports at any 0.2.x version match)",
        "  wasi:http/outgoing-handler@0.2.12",
        "wasi:cli/command@0.3.0 (components exporting wasi:cli/run@0.3.x, run with the 0.2 \
         interfaces too; imports at any 0.3.x or 0.2.x version match)",
        "  wasi:cli/stdout@0.3.0",
        "  wasi:filesystem/types@0.3.0",
        "wasi:http/service@0.3.0 (components exporting wasi:http/handler@0.3.x, served over \
         HTTP, instances shared between requests; imports at any 0.3.x or 0.2.x version match)",
        "  wasi:http/client@0.3.0",
        "wasi_snapshot_preview1 (core modules)",
        "  wasi_snapshot_preview1.fd_write",
    ] {
        assert!(text.lines().any(|l| l == name), "missing {name:?}:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(wasmcell_bin(), &["worlds", "--json"])).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["world"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "wasi:cli/command@0.2.12",
            "wasi:http/proxy@0.2.12",
            "wasi:cli/command@0.3.0",
            "wasi:http/service@0.3.0",
            "wasi_snapshot_preview1"
        ]
    );
    assert_eq!(json[4]["kind"], "module");
    // The 0.3 command world keeps 0.2 (what a 0.3 component's std imports); 0.2's has no 0.3.
    let provides = |i: usize| json[i]["provides"].as_array().unwrap().clone();
    assert!(provides(2).iter().any(|p| p == "wasi:io/streams@0.2.12"));
    assert!(!provides(0).iter().any(|p| p == "wasi:cli/stdout@0.3.0"));
}

/// `wasmcell inspect` judges an archive as the shim would, for this host and a policy.
#[test]
fn inspect_gives_the_verdict_for_this_host_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    // The exit status is the verdict (0 runs, 1 refused), and so is the JSON's top level.
    let inspect = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["inspect", "--json"];
        full.extend(args);
        let out = run(wasmcell_bin(), &full);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
        let (expected_code, expected) = if json["images"][0]["verdict"]["runs"] == true {
            (0, "runs")
        } else {
            (1, "refused")
        };
        assert_eq!(out.status.code(), Some(expected_code), "{}", stderr(&out));
        assert_eq!(json["verdict"], expected);
        json
    };
    let text_of = |path: &str, code: i32| {
        let out = run(wasmcell_bin(), &["inspect", path]);
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let artifact = demo_tar("demo-app-artifact.tar");
    let artifact = artifact.to_str().unwrap();
    let verdict = &inspect(&[artifact])["images"][0]["verdict"];
    assert_eq!(verdict["runs"], true, "{verdict}");
    let text = text_of(artifact, 0);
    assert!(
        text.contains("  verdict (no policy): runs on this host"),
        "{text}"
    );

    let policy = dir.path().join("strict.toml");
    std::fs::write(&policy, "deny = [\"wasi:sockets/*\"]\n").unwrap();
    let verdict =
        &inspect(&["--policy", policy.to_str().unwrap(), artifact])["images"][0]["verdict"];
    assert_eq!(verdict["runs"], false);
    let config_check = verdict["checks"][0]["message"].as_str().unwrap_or_default();
    assert!(
        config_check.contains("wasi:sockets/tcp@0.2.6 (denied by policy \"wasi:sockets/*\""),
        "{verdict}"
    );

    // A config that hides an import the binary has.
    let wasm = wat::parse_str(
        r#"(component (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "open" (func)))))"#,
    )
    .unwrap();
    let liar = dir.path().join("liar.tar");
    wasmcell_tests::image::write_artifact_tar(
        &liar,
        "localhost/test/liar:latest",
        &wasm,
        serde_json::json!({"architecture": "wasm", "os": "wasip2", "component": {"imports": [], "exports": []}}),
    );
    let text = text_of(liar.to_str().unwrap(), 1);
    assert!(text.contains("  verdict (no policy): refused"), "{text}");
    assert!(text.contains("    wasm config: ok"), "{text}");
    assert!(
        text.contains("    binary imports: the component cannot run on this host: 1 import cannot be satisfied on this host (wasi:cli/command@0.2.12): wasi:keyvalue/store@0.2.0-draft (not provided by this host)"),
        "{text}"
    );
    assert!(
        text.contains("    config matches binary: the wasm config and the binary disagree: config declares [], binary imports [wasi:keyvalue/store@0.2.0-draft]"),
        "{text}"
    );

    // A classic image: the program is read from its filesystem, then type-checked.
    let module = dir.path().join("envfoo.wasm");
    std::fs::write(
        &module,
        wat::parse_str(r#"(module (import "env" "foo" (func)) (func (export "_start")))"#).unwrap(),
    )
    .unwrap();
    let image = dir.path().join("envfoo.tar");
    run_ok(
        wasmcell_bin(),
        &[
            "package",
            "--format",
            "image",
            "--name",
            "localhost/test/envfoo:latest",
            "--module",
            module.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
        ],
    );
    let verdict = &inspect(&["--compile", image.to_str().unwrap()])["images"][0]["verdict"];
    assert_eq!(verdict["runs"], false);
    let checks = verdict["checks"].to_string();
    assert!(
        checks.contains("env.foo (not provided; the host has wasi_snapshot_preview1.*)"),
        "{checks}"
    );
    assert!(checks.contains("compiled and type-checked"), "{checks}");
}
