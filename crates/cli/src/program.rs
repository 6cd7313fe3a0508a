//! The program an image runs, as bytes: what `inspect` judges and what `import` and `pull`
//! compile ahead. The shim finds the same file at create from the container's spec; here the
//! image's own entrypoint (or first command word) stands in for it.

use std::path::Path;

use wasmcell_oci::extract::{ExtractLimits, LayerInput, extract_layers};
use wasmcell_oci::{Config, Image};

/// The program's bytes: the first wasm layer, or for images with a filesystem the file their
/// entrypoint (or first command word) names, read from the safely extracted layers.
pub fn program(image: &Image) -> Result<Vec<u8>, String> {
    if let Some(layer) = image.wasm_layer() {
        return Ok(layer.bytes.clone());
    }
    let Config::Image(config) = &image.config else {
        return Err("the artifact has no wasm layer".to_owned());
    };
    let process = config.config().as_ref();
    let first = process
        .and_then(|c| c.entrypoint().as_ref())
        .and_then(|e| e.first())
        .or_else(|| {
            process
                .and_then(|c| c.cmd().as_ref())
                .and_then(|c| c.first())
        })
        .ok_or("the image names no program (no entrypoint or cmd)")?;
    let path = first.split_once('#').map_or(first.as_str(), |(p, _)| p);
    let temp = tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
    let root = temp.path().join("rootfs");
    let labels: Vec<(String, String)> = image
        .layers
        .iter()
        .map(|l| {
            (
                l.descriptor.digest().to_string(),
                l.descriptor.media_type().to_string(),
            )
        })
        .collect();
    let inputs: Vec<LayerInput<'_>> = image
        .layers
        .iter()
        .zip(&labels)
        .map(|(l, (name, media_type))| LayerInput {
            name,
            media_type,
            bytes: &l.bytes,
        })
        .collect();
    extract_layers(&inputs, &root, ExtractLimits::default()).map_err(|e| e.to_string())?;
    read_inside(&root, path)
}

/// Reads `path` from the rootfs at `root`, refusing anything that resolves outside it.
fn read_inside(root: &Path, path: &str) -> Result<Vec<u8>, String> {
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    let resolved = root
        .join(path.trim_start_matches('/'))
        .canonicalize()
        .map_err(|e| format!("program {path:?}: {e}"))?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "program {path:?} resolves outside the image's filesystem"
        ));
    }
    std::fs::read(&resolved).map_err(|e| format!("program {path:?}: {e}"))
}
