//! `wasmcell push`: one image or artifact from an archive to a registry, unchanged: its blobs
//! as they are (skipped when the registry has them) and its manifest byte for byte, so the
//! digest a registry serves is the archive's.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use wasmcell_oci::{ReadLimits, read_archive};

use crate::registry::{self, RegistryArgs};

/// Arguments of `wasmcell push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// An OCI image-layout tar or directory, or a `docker save` tar, holding one image.
    archive: PathBuf,
    /// Where to: REGISTRY/PATH[:TAG] (default tag `latest`).
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs `wasmcell push`.
pub fn run(args: &PushArgs) -> anyhow::Result<()> {
    let archive = read_archive(&args.archive, ReadLimits::default())?;
    let image = match archive.images.as_slice() {
        [image] => image,
        [] => bail!("{} holds no image", args.archive.display()),
        many => bail!(
            "{} holds {} images; push them one archive at a time",
            args.archive.display(),
            many.len()
        ),
    };
    let repository = registry::open(&args.reference, &args.registry)?;
    if repository.reference().digest().is_some() {
        bail!("{}: push to a tag, not a digest", args.reference);
    }
    let config = image.manifest.config();
    repository.push_blob(&image.config_bytes, config.digest().as_ref())?;
    for layer in &image.layers {
        repository.push_blob(&layer.bytes, layer.descriptor.digest().as_ref())?;
    }
    repository.push_manifest(
        &image.manifest_bytes,
        image.manifest_descriptor.media_type().as_ref(),
    )?;
    println!(
        "{}: pushed to {} (manifest {})",
        args.archive.display(),
        repository.reference().whole(),
        image.manifest_descriptor.digest()
    );
    Ok(())
}
