//! Reading, writing and extracting archives, with every bad input the formats issue names:
//! each test checks that the error names the problem and that nothing is left behind or
//! changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wasmcell_oci::digest::sha256_digest;
use wasmcell_oci::extract::{ExtractLimits, LayerInput, extract_layers};
use wasmcell_oci::media_types as mt;
use wasmcell_oci::{
    Config, PackageFormat, PackageSpec, ReadLimits, build_package, read_archive, write_package,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A tiny WASI preview 1 module.
fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")))"#,
    )
    .unwrap_or_default()
}

/// A tiny component importing two WASI interfaces and exporting `wasi:cli/run`.
fn component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (import "wasi:cli/environment@0.2.0" (instance))
            (import "wasi:io/streams@0.2.3" (instance))
            (instance $run)
            (export "wasi:cli/run@0.2.0" (instance $run)))"#,
    )
    .unwrap_or_default()
}

fn spec(format: PackageFormat, wasm: Vec<u8>) -> PackageSpec {
    PackageSpec {
        format,
        reference: "localhost/test/app:v1".to_owned(),
        wasm,
        wasm_path: "/app.wasm".to_owned(),
        annotations: BTreeMap::from([
            ("b.key".to_owned(), "2".to_owned()),
            ("a.key".to_owned(), "1".to_owned()),
            ("c.key".to_owned(), "3".to_owned()),
        ]),
        created_epoch: 1_700_000_000,
        author: Some("tests".to_owned()),
        target: None,
    }
}

/// The files of a layout tar.
fn files_of(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().into_iter().flatten().flatten() {
        let mut entry = entry;
        if entry.header().entry_type().is_file() {
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let mut bytes = Vec::new();
            let _ = std::io::Read::read_to_end(&mut entry, &mut bytes);
            out.insert(path, bytes);
        }
    }
    out
}

fn tar_of(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        let _ = builder.append_data(&mut header, path, bytes.as_slice());
    }
    builder.into_inner().unwrap_or_default()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_default()
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Writes `files` as a tar in `dir`, tries to read it, and checks the archive is unchanged.
fn read_error(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> String {
    let path = dir.join("bad.tar");
    let bytes = tar_of(files);
    std::fs::write(&path, &bytes).unwrap_or_default();
    let result = read_archive(&path, ReadLimits::default());
    assert_eq!(
        std::fs::read(&path).unwrap_or_default(),
        bytes,
        "reading changed the archive"
    );
    match result {
        Ok(_) => String::from("<no error>"),
        Err(e) => e.to_string(),
    }
}

/// The manifest digest and parsed manifest of a one-image layout.
fn manifest_of(files: &BTreeMap<String, Vec<u8>>) -> (String, serde_json::Value) {
    let index = json(&files["index.json"]);
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let manifest = json(&files[&blob_path(&digest)]);
    (digest, manifest)
}

/// Replaces the manifest with `manifest`, fixing the index to point at it.
fn put_manifest(files: &mut BTreeMap<String, Vec<u8>>, manifest: &serde_json::Value) {
    let bytes = serde_json::to_vec(manifest).unwrap_or_default();
    let digest = sha256_digest(&bytes);
    let mut index = json(&files["index.json"]);
    index["manifests"][0]["digest"] = digest.clone().into();
    index["manifests"][0]["size"] = bytes.len().into();
    files.insert(blob_path(&digest), bytes);
    files.insert(
        "index.json".into(),
        serde_json::to_vec(&index).unwrap_or_default(),
    );
}

/// Replaces the config with `bytes` (of `media_type`), fixing the manifest and index.
fn put_config(files: &mut BTreeMap<String, Vec<u8>>, bytes: Vec<u8>, media_type: &str) {
    let (_, mut manifest) = manifest_of(files);
    let digest = sha256_digest(&bytes);
    manifest["config"] =
        serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
    files.insert(blob_path(&digest), bytes);
    put_manifest(files, &manifest);
}

fn good(format: PackageFormat, wasm: Vec<u8>) -> BTreeMap<String, Vec<u8>> {
    match build_package(&spec(format, wasm), "test.wasm") {
        Ok(p) => files_of(&p.tar),
        Err(e) => panic!("building a good package failed: {e}"),
    }
}

#[test]
fn every_format_round_trips_through_the_reader() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (format, wasm) in [
        (PackageFormat::Image, module()),
        (PackageFormat::WasmLayer, component()),
        (PackageFormat::Artifact, component()),
        (PackageFormat::Artifact, module()),
    ] {
        let out = dir.path().join("out.tar");
        let summary = write_package(&spec(format, wasm.clone()), "test.wasm", &out)?;
        let archive = read_archive(&out, ReadLimits::default())?;
        assert_eq!(archive.images.len(), 1);
        let image = &archive.images[0];
        assert_eq!(image.names, ["localhost/test/app:v1", "v1"]);
        assert_eq!(
            image.manifest_descriptor.digest().to_string(),
            summary.manifest_digest
        );
        let platform = image.platform().map(|p| p.os().to_string());
        assert_eq!(platform.as_deref(), Some(summary.wasm.kind.wasi_os()));
        match format {
            PackageFormat::Image => {
                assert_eq!(
                    image.layers[0].descriptor.media_type().to_string(),
                    mt::OCI_LAYER_TAR
                );
                let root = dir.path().join("rootfs");
                let layer = &image.layers[0];
                let media_type = layer.descriptor.media_type().to_string();
                let input = LayerInput {
                    name: "0",
                    media_type: &media_type,
                    bytes: &layer.bytes,
                };
                extract_layers(&[input], &root, ExtractLimits::default())?;
                assert_eq!(std::fs::read(root.join("app.wasm"))?, wasm);
            }
            PackageFormat::WasmLayer => {
                let layer = image
                    .wasm_layer()
                    .map(|l| l.descriptor.media_type().to_string());
                assert_eq!(layer.as_deref(), Some(mt::WASM_COMPONENT_LAYER_V0));
            }
            PackageFormat::Artifact => {
                let Config::Wasm(cfg) = &image.config else {
                    panic!("artifact config should be a wasm config");
                };
                let decoded = image.wasm_layer().and_then(|l| l.wasm.clone());
                assert_eq!(
                    decoded.as_ref().map(|i| i.kind.wasi_os()),
                    Some(cfg.os.as_str())
                );
                if cfg.os == "wasip2" {
                    let section = cfg
                        .component
                        .clone()
                        .unwrap_or_else(|| panic!("no component"));
                    assert_eq!(
                        section.imports,
                        ["wasi:cli/environment@0.2.0", "wasi:io/streams@0.2.3"]
                    );
                    assert_eq!(section.exports, ["wasi:cli/run@0.2.0"]);
                    assert_eq!(decoded.map(|d| d.imports), Some(section.imports));
                } else {
                    assert!(
                        cfg.component.is_none(),
                        "a module artifact has no component section"
                    );
                }
            }
        }
        std::fs::remove_dir_all(dir.path().join("rootfs")).ok();
    }
    Ok(())
}

#[test]
fn same_inputs_give_identical_bytes() -> TestResult {
    for format in [
        PackageFormat::Image,
        PackageFormat::WasmLayer,
        PackageFormat::Artifact,
    ] {
        let a = build_package(&spec(format, component()), "x")?.tar;
        let b = build_package(&spec(format, component()), "x")?.tar;
        assert!(a == b, "{format:?} differs between two builds");
        let mut other = spec(format, component());
        other.created_epoch += 1;
        assert!(
            build_package(&other, "x")?.tar != a,
            "created time must matter"
        );
    }
    Ok(())
}

#[test]
fn layouts_carry_the_names_and_docker_manifest_where_allowed() {
    for format in [
        PackageFormat::Image,
        PackageFormat::WasmLayer,
        PackageFormat::Artifact,
    ] {
        let files = good(format, component());
        assert_eq!(json(&files["oci-layout"])["imageLayoutVersion"], "1.0.0");
        let index = json(&files["index.json"]);
        let annotations = &index["manifests"][0]["annotations"];
        assert_eq!(
            annotations[mt::ANNOTATION_CONTAINERD_IMAGE_NAME],
            "localhost/test/app:v1"
        );
        assert_eq!(annotations[mt::ANNOTATION_REF_NAME], "v1");
        assert_eq!(
            files.contains_key("manifest.json"),
            format != PackageFormat::Artifact
        );
    }
}

#[test]
fn a_directory_layout_reads_like_a_tar() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (path, bytes) in good(PackageFormat::Artifact, component()) {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap_or(dir.path()))?;
        std::fs::write(full, bytes)?;
    }
    let archive = read_archive(dir.path(), ReadLimits::default())?;
    assert!(archive.images[0].is_artifact());
    Ok(())
}

#[test]
fn a_docker_save_archive_is_read_and_its_diff_ids_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Legacy `docker save` shape: <hex>.json config, <id>/layer.tar, manifest.json only.
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "hello.txt", &b"hi\n"[..])?;
        b.into_inner()?
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]}
    }))?;
    let config_name = format!("{}.json", &sha256_digest(&config)[7..]);
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["busybox:latest"], "Layers": ["abc/layer.tar"]
    }]);
    let mut files = BTreeMap::new();
    files.insert(config_name.clone(), config.clone());
    files.insert("abc/layer.tar".to_owned(), layer.clone());
    files.insert("manifest.json".to_owned(), serde_json::to_vec(&manifest)?);
    let path = dir.path().join("docker.tar");
    std::fs::write(&path, tar_of(&files))?;
    let archive = read_archive(&path, ReadLimits::default())?;
    assert_eq!(archive.images[0].names, ["busybox:latest"]);
    assert_eq!(archive.images[0].layers[0].bytes, layer);

    let mut tampered = files.clone();
    tampered.insert("abc/layer.tar".to_owned(), tar_of(&BTreeMap::new()));
    let err = read_error(dir.path(), &tampered);
    assert!(
        err.contains("abc/layer.tar") && err.contains("diff_ids"),
        "{err}"
    );

    let mut renamed = files;
    renamed.insert(config_name, b"{}".to_vec());
    let err = read_error(dir.path(), &renamed);
    assert!(err.contains("digest mismatch"), "{err}");
    Ok(())
}

#[test]
fn blob_digest_mismatch_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::WasmLayer, component());
    let (_, manifest) = manifest_of(&files);
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let blob = files.get_mut(&blob_path(&layer_digest)).ok_or("no layer")?;
    let last = blob.len() - 1;
    blob[last] ^= 0xff; // same size, different bytes
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer_digest),
        "{err}"
    );
    Ok(())
}

#[test]
fn blob_size_mismatch_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    let (_, mut manifest) = manifest_of(&files);
    manifest["layers"][0]["size"] = 12.into();
    put_manifest(&mut files, &manifest);
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("size mismatch") && err.contains("descriptor says 12 bytes"),
        "{err}"
    );
    Ok(())
}

#[test]
fn missing_blob_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    let (_, manifest) = manifest_of(&files);
    let config = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    files.remove(&blob_path(&config));
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("missing blob") && err.contains(&config),
        "{err}"
    );
    Ok(())
}

#[test]
fn index_without_manifests_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    files.insert(
        "index.json".to_owned(),
        br#"{"schemaVersion":2,"manifests":[]}"#.to_vec(),
    );
    let err = read_error(dir.path(), &files);
    assert!(err.contains("index.json lists no manifests"), "{err}");
    Ok(())
}

#[test]
fn invalid_json_names_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    files.insert(
        "index.json".to_owned(),
        b"{\"schemaVersion\": 2, \"manifests\": [".to_vec(),
    );
    let err = read_error(dir.path(), &files);
    assert!(err.contains("index.json is not valid"), "{err}");

    let mut files = good(PackageFormat::Image, module());
    put_config(&mut files, b"not json".to_vec(), mt::OCI_IMAGE_CONFIG);
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("config sha256:") && err.contains("is not valid"),
        "{err}"
    );
    Ok(())
}

#[test]
fn unknown_config_media_type_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    put_config(
        &mut files,
        b"{}".to_vec(),
        "application/vnd.example.thing+json",
    );
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("unknown config media type application/vnd.example.thing+json"),
        "{err}"
    );
    Ok(())
}

/// A classic image whose manifest lists one layer 100,000 times is refused from the manifest,
/// before any layer is read (it used to be read 100,000 times).
#[test]
fn absurd_layer_counts_are_refused_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    let (_, mut manifest) = manifest_of(&files);
    let layer = manifest["layers"][0].clone();
    manifest["layers"] = serde_json::Value::Array(vec![layer; 100_000]);
    put_manifest(&mut files, &manifest);
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("lists 100000 layers; at most 128 are accepted"),
        "{err}"
    );
    Ok(())
}

/// An index listing one manifest 100,000 times is refused from its length, before any
/// manifest is read; so is a `docker save` manifest.json with 100,000 entries.
#[test]
fn absurd_manifest_counts_are_refused_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    let mut index = json(&files["index.json"]);
    let descriptor = index["manifests"][0].clone();
    index["manifests"] = serde_json::Value::Array(vec![descriptor; 100_000]);
    files.insert("index.json".to_owned(), serde_json::to_vec(&index)?);
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("index.json lists 100000 manifests; at most 256 are accepted"),
        "{err}"
    );

    let dir = tempfile::tempdir()?;
    let entry = serde_json::json!({"Config": "config.json", "Layers": ["layer.tar"]});
    let docker = BTreeMap::from([(
        "manifest.json".to_owned(),
        serde_json::to_vec(&vec![entry; 100_000])?,
    )]);
    let err = read_error(dir.path(), &docker);
    assert!(
        err.contains("manifest.json lists 100000 manifests; at most 256"),
        "{err}"
    );
    Ok(())
}

#[test]
fn artifact_with_two_layers_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Artifact, component());
    let (_, mut manifest) = manifest_of(&files);
    let layer = manifest["layers"][0].clone();
    manifest["layers"] = serde_json::json!([layer.clone(), layer]);
    put_manifest(&mut files, &manifest);
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("exactly one application/wasm layer, found 2"),
        "{err}"
    );
    Ok(())
}

#[test]
fn wasip2_artifact_without_component_section_is_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Artifact, component());
    let (_, manifest) = manifest_of(&files);
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let mut config = json(&files[&blob_path(config_digest)]);
    config.as_object_mut().ok_or("config")?.remove("component");
    put_config(&mut files, serde_json::to_vec(&config)?, mt::WASM_CONFIG_V0);
    let err = read_error(dir.path(), &files);
    assert!(
        err.contains("os \"wasip2\" but no \"component\" section"),
        "{err}"
    );
    Ok(())
}

#[test]
fn non_wasm_bytes_in_a_wasm_layer_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    for format in [PackageFormat::WasmLayer, PackageFormat::Artifact] {
        let mut files = good(format, component());
        let (_, mut manifest) = manifest_of(&files);
        let bytes = b"#!/bin/sh\necho not wasm\n".to_vec();
        let digest = sha256_digest(&bytes);
        manifest["layers"][0]["digest"] = digest.clone().into();
        manifest["layers"][0]["size"] = bytes.len().into();
        files.insert(blob_path(&digest), bytes);
        if format == PackageFormat::Artifact {
            let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
            let mut config = json(&files[&blob_path(config_digest)]);
            config["layerDigests"] = serde_json::json!([digest]);
            let config = serde_json::to_vec(&config)?;
            let config_digest = sha256_digest(&config);
            manifest["config"]["digest"] = config_digest.clone().into();
            manifest["config"]["size"] = config.len().into();
            files.insert(blob_path(&config_digest), config);
        }
        put_manifest(&mut files, &manifest);
        let err = read_error(dir.path(), &files);
        assert!(
            err.contains(&digest) && err.contains("not a wasm binary"),
            "{format:?}: {err}"
        );
    }
    Ok(())
}

/// JSON nested 100,000 deep in `index.json` is refused with a message naming the file, not a
/// stack overflow: parsing is typed, so it stops at the first value of the wrong shape (and
/// serde_json would stop at 128 levels anyway).
#[test]
fn deeply_nested_json_is_refused_by_name() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut files = good(PackageFormat::Image, module());
    let depth = 100_000;
    let nested = format!(
        "{{\"schemaVersion\": 2, \"manifests\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    files.insert("index.json".into(), nested.into_bytes());
    let err = read_error(dir.path(), &files);
    assert!(err.starts_with("index.json is not valid: "), "{err}");
    Ok(())
}

#[test]
fn archive_entries_that_escape_are_rejected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let good_tar = tar_of(&good(PackageFormat::Image, module()));
    for (name, expected) in [("../evil", "contains '..'"), ("/etc/evil", "absolute path")] {
        let mut bytes = good_tar.clone();
        bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
        bytes.extend(raw_entry(name, tar::EntryType::Regular, b"x", None));
        bytes.extend([0u8; 1024]);
        let path = dir.path().join("escape.tar");
        std::fs::write(&path, &bytes)?;
        let err = read_archive(&path, ReadLimits::default())
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains(name) && err.contains(expected), "{err}");
    }
    Ok(())
}

#[test]
fn archive_entry_claiming_more_than_the_cap_is_rejected_before_reading() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A header claiming 8 GiB followed by no data at all: it must be refused by its claim.
    let mut header = tar::Header::new_gnu();
    header.set_size(8 << 30);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_path("blobs/sha256/huge")?;
    header.set_cksum();
    let path = dir.path().join("huge.tar");
    std::fs::write(&path, header.as_bytes())?;
    let err = read_archive(&path, ReadLimits::default())
        .err()
        .map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(
        err.contains("claims 8589934592 bytes, over the cap"),
        "{err}"
    );
    Ok(())
}

#[test]
fn packaging_bad_input_leaves_no_output_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out.tar");
    let not_wasm = spec(PackageFormat::Artifact, b"\x7fELF not wasm".to_vec());
    let err = write_package(&not_wasm, "app.elf", &out)
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("app.elf") && e.contains("not a wasm binary"))
    );
    let mut bad_name = spec(PackageFormat::Image, module());
    bad_name.reference = "Not/A:Valid:Ref".to_owned();
    assert!(write_package(&bad_name, "x", &out).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "no output or temp file may remain"
    );

    // An existing good file is left untouched by a failed rewrite.
    write_package(&spec(PackageFormat::Image, module()), "x", &out)?;
    let before = std::fs::read(&out)?;
    assert!(write_package(&not_wasm, "x", &out).is_err());
    assert_eq!(std::fs::read(&out)?, before);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    Ok(())
}

// ---- extraction ----

/// One tar entry written byte by byte, so paths the `tar` crate's builder refuses can be made.
fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn layer_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend([0u8; 1024]);
    out
}

/// Extracts `layer` into a fresh destination and returns the error text; checks that neither
/// the destination nor a staging directory remains, and nothing appeared outside.
fn extract_error(layer: &[u8], limits: ExtractLimits) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dest: PathBuf = dir.path().join("rootfs");
    let input = LayerInput {
        name: "layer-0",
        media_type: mt::OCI_LAYER_TAR,
        bytes: layer,
    };
    let result = extract_layers(&[input], &dest, limits);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "extraction left {left:?} behind");
    result
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "<no error>".to_owned())
}

#[test]
fn extraction_refuses_parent_components() {
    let layer = layer_of(&[raw_entry(
        "a/../../evil",
        tar::EntryType::Regular,
        b"x",
        None,
    )]);
    let err = extract_error(&layer, ExtractLimits::default());
    assert!(err.contains("\"a/../../evil\" contains '..'"), "{err}");
}

#[test]
fn extraction_refuses_absolute_paths() {
    let layer = layer_of(&[raw_entry("/tmp/evil", tar::EntryType::Regular, b"x", None)]);
    let err = extract_error(&layer, ExtractLimits::default());
    assert!(err.contains("\"/tmp/evil\" has an absolute path"), "{err}");
}

#[test]
fn extraction_refuses_symlinks_escaping_the_root() {
    for (target, name) in [
        ("../../etc", "up"),
        ("/etc/passwd", "abs"),
        ("a/../../x", "mixed"),
    ] {
        let layer = layer_of(&[raw_entry(name, tar::EntryType::Symlink, b"", Some(target))]);
        let err = extract_error(&layer, ExtractLimits::default());
        assert!(
            err.contains("escapes the extraction root") && err.contains(target),
            "{err}"
        );
    }
    // A link that stays inside is fine, but nothing may be written through it.
    let layer = layer_of(&[
        raw_entry("sub/", tar::EntryType::Directory, b"", None),
        raw_entry("sub/up", tar::EntryType::Symlink, b"", Some("..")),
        raw_entry("sub/up/x", tar::EntryType::Regular, b"x", None),
    ]);
    let err = extract_error(&layer, ExtractLimits::default());
    assert!(
        err.contains("written through the symlink \"sub/up\""),
        "{err}"
    );
}

#[test]
fn extraction_refuses_hardlinks_escaping_the_root() {
    for target in ["../../etc/passwd", "/etc/passwd"] {
        let layer = layer_of(&[raw_entry("hl", tar::EntryType::Link, b"", Some(target))]);
        let err = extract_error(&layer, ExtractLimits::default());
        assert!(
            err.contains("hard link \"hl\"") && err.contains("escapes"),
            "{err}"
        );
    }
    // Through an in-root symlink to a host directory is refused as well.
    let layer = layer_of(&[
        raw_entry("d", tar::EntryType::Symlink, b"", Some(".")),
        raw_entry("hl", tar::EntryType::Link, b"", Some("d/missing")),
    ]);
    let err = extract_error(&layer, ExtractLimits::default());
    assert!(err.contains("hard link \"hl\""), "{err}");
}

#[test]
fn extraction_refuses_device_nodes() {
    let layer = layer_of(&[raw_entry("dev/sda", tar::EntryType::Block, b"", None)]);
    let err = extract_error(&layer, ExtractLimits::default());
    assert!(err.contains("\"dev/sda\" is a block device"), "{err}");
    let layer = layer_of(&[raw_entry("null", tar::EntryType::Char, b"", None)]);
    assert!(extract_error(&layer, ExtractLimits::default()).contains("character device"));
}

#[test]
fn extraction_refuses_claimed_sizes_over_the_cap() {
    let limits = ExtractLimits {
        max_total_bytes: 1000,
        max_entries: 10,
    };
    let layer = layer_of(&[
        raw_entry("small", tar::EntryType::Regular, &[1; 600], None),
        raw_entry("big", tar::EntryType::Regular, &[2; 600], None),
    ]);
    let err = extract_error(&layer, limits);
    assert!(
        err.contains("\"big\" claims 600 bytes, over the extraction cap (1000"),
        "{err}"
    );

    let many: Vec<Vec<u8>> = (0..11)
        .map(|i| raw_entry(&format!("f{i}"), tar::EntryType::Regular, b"", None))
        .collect();
    let err = extract_error(&layer_of(&many), limits);
    assert!(err.contains("more than 10 entries"), "{err}");
}

#[test]
fn extraction_applies_whiteouts_and_keeps_good_links() -> TestResult {
    let dir = tempfile::tempdir()?;
    let dest = dir.path().join("rootfs");
    let lower = layer_of(&[
        raw_entry("etc/", tar::EntryType::Directory, b"", None),
        raw_entry("etc/gone", tar::EntryType::Regular, b"old", None),
        raw_entry("etc/kept", tar::EntryType::Regular, b"kept", None),
        raw_entry("etc/alias", tar::EntryType::Symlink, b"", Some("kept")),
        raw_entry("etc/hard", tar::EntryType::Link, b"", Some("etc/kept")),
    ]);
    let upper = layer_of(&[raw_entry(
        "etc/.wh.gone",
        tar::EntryType::Regular,
        b"",
        None,
    )]);
    let layers = [
        LayerInput {
            name: "0",
            media_type: mt::OCI_LAYER_TAR,
            bytes: &lower,
        },
        LayerInput {
            name: "1",
            media_type: mt::OCI_LAYER_TAR,
            bytes: &upper,
        },
    ];
    let stats = extract_layers(&layers, &dest, ExtractLimits::default())?;
    assert_eq!(stats.entries, 6);
    assert!(!dest.join("etc/gone").exists());
    assert_eq!(std::fs::read(dest.join("etc/alias"))?, b"kept");
    assert_eq!(std::fs::read(dest.join("etc/hard"))?, b"kept");
    // The destination now exists and is never overwritten.
    let err = extract_layers(&layers, &dest, ExtractLimits::default())
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("already exists")));
    Ok(())
}

#[test]
fn an_artifact_made_runnable_keeps_its_blobs_byte_identical() -> TestResult {
    let dir = tempfile::tempdir()?;
    let artifact = dir.path().join("artifact.tar");
    write_package(&spec(PackageFormat::Artifact, component()), "x", &artifact)?;
    let original = read_archive(&artifact, ReadLimits::default())?;
    let package = wasmcell_oci::runnable_from_artifact(&original.images[0], None)?;
    let runnable = dir.path().join("runnable.tar");
    std::fs::write(&runnable, &package.tar)?;
    let image = read_archive(&runnable, ReadLimits::default())?
        .images
        .remove(0);
    assert!(
        !image.is_artifact(),
        "the runnable form has an image config"
    );
    assert_eq!(image.names[0], "localhost/test/app:v1");
    let types: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.descriptor.media_type().to_string())
        .collect();
    assert_eq!(types, [mt::WASM_LAYER, mt::WASM_CONFIG_V0]);
    assert_eq!(image.layers[0].bytes, original.images[0].layers[0].bytes);
    assert_eq!(image.layers[1].bytes, original.images[0].config_bytes);
    // Images are refused: only artifacts need this.
    let plain = dir.path().join("plain.tar");
    write_package(&spec(PackageFormat::Image, module()), "x", &plain)?;
    let plain = read_archive(&plain, ReadLimits::default())?;
    let err = wasmcell_oci::runnable_from_artifact(&plain.images[0], None)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("is not a wasm artifact")));
    Ok(())
}

/// Artifacts as they are found in registries: one wasm layer under a config that is not a wasm
/// config. Each reads, with one warning that names the config and the fix, and is made
/// runnable with its platform taken from the binary and its config's type recorded.
#[test]
fn artifacts_with_foreign_configs_read_warn_and_become_runnable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let crd =
        b"apiVersion: core.oam.dev/v1beta2\nkind: ComponentDefinition\nmetadata:\n  name: app\n";
    let cases: [(&str, &[u8], &str, Option<&str>); 4] = [
        (
            "an OCI 1.1 artifact with the empty config",
            b"{}",
            "application/vnd.oci.empty.v1+json",
            Some("application/vnd.example.wasm.v1"),
        ),
        (
            "a CRD stored as the config",
            crd,
            "application/vnd.oam.dev.component.v1+yaml",
            None,
        ),
        (
            "an image config with no wasm platform",
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            mt::OCI_IMAGE_CONFIG,
            None,
        ),
        (
            "an image config that is not one",
            b"{}",
            mt::OCI_IMAGE_CONFIG,
            None,
        ),
    ];
    for (what, config, media_type, artifact_type) in cases {
        let mut files = good(PackageFormat::Artifact, component());
        put_config(&mut files, config.to_vec(), media_type);
        if let Some(artifact_type) = artifact_type {
            let (_, mut manifest) = manifest_of(&files);
            manifest["artifactType"] = artifact_type.into();
            put_manifest(&mut files, &manifest);
        }
        let path = dir.path().join("found.tar");
        std::fs::write(&path, tar_of(&files))?;
        let image = read_archive(&path, ReadLimits::default())
            .map_err(|e| format!("{what}: {e}"))?
            .images
            .remove(0);
        assert!(
            matches!(&image.config, Config::Foreign { media_type: m } if m == media_type),
            "{what}: {:?}",
            image.config
        );
        assert!(image.is_artifact(), "{what}");
        let warning = image.config_warning().unwrap_or_default();
        assert!(
            warning.contains(media_type) && warning.contains("wasmcell package --format artifact"),
            "{what}: {warning}"
        );
        let package = wasmcell_oci::runnable_from_artifact(&image, None)?;
        let runnable = dir.path().join("runnable.tar");
        std::fs::write(&runnable, &package.tar)?;
        let runnable = read_archive(&runnable, ReadLimits::default())?
            .images
            .remove(0);
        let Config::Image(config) = &runnable.config else {
            panic!("{what}: the runnable form has no image config");
        };
        assert_eq!(config.architecture().to_string(), "wasm", "{what}");
        assert_eq!(config.os().to_string(), "wasip2", "{what}: from the binary");
        assert_eq!(
            runnable.layers.len(),
            1,
            "{what}: only the wasm layer; a foreign config is no wasm config"
        );
        assert_eq!(runnable.layers[0].bytes, image.layers[0].bytes, "{what}");
        let annotations = runnable.manifest.annotations().clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(mt::ANNOTATION_FOREIGN_CONFIG)
                .map(String::as_str),
            Some(media_type),
            "{what}"
        );
        assert_eq!(
            runnable.config_warning(),
            None,
            "{what}: the runnable form is an image"
        );
    }
    // Without a single wasm layer, an unknown config stays a refusal.
    let mut files = good(PackageFormat::Image, module());
    put_config(
        &mut files,
        crd.to_vec(),
        "application/vnd.oam.dev.component.v1+yaml",
    );
    let err = read_error(dir.path(), &files);
    assert!(err.contains("unknown config media type"), "{err}");
    Ok(())
}
