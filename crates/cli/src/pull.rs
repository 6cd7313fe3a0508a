//! `wasmcell pull`: an image or artifact from a registry into containerd's content store, in
//! the form `wasmcell import` stores an archive (an artifact made runnable), ready for
//! `ctr run`. Every blob is size-checked before it is fetched and digest-checked before it is
//! kept; nothing reaches containerd unless all of them hold.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use wasmcell_oci::media_types as mt;

use crate::ctr::ContainerdArgs;
use crate::registry::{self, RegistryArgs, Repository};

/// Arguments of `wasmcell pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: REGISTRY/PATH[:TAG] (default tag `latest`).
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    containerd: ContainerdArgs,
    #[command(flatten)]
    compile: crate::ahead::CompileArgs,
    /// Write the archive containerd would get here instead of importing it.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `wasmcell pull`.
pub fn run(args: &PullArgs) -> anyhow::Result<()> {
    let repository = registry::open(&args.reference, &args.registry)?;
    let Fetched {
        name,
        tar,
        pulled_from,
    } = fetch_layout(&repository)?;
    let temp = tempfile::Builder::new()
        .prefix("wasmcell-pull-")
        .suffix(".tar")
        .tempfile()
        .context("creating a temporary file")?;
    std::fs::write(temp.path(), &tar)
        .with_context(|| format!("writing {}", temp.path().display()))?;
    crate::import::import_archive(
        temp.path(),
        Some(&name),
        &args.containerd,
        &args.compile,
        args.output.as_deref(),
    )?;
    if args.output.is_none() {
        if let Some(index) = &pulled_from {
            // What the registry served is the index; a signature check must know to ask for it.
            let label = format!("{}={index}", mt::LABEL_PULLED_FROM);
            let status = args
                .containerd
                .command()
                .args(["image", "label", &name, &label])
                .stdout(std::process::Stdio::null())
                .status()
                .with_context(|| format!("running {}", args.containerd.ctr.display()))?;
            if !status.success() {
                bail!("labelling {name} with {label} failed ({status})");
            }
        }
        println!("{}: pulled as {name}", args.reference);
    }
    Ok(())
}

/// An image fetched from a registry, as an archive.
#[derive(Debug)]
pub struct Fetched {
    /// The name to store it under.
    pub name: String,
    /// A one-image OCI layout tar.
    pub tar: Vec<u8>,
    /// The index the reference named, when the image is one of its manifests.
    pub pulled_from: Option<String>,
}

/// The image the repository's reference names, as a one-image OCI layout tar named
/// `REGISTRY/PATH:TAG`: an index is followed to its wasm entry (else its first).
pub fn fetch_layout(repository: &Repository) -> anyhow::Result<Fetched> {
    let reference = repository.reference();
    if reference.digest().is_some() && reference.tag().is_none() {
        bail!(
            "{}: pull by tag (REGISTRY/PATH:TAG); a digest alone gives containerd no name to store the image under",
            reference.whole()
        );
    }
    let name = format!(
        "{}/{}:{}",
        reference.registry(),
        reference.repository(),
        reference.tag().unwrap_or("latest")
    );
    let name_parsed = wasmcell_oci::reference::Reference::parse(&name)?;
    let mut manifest = repository.manifest(None)?;
    let mut platform = None;
    let mut pulled_from = None;
    if mt::is_index(&manifest.media_type) {
        pulled_from = Some(manifest.digest.clone());
        let index: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .with_context(|| format!("the index of {}", reference.whole()))?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let Some(chosen) = entries
            .iter()
            .find(|m| m["platform"]["architecture"] == "wasm")
            .or_else(|| entries.first())
        else {
            bail!("the index of {} lists no manifests", reference.whole());
        };
        let Some(digest) = chosen["digest"].as_str() else {
            bail!(
                "the index of {} has an entry without a digest",
                reference.whole()
            );
        };
        platform = serde_json::from_value(chosen["platform"].clone()).ok();
        manifest = repository.manifest(Some(digest))?;
    }
    let document: serde_json::Value = serde_json::from_slice(&manifest.bytes)
        .with_context(|| format!("the manifest {}", manifest.digest))?;
    let layers = document["layers"].as_array().cloned().unwrap_or_default();
    wasmcell_oci::check_layer_count(
        layers.len(),
        wasmcell_oci::MAX_LAYERS,
        &format!("manifest {}", manifest.digest),
    )?;
    let mut blobs = Vec::with_capacity(layers.len() + 1);
    for (what, descriptor) in std::iter::once(("config".to_owned(), &document["config"])).chain(
        layers
            .iter()
            .enumerate()
            .map(|(i, layer)| (format!("layer {i}"), layer)),
    ) {
        let (Some(digest), Some(size)) =
            (descriptor["digest"].as_str(), descriptor["size"].as_u64())
        else {
            bail!(
                "the {what} of manifest {} has no digest or size",
                manifest.digest
            );
        };
        blobs.push(repository.blob(digest, size, &format!("the {what} of {name}"))?);
    }
    let tar = wasmcell_oci::layout_of_pulled(
        &name_parsed,
        &manifest.bytes,
        &manifest.media_type,
        platform,
        blobs,
    )?;
    Ok(Fetched {
        name,
        tar,
        pulled_from,
    })
}
