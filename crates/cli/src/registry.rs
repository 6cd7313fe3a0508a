//! The options every registry verb takes, turned into a [`Repository`] of
//! [`wasmcell_registry`] (which owns transfers, credentials and their defaults).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use wasmcell_registry::RegistryOptions;
pub use wasmcell_registry::Repository;
use wasmcell_registry::client::{DEFAULT_MAX_BLOB, READ_TIMEOUT};

/// Options every registry verb takes.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Credentials, as USER:PASSWORD [default: from the auth files].
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Auth file (Docker's config.json or Podman's auth.json format) [default: $REGISTRY_AUTH_FILE,
    /// then $XDG_RUNTIME_DIR/containers/auth.json, then ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Speak plain HTTP to a registry that is not on loopback (loopback registries always get
    /// plain HTTP).
    #[arg(long)]
    pub plain_http: bool,
    /// The largest blob to transfer, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BLOB)]
    pub max_blob_size: u64,
    /// Seconds a response may send nothing before the transfer fails.
    #[arg(long, value_name = "SECONDS", default_value_t = READ_TIMEOUT.as_secs())]
    pub read_timeout: u64,
}

/// The repository `reference` names, reached as `args` say.
pub fn open(reference: &str, args: &RegistryArgs) -> anyhow::Result<Repository> {
    let creds = match &args.creds {
        Some(creds) => match creds.split_once(':') {
            Some((user, password)) => Some((user.to_owned(), password.to_owned())),
            None => bail!("--creds must be USER:PASSWORD"),
        },
        None => None,
    };
    let options = RegistryOptions {
        creds,
        authfile: args.authfile.clone(),
        plain_http: args.plain_http,
        max_blob_size: args.max_blob_size,
        read_timeout: Duration::from_secs(args.read_timeout.max(1)),
        progress: true,
    };
    Ok(Repository::open(reference, &options)?)
}
