//! The operator's import policy for a container, and where it comes from.
//!
//! Two routes, both TOML with one key, `deny = ["wasi:sockets/*", ...]` (patterns as in
//! [`wasmcell_engine::Policy`]):
//! 1. containerd runtime options, per runtime handler: `runtimeoptions.v1.Options`, which
//!    containerd hands the shim as the create request's options. `ConfigPath` names a file
//!    (`ctr run --runtime-config-path`, or `ConfigPath` in a CRI runtime's `options` table);
//!    without it, CRI passes the runtime's `options` table itself as `ConfigBody`.
//! 2. otherwise the shim config file: `$WASMCELL_CONFIG`, else `/etc/wasmcell/config.toml`
//!    when it exists.
//!
//! A policy that cannot be read or parsed fails the container: running a guest without the
//! policy the operator wrote would be the wrong way to fail.

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use prost::Message as _;
use wasmcell_engine::Policy;

pub use wasmcell_shim_front::group::config_file;
/// containerd's generic runtime options message (`containerd/api/types/runtimeoptions/v1`).
const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// Why the policy could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("reading the wasmcell policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is not a valid policy.
    #[error(transparent)]
    Invalid(#[from] wasmcell_engine::host::PolicyError),
    /// The runtime options do not decode.
    #[error("decoding containerd runtime options ({type_url}): {message}")]
    Options { type_url: String, message: String },
}

/// `runtimeoptions.v1.Options`.
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeOptions {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(string, tag = "2")]
    config_path: String,
    #[prost(bytes = "vec", tag = "3")]
    config_body: Vec<u8>,
}

/// The policy for a container created with runtime `options` (the create request's).
pub fn resolve(options: Option<&Any>) -> Result<Policy, PolicyError> {
    if let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) {
        if any.type_url.ends_with(RUNTIME_OPTIONS_TYPE) {
            let decoded =
                RuntimeOptions::decode(any.value.as_slice()).map_err(|e| PolicyError::Options {
                    type_url: any.type_url.clone(),
                    message: e.to_string(),
                })?;
            if !decoded.config_path.is_empty() {
                return from_file(Path::new(&decoded.config_path));
            }
            if !decoded.config_body.is_empty() {
                let text = String::from_utf8_lossy(&decoded.config_body);
                return Ok(Policy::from_toml(&text, "containerd runtime options")?);
            }
        } else {
            log::warn!(
                "ignoring runtime options of type {} (wasmcell reads {RUNTIME_OPTIONS_TYPE})",
                any.type_url
            );
        }
    }
    let path = config_file();
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
        _ => from_file(&path),
    }
}

fn from_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Policy::from_toml(&text, &path.display().to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(config_path: &str, body: &str) -> Any {
        let message = RuntimeOptions {
            type_url: String::new(),
            config_path: config_path.to_owned(),
            config_body: body.as_bytes().to_vec(),
        };
        let mut any = Any::new();
        any.type_url = "runtimeoptions.v1.Options".to_owned();
        any.value = message.encode_to_vec();
        any
    }

    #[test]
    fn runtime_options_give_a_file_or_a_body() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("strict.toml");
        std::fs::write(&file, "deny = [\"wasi:sockets/*\"]\n")?;
        let policy = resolve(Some(&options(&file.display().to_string(), "")))?;
        assert_eq!(policy.deny, ["wasi:sockets/*"]);
        assert_eq!(policy.source, file.display().to_string());

        let body = "TypeUrl = \"x\"\ndeny = [\"wasi:http/outgoing-handler\"]\n";
        let policy = resolve(Some(&options("", body)))?;
        assert_eq!(policy.deny, ["wasi:http/outgoing-handler"]);
        assert_eq!(policy.source, "containerd runtime options");
        Ok(())
    }

    #[test]
    fn an_unreadable_policy_file_is_an_error_naming_it() -> Result<(), Box<dyn std::error::Error>> {
        let missing = resolve(Some(&options("/nonexistent/wasmcell.toml", "")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("/nonexistent/wasmcell.toml"), "{missing}");
        Ok(())
    }
}
