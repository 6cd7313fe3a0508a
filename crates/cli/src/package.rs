//! `wasmcell package`: one wasm file in, one reproducible OCI image-layout tar out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use wasmcell_oci::{PackageFormat, PackageSpec, write_package};

/// Arguments of `wasmcell package`.
#[derive(Debug, Args)]
pub struct PackageArgs {
    /// Packaging: `image` (the .wasm in a tar layer; run it by path), `wasm-layer` (runwasi's
    /// wasm-layer image) or `artifact` (CNCF wasm OCI artifact).
    #[arg(long, value_name = "FORMAT")]
    format: PackageFormat,
    /// Image reference stored in the archive, e.g. `localhost/me/app:1.0` (tag defaults to
    /// `latest`).
    #[arg(long, value_name = "REF")]
    name: String,
    /// The wasm module or component to package.
    #[arg(long, value_name = "FILE")]
    module: PathBuf,
    /// Path of the .wasm inside the image (default: `/` + the module's file name).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Manifest annotation, repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Author recorded in the config.
    #[arg(long)]
    author: Option<String>,
    /// WIT world recorded as the artifact's `component.target`.
    #[arg(long, value_name = "WORLD")]
    target: Option<String>,
    /// Creation time in seconds since the epoch [default: $SOURCE_DATE_EPOCH, else 0, so
    /// that the same inputs always give the same bytes].
    #[arg(long, value_name = "SECONDS")]
    created: Option<u64>,
    /// Where to write the tar (written atomically: nothing is left on failure).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

/// Runs `wasmcell package`.
pub fn run(args: &PackageArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("reading module {}", args.module.display()))?;
    let mut annotations = BTreeMap::new();
    for pair in &args.annotations {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("annotation {pair:?} must be KEY=VALUE");
        };
        annotations.insert(key.to_owned(), value.to_owned());
    }
    let wasm_path = match &args.path {
        Some(p) => p.clone(),
        None => {
            let name = args.module.file_name().with_context(|| {
                format!("module path {} has no file name", args.module.display())
            })?;
            format!("/{}", name.to_string_lossy())
        }
    };
    let created_epoch = match (args.created, std::env::var("SOURCE_DATE_EPOCH")) {
        (Some(s), _) => s,
        (None, Ok(v)) => v
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds"))?,
        (None, Err(_)) => 0,
    };
    let spec = PackageSpec {
        format: args.format,
        reference: args.name.clone(),
        wasm,
        wasm_path,
        annotations,
        created_epoch,
        author: args.author.clone(),
        target: args.target.clone(),
    };
    let summary = write_package(&spec, &args.module.display().to_string(), &args.output)?;
    println!(
        "wrote {} ({} bytes): {} {}, manifest {}, layer {}",
        args.output.display(),
        summary.tar_size,
        summary.reference,
        summary.wasm.kind,
        summary.manifest_digest,
        summary.layer_digest
    );
    Ok(())
}
