//! `wasmcell verify REF --key FILE`: the verdict the shim's `require_signature` policy gives,
//! from the command line: is the manifest REF names signed by one of the keys (cosign's legacy
//! signature tag or a Sigstore bundle among its referrers)?

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use wasmcell_registry::signature::{TrustedKey, describe_keys, verify_image};

use crate::registry::{self, RegistryArgs};

/// Check an image's cosign signature in its registry against public keys.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image in its registry: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@DIGEST.
    reference: String,
    /// A trusted public key (PEM, as `cosign generate-key-pair` writes `cosign.pub`); repeat
    /// for several, any one of which suffices.
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Prints the verdict; an unsigned image is an error (exit 1).
pub fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let keys = args
        .keys
        .iter()
        .map(|path| TrustedKey::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let repository = registry::open(&args.reference, &args.registry)?;
    let manifest = repository
        .manifest(None)
        .with_context(|| format!("resolving {}", args.reference))?;
    let verified = verify_image(&repository, &args.reference, &manifest.digest, &keys)?;
    println!(
        "{} ({}): signed by {} ({}); checked against {}",
        args.reference,
        manifest.digest,
        verified.key,
        verified.signature,
        describe_keys(&keys)
    );
    Ok(())
}
