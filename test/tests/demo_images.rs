//! The demo tars of `make demo-images`: their content, reproducibility, and acceptance by
//! independent clients (skopeo, containerd's `ctr image import`).

use std::path::PathBuf;
use std::process::Command;

use wasmcell_oci::media_types as mt;
use wasmcell_oci::{Config, ReadLimits, read_archive};
use wasmcell_tests::containerd::Version;
use wasmcell_tests::{
    DEMO_IMAGES, containerd_or_skip, demo_tar, run_ok, skip_or_fail, which, workspace_root,
};

#[test]
fn demo_tars_hold_the_expected_images() {
    let expect_layer = [
        mt::OCI_LAYER_TAR,
        mt::WASM_COMPONENT_LAYER_V0,
        mt::WASM_LAYER,
        mt::OCI_LAYER_TAR,
        mt::WASM_LAYER,
        mt::OCI_LAYER_TAR,
        mt::WASM_LAYER,
        mt::OCI_LAYER_TAR,
        mt::WASM_LAYER,
    ];
    assert_eq!(expect_layer.len(), DEMO_IMAGES.len());
    for ((file, name), layer_type) in DEMO_IMAGES.iter().zip(expect_layer) {
        let archive = read_archive(&demo_tar(file), ReadLimits::default()).unwrap();
        assert_eq!(archive.images.len(), 1, "{file}");
        let image = &archive.images[0];
        assert_eq!(
            image.names.first().map(String::as_str),
            Some(*name),
            "{file}"
        );
        assert_eq!(image.layers.len(), 1, "{file}");
        assert_eq!(
            image.layers[0].descriptor.media_type().to_string(),
            layer_type,
            "{file}"
        );
        let os = image.platform().map(|p| p.os().to_string());
        assert_eq!(
            os.as_deref(),
            Some("wasip2"),
            "{file}: the demo is a component"
        );
    }
}

#[test]
fn the_http_demo_is_a_proxy_component() {
    let archive = read_archive(&demo_tar("demo-http-artifact.tar"), ReadLimits::default()).unwrap();
    let image = &archive.images[0];
    let Config::Wasm(config) = &image.config else {
        panic!("artifact config is not a wasm config")
    };
    assert_eq!(
        config.component.as_ref().and_then(|c| c.target.as_deref()),
        Some("wasi:http/proxy@0.2.0")
    );
    let decoded = wasmcell_oci::inspect_wasm(&image.layers[0].bytes).unwrap();
    assert!(
        decoded
            .exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
        "exports {:?}",
        decoded.exports
    );
    assert!(
        !decoded
            .exports
            .iter()
            .any(|e| e.starts_with("wasi:cli/run")),
        "a proxy component is not a command: {:?}",
        decoded.exports
    );
    assert!(
        decoded
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler@0.2.")),
        "/fetch needs outgoing-handler: {:?}",
        decoded.imports
    );
    // The image form carries the same component at /demo-http.wasm.
    let image_form = read_archive(&demo_tar("demo-http-image.tar"), ReadLimits::default()).unwrap();
    assert_eq!(
        image_form.images[0].names.first().map(String::as_str),
        Some("localhost/wasmcell/demo-http:latest")
    );
}

/// The 0.3 demos are 0.3 components: their artifacts name the 0.3 worlds, they export the
/// 0.3 entry points, and their own calls go through 0.3 interfaces (the 0.2 imports are what
/// Rust's standard library brings).
#[test]
fn the_p3_demos_are_wasi_0_3_components() {
    for (file, target, export, import) in [
        (
            "demo-p3-artifact.tar",
            "wasi:cli/command@0.3.0",
            "wasi:cli/run@0.3.0",
            "wasi:cli/stdout@0.3.0",
        ),
        (
            "demo-p3-http-artifact.tar",
            "wasi:http/service@0.3.0",
            "wasi:http/handler@0.3.0",
            "wasi:http/client@0.3.0",
        ),
    ] {
        let archive = read_archive(&demo_tar(file), ReadLimits::default()).unwrap();
        let image = &archive.images[0];
        let Config::Wasm(config) = &image.config else {
            panic!("{file}: artifact config is not a wasm config")
        };
        assert_eq!(
            config.component.as_ref().and_then(|c| c.target.as_deref()),
            Some(target),
            "{file}"
        );
        let decoded = wasmcell_oci::inspect_wasm(&image.layers[0].bytes).unwrap();
        assert_eq!(decoded.exports, [export], "{file}");
        assert!(
            decoded.imports.iter().any(|i| i == import),
            "{file}: imports {:?}",
            decoded.imports
        );
    }
}

#[test]
fn artifact_config_imports_are_the_components_own() {
    let archive = read_archive(&demo_tar("demo-app-artifact.tar"), ReadLimits::default()).unwrap();
    let image = &archive.images[0];
    let Config::Wasm(config) = &image.config else {
        panic!("artifact config is not a wasm config")
    };
    assert_eq!(config.os, "wasip2");
    let section = config.component.as_ref().expect("component section");
    let wasm = &image.layers[0].bytes;
    let decoded = wasmcell_oci::inspect_wasm(wasm).unwrap();
    assert_eq!(section.imports, decoded.imports);
    assert!(
        section
            .exports
            .iter()
            .any(|e| e.starts_with("wasi:cli/run@0.2.")),
        "exports {:?} lack wasi:cli/run@0.2.x",
        section.exports
    );
    assert!(
        section
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:cli/environment@0.2."))
    );
}

#[test]
fn demo_images_rebuild_byte_identical_from_clean() {
    // A fresh target directory is a clean tree for cargo; one `cargo build` must produce all
    // three tars, identical to the ones `make demo-images` built.
    let temp = tempfile::tempdir().unwrap();
    let oci = temp.path().join("oci");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["build", "-p", "demo-app", "--locked", "--offline"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", temp.path().join("target"))
        .env("WASMCELL_OCI_OUT", &oci)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, _) in DEMO_IMAGES {
        let rebuilt = std::fs::read(oci.join(file)).unwrap();
        let original = std::fs::read(demo_tar(file)).unwrap();
        assert!(rebuilt == original, "{file} differs after a clean rebuild");
    }
}

fn skopeo() -> Option<PathBuf> {
    which("skopeo")
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let skopeo = skopeo().unwrap();
    serde_json::from_str(&run_ok(skopeo, args)).unwrap()
}

#[test]
fn skopeo_reads_every_demo_tar() {
    if skopeo().is_none() {
        skip_or_fail!("skopeo is not installed (apt-get install skopeo)");
    }
    let expect = [
        (mt::OCI_IMAGE_CONFIG, mt::OCI_LAYER_TAR),
        (mt::OCI_IMAGE_CONFIG, mt::WASM_COMPONENT_LAYER_V0),
        (mt::WASM_CONFIG_V0, mt::WASM_LAYER),
        (mt::OCI_IMAGE_CONFIG, mt::OCI_LAYER_TAR),
        (mt::WASM_CONFIG_V0, mt::WASM_LAYER),
        (mt::OCI_IMAGE_CONFIG, mt::OCI_LAYER_TAR),
        (mt::WASM_CONFIG_V0, mt::WASM_LAYER),
        (mt::OCI_IMAGE_CONFIG, mt::OCI_LAYER_TAR),
        (mt::WASM_CONFIG_V0, mt::WASM_LAYER),
    ];
    assert_eq!(expect.len(), DEMO_IMAGES.len());
    for ((file, _), (config_type, layer_type)) in DEMO_IMAGES.iter().zip(expect) {
        let reference = format!("oci-archive:{}", demo_tar(file).display());
        let manifest = skopeo_json(&["inspect", "--raw", &reference]);
        assert_eq!(manifest["mediaType"], mt::OCI_IMAGE_MANIFEST, "{file}");
        assert_eq!(manifest["config"]["mediaType"], config_type, "{file}");
        assert_eq!(manifest["layers"][0]["mediaType"], layer_type, "{file}");
        let config = skopeo_json(&["inspect", "--raw", "--config", &reference]);
        assert_eq!(config["architecture"], "wasm", "{file}");
        assert_eq!(config["os"], "wasip2", "{file}");
        if config_type == mt::OCI_IMAGE_CONFIG {
            // skopeo's image view refuses artifacts by design; images must pass it.
            let image = skopeo_json(&["inspect", &reference]);
            assert_eq!(image["Architecture"], "wasm", "{file}");
            assert_eq!(image["Os"], "wasip2", "{file}");
        }
    }
}

fn ctr_imports(version: Version, no_unpack: &[&str]) {
    let containerd = containerd_or_skip!(version);
    for (file, _) in DEMO_IMAGES {
        let tar = demo_tar(file);
        let mut args = vec!["image", "import", "--all-platforms"];
        if no_unpack.contains(&file) {
            args.push("--no-unpack");
        }
        args.push(tar.to_str().unwrap());
        containerd.ctr_ok(&args);
    }
    let listed = containerd.ctr_ok(&["image", "ls", "-q"]);
    for (file, name) in DEMO_IMAGES {
        assert!(
            listed.lines().any(|l| l.trim() == name),
            "containerd {} did not register {name} from {file}; it lists:\n{listed}",
            version.as_str()
        );
    }
}

#[test]
fn containerd_2_1_imports_every_demo_tar() {
    ctr_imports(Version::V2_1, &[]);
}

#[test]
fn containerd_1_7_imports_every_demo_tar() {
    ctr_imports(Version::V1_7, &[]);
}

#[test]
fn containerd_1_6_imports_every_demo_tar_wasm_layers_without_unpacking() {
    // 1.6's unpacker has no notion of non-tar layers ("mismatched image rootfs and manifest
    // layers"), so the wasm-layer image and the artifact are imported with --no-unpack there,
    // as the README says.
    ctr_imports(
        Version::V1_6,
        &[
            "demo-app-wasm-layer.tar",
            "demo-app-artifact.tar",
            "demo-http-artifact.tar",
            "demo-p3-artifact.tar",
            "demo-p3-http-artifact.tar",
        ],
    );
}
