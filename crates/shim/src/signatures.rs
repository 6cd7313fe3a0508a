//! The `require_signature` policy at create: before a container of an image is prepared, a
//! cosign signature by one of the operator's keys over the exact manifest digest containerd
//! resolved must be found in the image's registry (through the mirrors containerd's
//! `hosts.toml` name, with the node's registry credentials). When what containerd holds was
//! made from a registry manifest (an artifact made runnable, a manifest `wasmcell pull` chose
//! from an index), that manifest is the one that must be signed, and it must list what runs
//! (the manifest itself, or the same wasm layers). Verified digests are remembered on disk,
//! per digest and key set, so later containers of the image fetch nothing. Anything short of
//! a verified signature (no image, no registry, no signature, a bad one) refuses the
//! container, naming the image, the keys and what was found.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmcell_engine::host::SignaturePolicy;
use wasmcell_registry::hosts::{DEFAULT_HOSTS_DIRS, endpoints};
use wasmcell_registry::signature::{SignatureError, TrustedKey, describe_keys, verify_image};
use wasmcell_registry::{RegistryOptions, Repository};

use crate::content::ImageTarget;

/// The kubelet's registry credentials file, tried first when the policy names none.
pub const KUBELET_AUTH_FILE: &str = "/var/lib/kubelet/config.json";
/// How long a registry may send nothing during the check.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most entries of a signed index looked at.
const MAX_INDEX_ENTRIES: usize = 16;
/// Where verified digests are remembered, under the shim's cache directory.
const VERIFIED_DIR: &str = "verified-signatures";

/// Why a container's image was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureCheckError {
    /// A key, the hosts configuration, or the image name is unusable.
    #[error("require_signature ({policy}): {message}")]
    Setup { policy: String, message: String },
    /// No signature held.
    #[error("require_signature ({policy}): {source}")]
    Refused {
        policy: String,
        #[source]
        source: SignatureError,
    },
}

/// Checks `image` under `policy` (from `policy_source`), blocking: call it off the runtime.
/// Verdicts are remembered under `cache_dir` when there is one. Returns what verified it, for
/// the log.
pub fn check(
    policy: &SignaturePolicy,
    policy_source: &str,
    image: &ImageTarget,
    cache_dir: Option<&Path>,
) -> Result<String, SignatureCheckError> {
    let setup = |message: String| SignatureCheckError::Setup {
        policy: policy_source.to_owned(),
        message,
    };
    let keys = policy
        .keys
        .iter()
        .map(|path| TrustedKey::load(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(e.to_string()))?;
    // What a signature must name: the registry's manifest, when what runs was made from it.
    let signed = image.source.as_deref().unwrap_or(&image.digest);
    let marker = cache_dir.map(|dir| verified_marker(dir, &image.digest, signed, &keys));
    if let Some(verdict) = marker
        .as_ref()
        .and_then(|m| std::fs::read_to_string(m).ok())
    {
        return Ok(format!("{} (remembered)", verdict.trim()));
    }
    let reference: wasmcell_registry::Reference = image
        .name
        .parse()
        .map_err(|e| setup(format!("image name {:?}: {e}", image.name)))?;
    let hosts_dirs: Vec<PathBuf> = if policy.hosts_dirs.is_empty() {
        DEFAULT_HOSTS_DIRS.iter().map(PathBuf::from).collect()
    } else {
        policy.hosts_dirs.clone()
    };
    let (found_endpoints, notes) =
        endpoints(&hosts_dirs, reference.registry()).map_err(|e| setup(e.to_string()))?;
    for note in notes {
        log::warn!("{note}");
    }
    let authfile = policy.auth_file.clone().or_else(|| {
        Path::new(KUBELET_AUTH_FILE)
            .is_file()
            .then(|| PathBuf::from(KUBELET_AUTH_FILE))
    });
    let mut refusals = Vec::new();
    for endpoint in &found_endpoints {
        let options = RegistryOptions {
            authfile: authfile.clone(),
            plain_http: endpoint.plain_http,
            read_timeout: READ_TIMEOUT,
            ..RegistryOptions::default()
        };
        let at = format!(
            "{}/{}@{}",
            endpoint.host,
            reference.repository(),
            image.digest
        );
        let outcome = Repository::open(&at, &options)
            .map_err(|e| e.to_string())
            .and_then(|repository| {
                let verified =
                    verify_image(&repository, &image.name, signed, &keys).map_err(|e| match e {
                        SignatureError::NotVerified { found, .. } => found.join("; "),
                        other => other.to_string(),
                    })?;
                if signed != image.digest {
                    covers(&repository, signed, image)?;
                }
                Ok(verified)
            });
        match outcome {
            Ok(verified) => {
                let via = if signed == image.digest {
                    String::new()
                } else {
                    format!(", made from the signed {signed}")
                };
                let verdict = format!(
                    "image {} ({}{via}) signed by {} ({} at {})",
                    image.name, image.digest, verified.key, verified.signature, endpoint.host
                );
                if let Some(marker) = &marker {
                    remember(marker, &verdict);
                }
                return Ok(verdict);
            }
            Err(found) => refusals.push(if found_endpoints.len() > 1 {
                format!("at {}: {found}", endpoint.host)
            } else {
                found
            }),
        }
    }
    Err(SignatureCheckError::Refused {
        policy: policy_source.to_owned(),
        source: SignatureError::NotVerified {
            image: image.name.clone(),
            digest: signed.to_owned(),
            keys: describe_keys(&keys),
            found: refusals,
        },
    })
}

/// Checks that the signed registry manifest `source` is what `image` was made from: an index
/// listing it, or a manifest (or an index entry) with the same wasm layers.
fn covers(repository: &Repository, source: &str, image: &ImageTarget) -> Result<(), String> {
    let unrelated = || {
        format!(
            "the signed {source} does not list what runs ({}, wasm layers {})",
            image.digest,
            image.wasm_layers.join(", ")
        )
    };
    let document = |digest: &str| -> Result<serde_json::Value, String> {
        let manifest = repository
            .manifest(Some(digest))
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&manifest.bytes).map_err(|e| format!("{digest}: {e}"))
    };
    let signed = document(source)?;
    let mut manifests = Vec::new();
    match signed["manifests"].as_array() {
        Some(entries) => {
            for entry in entries.iter().take(MAX_INDEX_ENTRIES) {
                let digest = entry["digest"].as_str().unwrap_or_default();
                if digest == image.digest {
                    return Ok(());
                }
                manifests.push(document(digest)?);
            }
        }
        None => manifests.push(signed),
    }
    let same_wasm = |manifest: &serde_json::Value| {
        let layers: Vec<&str> = manifest["layers"]
            .as_array()
            .map(|layers| {
                layers
                    .iter()
                    .filter(|l| {
                        l["mediaType"]
                            .as_str()
                            .is_some_and(wasmcell_oci::media_types::is_wasm_layer)
                    })
                    .filter_map(|l| l["digest"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        !layers.is_empty() && layers == image.wasm_layers
    };
    if manifests.iter().any(same_wasm) {
        Ok(())
    } else {
        Err(unrelated())
    }
}

/// The marker file for `digest` (made from `signed`) verified by one of `keys` (the key set is
/// part of the name, so a policy with other keys checks again).
fn verified_marker(cache_dir: &Path, digest: &str, signed: &str, keys: &[TrustedKey]) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(digest.as_bytes());
    hash.update(signed.as_bytes());
    for key in keys {
        hash.update(key.fingerprint);
    }
    cache_dir
        .join(VERIFIED_DIR)
        .join(hex::encode(hash.finalize()))
}

/// Records a verdict; a cache that cannot be written only costs a later fetch.
fn remember(marker: &Path, verdict: &str) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = marker.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = marker.with_extension("partial");
        std::fs::write(&partial, verdict)?;
        std::fs::rename(&partial, marker)
    };
    if let Err(e) = write() {
        log::warn!(
            "remembering a verified signature in {}: {e}",
            marker.display()
        );
    }
}
