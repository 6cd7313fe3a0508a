//! `wasmcell inspect`: what an archive holds, verified, without running anything.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use wasmcell_oci::{ArchiveFormat, Config, Descriptor, Image, ReadLimits, read_archive};

/// Arguments of `wasmcell inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// An OCI image-layout tar or directory, or a `docker save` tar.
    archive: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `wasmcell inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let archive = read_archive(&args.archive, ReadLimits::default())?;
    let format = match archive.format {
        ArchiveFormat::OciLayout => "oci-layout",
        ArchiveFormat::DockerArchive => "docker-archive",
    };
    let images: Vec<Value> = archive.images.iter().map(describe).collect();
    if args.json {
        let doc = json!({ "archive": args.archive.display().to_string(), "format": format, "images": images });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("{} ({format}, every blob verified)", args.archive.display());
    for image in &images {
        print_image(image);
    }
    Ok(())
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
    if content["kind"] == "wasm" {
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
            "  image config: {}/{}, cmd {}",
            text(&content["architecture"]),
            text(&content["os"]),
            text(&content["cmd"])
        );
    }
}
