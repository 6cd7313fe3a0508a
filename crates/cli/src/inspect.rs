//! `wasmcell inspect`: what an archive (or an image in containerd) holds, verified, and
//! whether this host and policy would run it, without running anything.
//!
//! The verdict makes the shim's checks: the wasm config against the host's worlds and the
//! policy, the binary's imports by name (and by type with `--compile`), and whether the two
//! agree.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use wasmcell_engine::{EngineOptions, Policy, WasmEngine, host};
use wasmcell_oci::media_types as mt;
use wasmcell_oci::wasm::{WasmKind, inspect_wasm};
use wasmcell_oci::{
    ArchiveFormat, Config, Descriptor, Image, ReadLimits, WasmConfig, read_archive,
};

use crate::ctr::ContainerdArgs;
use crate::program::program;
use crate::registry::{self, RegistryArgs};

/// Arguments of `wasmcell inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// An OCI image-layout tar or directory, or a `docker save` tar; with `--containerd`, an
    /// image reference in containerd; a REGISTRY/PATH[:TAG] that is no file here is read from
    /// that registry (with the manifests that refer to it: signatures, SBOMs, attestations).
    archive: String,
    /// Read ARCHIVE as an image reference in containerd (exported with `ctr image export`).
    #[arg(long)]
    containerd: bool,
    #[command(flatten)]
    client: ContainerdArgs,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Judge with this policy file (`deny = [...]`, as the shim reads it).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Also compile the program and type-check its imports, as the shim does at create.
    #[arg(long)]
    compile: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// How `wasmcell inspect` ended, as its exit status: a CI gate can rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every image in the input runs on this host under the policy (exit 0).
    Runs,
    /// At least one image is refused (exit 1).
    Refused,
}

/// Exit status when the input (or the policy) cannot be read (an `Err` from [`run`]).
pub const EXIT_CANNOT_READ: u8 = 2;

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Runs => 0,
            Outcome::Refused => 1,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Runs => "runs",
            Outcome::Refused => "refused",
        }
    }
}

/// Runs `wasmcell inspect`; an error means the input could not be read.
pub fn run(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the policy {}", path.display()))?;
            Policy::from_toml(&text, &path.display().to_string())?
        }
        None => Policy::default(),
    };
    let exported;
    let pulled;
    let mut repository = None;
    let path = if args.containerd {
        exported = export_from_containerd(&args.client, &args.archive)?;
        exported.path().to_owned()
    } else if is_registry_reference(&args.archive) {
        let from = registry::open(&args.archive, &args.registry)?;
        let tar = crate::pull::fetch_layout(&from)?.tar;
        pulled = tempfile::Builder::new()
            .prefix("wasmcell-inspect-")
            .suffix(".tar")
            .tempfile()
            .context("creating a temporary file")?;
        std::fs::write(pulled.path(), tar)
            .with_context(|| format!("writing {}", pulled.path().display()))?;
        repository = Some(from);
        pulled.path().to_owned()
    } else {
        PathBuf::from(&args.archive)
    };
    let archive = read_archive(&path, ReadLimits::default())?;
    let engine = WasmEngine::new(EngineOptions::default())?;
    let format = match archive.format {
        ArchiveFormat::OciLayout => "oci-layout",
        ArchiveFormat::DockerArchive => "docker-archive",
    };
    let images: Vec<Value> = archive
        .images
        .iter()
        .map(|image| {
            let mut described = describe(image);
            described["verdict"] = verdict(image, &engine, &policy, args.compile);
            described
        })
        .collect();
    let mut images = images;
    if let Some(repository) = &repository {
        for (described, image) in images.iter_mut().zip(&archive.images) {
            let digest = image.manifest_descriptor.digest().to_string();
            let referrers = repository.referrers(&digest)?;
            described["referrers"] = referrers
                .iter()
                .map(|r| {
                    json!({
                        "digest": r.digest, "artifactType": r.artifact_type, "size": r.size,
                        "subjectChecked": r.subject_checked,
                    })
                })
                .collect();
        }
    }
    let outcome = if images.iter().all(|image| image["verdict"]["runs"] == true) {
        Outcome::Runs
    } else {
        Outcome::Refused
    };
    if args.json {
        let doc = json!({
            "archive": args.archive, "format": format, "images": images,
            "verdict": outcome.as_str(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(outcome);
    }
    let origin = if args.containerd {
        "exported from containerd"
    } else if repository.is_some() {
        "from its registry"
    } else {
        format
    };
    println!("{} ({origin}, every blob verified)", args.archive);
    for image in &images {
        print_image(image);
        print_verdict(&image["verdict"], &policy);
    }
    Ok(outcome)
}

/// Whether `input` is meant as a registry reference: no file or directory by that name, and a
/// first path element that names a host (a dot, a port or `localhost`), as in
/// `registry.example/app:1`.
fn is_registry_reference(input: &str) -> bool {
    if Path::new(input).exists() || input.starts_with(['.', '/']) || input.ends_with(".tar") {
        return false;
    }
    match input.split_once('/') {
        Some((host, rest)) => {
            !rest.is_empty() && (host.contains('.') || host.contains(':') || host == "localhost")
        }
        None => false,
    }
}

/// Exports `reference` (all platforms) from containerd into a temporary archive.
fn export_from_containerd(
    client: &ContainerdArgs,
    reference: &str,
) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new()
        .prefix("wasmcell-inspect-")
        .suffix(".tar")
        .tempfile()
        .context("creating a temporary file")?;
    let out = client
        .command()
        .args(["image", "export", "--all-platforms"])
        .arg(file.path())
        .arg(reference)
        .output()
        .with_context(|| {
            format!(
                "running {} (give its path with --ctr)",
                client.ctr.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "exporting {reference} from containerd: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(file)
}

/// One check of the verdict: what was checked and the refusal, if any.
fn check(what: &str, result: Result<(), String>) -> Value {
    json!({ "check": what, "ok": result.is_ok(), "message": result.err() })
}

/// The checks the shim makes at create, without running anything.
fn verdict(image: &Image, engine: &WasmEngine, policy: &Policy, compile: bool) -> Value {
    let mut checks = Vec::new();
    let declared = match declared_config(image) {
        Ok(declared) => declared,
        Err(message) => {
            checks.push(check("wasm config", Err(message)));
            None
        }
    };
    if let Some(config) = &declared {
        let wasm_layers: Vec<String> = image
            .layers
            .iter()
            .filter(|l| l.wasm.is_some())
            .map(|l| l.descriptor.digest().to_string())
            .collect();
        let result = config
            .validate(&wasm_layers)
            .map_err(|e| e.to_string())
            .and_then(|()| match &config.component {
                Some(c) => {
                    host::check_declared(&c.imports, &c.exports, c.target.as_deref(), policy)
                        .map_err(|r| r.to_string())
                }
                None => Ok(()),
            });
        checks.push(check("wasm config", result));
    }
    match program(image) {
        Err(message) => checks.push(check("binary", Err(message))),
        Ok(bytes) => match inspect_wasm(&bytes) {
            Err(e) => checks.push(check("binary", Err(e.to_string()))),
            Ok(info) => {
                let component = info.kind == WasmKind::Component;
                let names = engine
                    .check_import_names(component, &info.imports, &info.exports, policy)
                    .map_err(|e| e.to_string());
                checks.push(check("binary imports", names));
                if let Some(imports) = declared
                    .as_ref()
                    .and_then(|c| c.component.as_ref())
                    .map(|c| &c.imports)
                {
                    let agree = imports.len() == info.imports.len()
                        && info.imports.iter().all(|i| imports.contains(i));
                    let result = if agree {
                        Ok(())
                    } else {
                        Err(format!(
                            "the wasm config and the binary disagree: config declares [{}], binary imports [{}]",
                            imports.join(", "),
                            info.imports.join(", ")
                        ))
                    };
                    checks.push(check("config matches binary", result));
                }
                if compile {
                    let result = engine
                        .load(&bytes)
                        .and_then(|(program, _)| engine.check_imports(&program, policy))
                        .map_err(|e| format!("{e}"));
                    checks.push(check("compiled and type-checked", result));
                }
            }
        },
    }
    let runs = checks.iter().all(|c| c["ok"] == true);
    json!({ "runs": runs, "checks": checks })
}

/// The artifact's wasm config: the image config of an artifact, or the config layer of an
/// image made by `wasmcell import`.
fn declared_config(image: &Image) -> Result<Option<WasmConfig>, String> {
    if let Config::Wasm(config) = &image.config {
        return Ok(Some(config.clone()));
    }
    let Some(layer) = image
        .layers
        .iter()
        .find(|l| l.descriptor.media_type().to_string() == mt::WASM_CONFIG_V0)
    else {
        return Ok(None);
    };
    serde_json::from_slice(&layer.bytes)
        .map(Some)
        .map_err(|e| format!("wasm config layer {}: {e}", layer.descriptor.digest()))
}

fn print_verdict(verdict: &Value, policy: &Policy) {
    let policy = if policy.source.is_empty() {
        "no policy".to_owned()
    } else {
        format!("policy {}", policy.source)
    };
    let runs = verdict["runs"] == true;
    println!(
        "  verdict ({policy}): {}",
        if runs { "runs on this host" } else { "refused" }
    );
    for check in verdict["checks"].as_array().into_iter().flatten() {
        match check["message"].as_str() {
            Some(message) => println!("    {}: {message}", text(&check["check"])),
            None => println!("    {}: ok", text(&check["check"])),
        }
    }
}

fn descriptor(d: &Descriptor) -> Value {
    json!({ "mediaType": d.media_type().to_string(), "digest": d.digest().to_string(), "size": d.size() })
}

fn describe(image: &Image) -> Value {
    let platform = image
        .platform()
        .map(|p| format!("{}/{}", p.architecture(), p.os()));
    let config = match &image.config {
        Config::Image(cfg) => json!({
            "kind": "image",
            "architecture": cfg.architecture().to_string(),
            "os": cfg.os().to_string(),
            "cmd": cfg.config().as_ref().and_then(|c| c.cmd().clone()),
            "entrypoint": cfg.config().as_ref().and_then(|c| c.entrypoint().clone()),
        }),
        Config::Wasm(cfg) => json!({
            "kind": "wasm",
            "architecture": cfg.architecture,
            "os": cfg.os,
            "imports": cfg.component.as_ref().map(|c| c.imports.clone()),
            "exports": cfg.component.as_ref().map(|c| c.exports.clone()),
            "target": cfg.component.as_ref().and_then(|c| c.target.clone()),
        }),
        Config::Foreign { media_type } => json!({
            "kind": "foreign",
            "mediaType": media_type,
            "warning": image.config_warning(),
        }),
    };
    let layers: Vec<Value> = image
        .layers
        .iter()
        .map(|layer| {
            let mut v = descriptor(&layer.descriptor);
            if let Some(info) = &layer.wasm {
                v["wasm"] = json!({
                    "kind": info.kind.to_string(),
                    "imports": info.imports,
                    "exports": info.exports,
                });
            }
            v
        })
        .collect();
    json!({
        "names": image.names,
        "manifest": descriptor(&image.manifest_descriptor),
        "platform": platform,
        "config": { "descriptor": descriptor(image.manifest.config()), "content": config },
        "layers": layers,
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn print_descriptor(label: &str, d: &Value) {
    println!(
        "  {label:<9} {}  {}  {} bytes",
        text(&d["mediaType"]),
        text(&d["digest"]),
        text(&d["size"])
    );
}

fn print_list(label: &str, v: &Value) {
    match v.as_array() {
        Some(items) if !items.is_empty() => {
            println!("    {label}:");
            for item in items {
                println!("      {}", text(item));
            }
        }
        _ => println!("    {label}: -"),
    }
}

fn print_image(image: &Value) {
    let names: Vec<String> = image["names"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    println!(
        "image {}",
        if names.is_empty() {
            "(unnamed)".to_owned()
        } else {
            names.join(", ")
        }
    );
    print_descriptor("manifest", &image["manifest"]);
    if let Some(referrers) = image["referrers"].as_array() {
        if referrers.is_empty() {
            println!("  referrers none");
        }
        for referrer in referrers {
            let checked = if referrer["subjectChecked"] == true {
                ""
            } else {
                "  (its subject does not name this manifest)"
            };
            println!(
                "  referrer  {}  {}  {} bytes{checked}",
                text(&referrer["artifactType"]),
                text(&referrer["digest"]),
                text(&referrer["size"])
            );
        }
    }
    println!("  platform  {}", text(&image["platform"]));
    print_descriptor("config", &image["config"]["descriptor"]);
    let content = &image["config"]["content"];
    if let Some(layers) = image["layers"].as_array() {
        for (i, layer) in layers.iter().enumerate() {
            print_descriptor(&format!("layer {i}"), layer);
            if layer.get("wasm").is_some() {
                println!(
                    "    wasm {} decoded from the binary:",
                    text(&layer["wasm"]["kind"])
                );
                print_list("imports", &layer["wasm"]["imports"]);
                print_list("exports", &layer["wasm"]["exports"]);
            }
        }
    }
    if content["kind"] == "foreign" {
        println!("  warning: {}", text(&content["warning"]));
    } else if content["kind"] == "wasm" {
        println!(
            "  wasm config: architecture {}, os {}, target {}",
            text(&content["architecture"]),
            text(&content["os"]),
            text(&content["target"])
        );
        print_list("imports", &content["imports"]);
        print_list("exports", &content["exports"]);
    } else {
        println!(
            "  image config: {}/{}, entrypoint {}, cmd {}",
            text(&content["architecture"]),
            text(&content["os"]),
            text(&content["entrypoint"]),
            text(&content["cmd"])
        );
    }
}
