//! `wasmcell import`: put an archive into containerd so that `ctr run` can run it.
//!
//! Images go in as they are. A CNCF wasm artifact is first made runnable
//! ([`wasmcell_oci::runnable_from_artifact`]): `ctr run` refuses its config type on every
//! containerd version, so the artifact becomes an image whose layers are the artifact's own wasm
//! blob and original wasm config, byte-identical. An artifact found with a config that is not
//! a wasm config (an OCI 1.1 empty config, a CRD, ...) goes the same way, with a warning, its
//! platform taken from the binary. The import itself is `ctr image import`, the
//! tool that talks to the user's containerd already. Then each program is compiled ahead into
//! the node's compile cache (`ahead`).

use std::path::{Path, PathBuf};

use crate::ahead::{CompileArgs, compile_images};
use crate::ctr::ContainerdArgs;
use anyhow::{Context, bail};
use clap::Args;
use wasmcell_oci::{ReadLimits, read_archive, runnable_from_artifact};

/// Arguments of `wasmcell import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An OCI image-layout tar (image, wasm-layer image or CNCF wasm artifact).
    archive: PathBuf,
    /// Name to store an artifact under [default: the name in the archive].
    #[arg(long, value_name = "REF")]
    name: Option<String>,
    #[command(flatten)]
    containerd: ContainerdArgs,
    #[command(flatten)]
    compile: CompileArgs,
    /// Write the runnable archive here instead of importing it.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `wasmcell import`.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    import_archive(
        &args.archive,
        args.name.as_deref(),
        &args.containerd,
        &args.compile,
        args.output.as_deref(),
    )
}

/// Imports the archive at `path` into containerd (artifacts made runnable first, stored
/// under `name` or the archive's own) and compiles its programs ahead, or with `output`, writes
/// what would be imported there.
pub fn import_archive(
    path: &Path,
    name: Option<&str>,
    containerd: &ContainerdArgs,
    compile: &CompileArgs,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let archive = read_archive(path, ReadLimits::default())?;
    let artifacts: Vec<_> = archive.images.iter().filter(|i| i.is_artifact()).collect();
    let temp;
    let to_import = match artifacts.as_slice() {
        [] => {
            if let Some(output) = output {
                std::fs::copy(path, output)
                    .with_context(|| format!("writing {}", output.display()))?;
            }
            path.to_owned()
        }
        [artifact] => {
            if let Some(warning) = artifact.config_warning() {
                eprintln!("wasmcell: warning: {warning}");
            }
            let package = runnable_from_artifact(artifact, name)?;
            let path_out = match output {
                Some(path) => path.to_owned(),
                None => {
                    temp = tempfile::Builder::new()
                        .prefix("wasmcell-import-")
                        .suffix(".tar")
                        .tempfile()
                        .context("creating a temporary file")?;
                    temp.path().to_owned()
                }
            };
            wasmcell_oci::write::write_atomically(&path_out, &package.tar)
                .with_context(|| format!("writing {}", path_out.display()))?;
            println!(
                "{}: artifact made runnable as {} (manifest {})",
                path.display(),
                package.summary.reference,
                package.summary.manifest_digest
            );
            path_out
        }
        _ => bail!(
            "{} holds {} artifacts; import them one archive at a time",
            path.display(),
            artifacts.len()
        ),
    };
    if output.is_some() {
        return Ok(());
    }
    let ctr = &containerd.ctr;
    let status = containerd
        .command()
        .args(["image", "import", "--all-platforms"])
        .arg(&to_import)
        .status()
        .with_context(|| format!("running {} (give its path with --ctr)", ctr.display()))?;
    if !status.success() {
        bail!("{} image import failed ({status})", ctr.display());
    }
    compile_images(&archive.images, compile);
    Ok(())
}
