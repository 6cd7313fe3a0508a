//! OCI registries: the client the registry verbs share (oci-client over rustls, with the `ring`
//! provider the workspace already links), where credentials come from, when plain HTTP is
//! allowed, and transfers that are bounded in size and time and checked byte for byte against
//! their digests before anything is kept.
//!
//! Defaults, each stated once:
//! - HTTPS, except for a registry on loopback (`localhost`, `127.0.0.0/8`, `[::1]`) or with
//!   `--plain-http`;
//! - credentials from `--creds`, else the first auth file that exists of `--authfile`,
//!   `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` (Podman) and
//!   `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (Docker); else anonymous;
//! - a connection must open within [`CONNECT_TIMEOUT`], and a response that sends nothing for
//!   `--read-timeout` (default [`READ_TIMEOUT`]) fails; a manifest is at most [`MAX_MANIFEST`]
//!   bytes and a blob at most `--max-blob-size` (default [`DEFAULT_MAX_BLOB`]);
//! - a blob of at least [`PROGRESS_FROM`] bytes shows its progress on stderr when that is a
//!   terminal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use wasmcell_oci::media_types as mt;

/// How long a connection to a registry may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may send nothing before the transfer fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest manifest or index read.
pub const MAX_MANIFEST: usize = 4 << 20;
/// The largest blob read unless `--max-blob-size` says otherwise.
pub const DEFAULT_MAX_BLOB: u64 = 1 << 30;
/// Blobs at least this large show their progress on a terminal.
pub const PROGRESS_FROM: u64 = 8 << 20;

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

/// One registry repository, reached with the credentials and protocol the arguments say.
pub struct Repository {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    max_blob: u64,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("reference", &self.reference.whole())
            .finish_non_exhaustive()
    }
}

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct PulledManifest {
    /// Its bytes, verified against `digest`.
    pub bytes: Vec<u8>,
    /// Its media type (from the document, else the response).
    pub media_type: String,
    /// Its digest.
    pub digest: String,
}

impl Repository {
    /// The repository `reference` names (`registry/path[:tag|@digest]`).
    pub fn open(reference: &str, args: &RegistryArgs) -> anyhow::Result<Self> {
        let reference: Reference = reference
            .parse()
            .with_context(|| format!("{reference:?} is not an image reference"))?;
        let host = reference.resolve_registry().to_owned();
        let protocol = if args.plain_http || is_loopback(&host) {
            ClientProtocol::HttpsExcept(vec![host.clone()])
        } else {
            ClientProtocol::Https
        };
        // Several crates in the tree enable rustls providers; the client needs one chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(Duration::from_secs(args.read_timeout.max(1))),
            ..ClientConfig::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the I/O runtime")?;
        let auth = credentials(args, &host)?;
        // Every operation (pushes too, which do not pass credentials themselves) authenticates
        // with these, per operation and repository, as the registry asks.
        runtime.block_on(client.store_auth_if_needed(&host, &auth));
        Ok(Repository {
            auth,
            client,
            reference,
            max_blob: args.max_blob_size,
            runtime,
        })
    }

    /// The reference as given, fully spelled.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The manifest or index `reference` names (`digest` instead of its tag when given).
    pub fn manifest(&self, digest: Option<&str>) -> anyhow::Result<PulledManifest> {
        let reference = match digest {
            Some(digest) => self.reference.clone_with_digest(digest.to_owned()),
            None => self.reference.clone(),
        };
        let accepted = [
            mt::OCI_IMAGE_MANIFEST,
            mt::OCI_IMAGE_INDEX,
            mt::DOCKER_MANIFEST,
            mt::DOCKER_MANIFEST_LIST,
        ];
        let (bytes, served_digest) = self
            .runtime
            .block_on(
                self.client
                    .pull_manifest_raw(&reference, &self.auth, &accepted),
            )
            .map_err(|e| {
                registry_error(
                    e,
                    &format!("fetching the manifest of {}", reference.whole()),
                )
            })?;
        if bytes.len() > MAX_MANIFEST {
            bail!(
                "the manifest of {} is {} bytes, over the {MAX_MANIFEST} byte limit",
                reference.whole(),
                bytes.len()
            );
        }
        let digest_of_bytes = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(expected) = reference.digest()
            && expected != digest_of_bytes
        {
            bail!(
                "the registry served a manifest for {} whose digest is {digest_of_bytes}",
                reference.whole()
            );
        }
        if served_digest != digest_of_bytes && served_digest.starts_with("sha256:") {
            bail!(
                "the registry said the manifest of {} is {served_digest}, but its bytes are {digest_of_bytes}",
                reference.whole()
            );
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
            .unwrap_or_else(|| mt::OCI_IMAGE_MANIFEST.to_owned());
        Ok(PulledManifest {
            bytes: bytes.to_vec(),
            media_type,
            digest: digest_of_bytes,
        })
    }

    /// The blob `digest` of `size` bytes, refused past the size limit before it is fetched,
    /// cut off at `size`, and checked against `digest`.
    pub fn blob(&self, digest: &str, size: u64, what: &str) -> anyhow::Result<Vec<u8>> {
        if size > self.max_blob {
            bail!(
                "{what} ({digest}) is {size} bytes, over the {} byte limit (--max-blob-size)",
                self.max_blob
            );
        }
        let descriptor = OciDescriptor {
            digest: digest.to_owned(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let fetch = async {
            let mut stream = self
                .client
                .pull_blob_stream(&self.reference, &descriptor)
                .await
                .map_err(|e| registry_error(e, &format!("fetching {what} ({digest})")))?;
            if let Some(length) = stream.content_length
                && length != size
            {
                bail!(
                    "the registry announced {length} bytes for {what} ({digest}), which has {size}"
                );
            }
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
            let mut progress = Progress::new(what, size);
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| registry_error(e, &format!("fetching {what} ({digest})")))?;
                if (bytes.len() + chunk.len()) as u64 > size {
                    bail!("the registry sent more than the {size} bytes of {what} ({digest})");
                }
                bytes.extend_from_slice(&chunk);
                progress.show(bytes.len() as u64);
            }
            progress.finish();
            Ok(bytes)
        };
        let bytes = self.runtime.block_on(fetch)?;
        wasmcell_oci::digest::verify_blob(digest, size, &bytes)
            .with_context(|| format!("{what} from the registry"))?;
        Ok(bytes)
    }

    /// Uploads `bytes` as blob `digest` unless the registry has it already.
    pub fn push_blob(&self, bytes: &[u8], digest: &str) -> anyhow::Result<()> {
        let exists = self
            .runtime
            .block_on(self.client.blob_exists(&self.reference, digest))
            .unwrap_or(false);
        if exists {
            return Ok(());
        }
        self.runtime
            .block_on(
                self.client
                    .push_blob(&self.reference, bytes.to_vec(), digest),
            )
            .map_err(|e| registry_error(e, &format!("uploading blob {digest}")))?;
        Ok(())
    }

    /// Uploads `bytes` unchanged as the manifest the reference names.
    pub fn push_manifest(&self, bytes: &[u8], media_type: &str) -> anyhow::Result<()> {
        let content_type = http::HeaderValue::from_str(media_type)
            .with_context(|| format!("media type {media_type:?}"))?;
        self.runtime
            .block_on(
                self.client
                    .push_manifest_raw(&self.reference, bytes.to_vec(), content_type),
            )
            .map_err(|e| {
                registry_error(
                    e,
                    &format!("uploading the manifest of {}", self.reference.whole()),
                )
            })?;
        Ok(())
    }

    /// The manifests that name `digest` as their subject (signatures, SBOMs, attestations),
    /// through the referrers API or its fallback tag; each listed entry is checked to be a
    /// referrer of `digest` by reading its own `subject`.
    pub fn referrers(&self, digest: &str) -> anyhow::Result<Vec<Referrer>> {
        let subject = self.reference.clone_with_digest(digest.to_owned());
        let index = self
            .runtime
            .block_on(self.client.pull_referrers(&subject, None))
            .map_err(|e| registry_error(e, &format!("listing the referrers of {digest}")))?;
        let mut referrers = Vec::new();
        for entry in index.manifests {
            let manifest = self.manifest(Some(&entry.digest))?;
            let document: serde_json::Value = serde_json::from_slice(&manifest.bytes)
                .with_context(|| format!("referrer {} is not JSON", entry.digest))?;
            let names_subject = document["subject"]["digest"].as_str() == Some(digest);
            referrers.push(Referrer {
                digest: entry.digest,
                artifact_type: document["artifactType"]
                    .as_str()
                    .or(entry.artifact_type.as_deref())
                    .unwrap_or_else(|| document["config"]["mediaType"].as_str().unwrap_or("-"))
                    .to_owned(),
                size: entry.size,
                subject_checked: names_subject,
            });
        }
        Ok(referrers)
    }
}

/// A one-line progress display for a large blob, on stderr when it is a terminal.
struct Progress {
    label: Option<String>,
    total: u64,
    shown: u64,
}

impl Progress {
    fn new(what: &str, total: u64) -> Self {
        use std::io::IsTerminal;
        let shown = total >= PROGRESS_FROM && std::io::stderr().is_terminal();
        Progress {
            label: shown.then(|| what.to_owned()),
            total,
            shown: 0,
        }
    }

    /// Redraws at each further 1% (or MiB, whichever is more).
    fn show(&mut self, done: u64) {
        let Some(label) = &self.label else {
            return;
        };
        let step = (self.total / 100).max(1 << 20);
        if done < self.shown + step && done < self.total {
            return;
        }
        self.shown = done;
        let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
        eprint!(
            "\r{label}: {:.1} / {:.1} MiB ({}%)",
            mib(done),
            mib(self.total),
            done * 100 / self.total.max(1)
        );
    }

    fn finish(&self) {
        if self.label.is_some() {
            eprintln!();
        }
    }
}

/// One manifest that refers to another.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// Its digest.
    pub digest: String,
    /// What it is (its `artifactType`, else its config's media type).
    pub artifact_type: String,
    /// Its size in bytes.
    pub size: i64,
    /// Whether its own `subject` names the manifest it was listed for.
    pub subject_checked: bool,
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:5000` or `127.0.0.1:5000`; a bare IPv6 address has more than one colon.
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An oci-client error with what was being done, and the registry's own words (the whole
/// chain of causes: "error decoding response body" alone says little).
fn registry_error(error: impl std::error::Error, doing: &str) -> anyhow::Error {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        return anyhow::anyhow!(
            "{doing}: the registry stopped sending (nothing within --read-timeout): {}",
            text.trim()
        );
    }
    if ["401", "403", "unauthorized", "not authorized", "denied"]
        .iter()
        .any(|word| lower.contains(word))
    {
        anyhow::anyhow!(
            "{doing}: the registry refused the credentials or asked for some ({}); give them \
             with --creds or an auth file (--authfile, $REGISTRY_AUTH_FILE, ~/.docker/config.json)",
            text.trim()
        )
    } else {
        anyhow::anyhow!("{doing}: {}", text.trim())
    }
}

/// The credentials for `host`: `--creds`, else the first auth file that exists, else none.
fn credentials(args: &RegistryArgs, host: &str) -> anyhow::Result<RegistryAuth> {
    if let Some(creds) = &args.creds {
        let Some((user, password)) = creds.split_once(':') else {
            bail!("--creds must be USER:PASSWORD");
        };
        return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
    }
    let files: Vec<PathBuf> = match &args.authfile {
        Some(file) => {
            if !file.is_file() {
                bail!("auth file {} does not exist", file.display());
            }
            vec![file.clone()]
        }
        None => default_auth_files(),
    };
    for file in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the auth file {}", file.display()))?;
        if let Some(auth) =
            auth_from_file(&text, host).with_context(|| format!("auth file {}", file.display()))?
        {
            return Ok(auth);
        }
    }
    Ok(RegistryAuth::Anonymous)
}

fn default_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(file));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                files.push(PathBuf::from(home).join(".docker/config.json"));
            }
        }
    }
    files
}

/// The entry for `host` in a Docker/Podman auth file (`auths.<host>.auth`, base64 of
/// `USER:PASSWORD`, or `username`/`password`); keys may carry a scheme and a path.
fn auth_from_file(text: &str, host: &str) -> anyhow::Result<Option<RegistryAuth>> {
    let document: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let Some(auths) = document["auths"].as_object() else {
        return Ok(None);
    };
    let entry = auths.iter().find_map(|(key, value)| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key = key.split('/').next().unwrap_or(key);
        let same = key == host || (host == "docker.io" && key == "index.docker.io");
        same.then_some(value)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(encoded) = entry["auth"].as_str().filter(|s| !s.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("the auth entry is not base64")?;
        let decoded = String::from_utf8(decoded).context("the auth entry is not UTF-8")?;
        let Some((user, password)) = decoded.split_once(':') else {
            bail!("the auth entry for {host} is not USER:PASSWORD");
        };
        return Ok(Some(RegistryAuth::Basic(
            user.to_owned(),
            password.to_owned(),
        )));
    }
    if let (Some(user), Some(password)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(Some(RegistryAuth::Basic(
            user.to_owned(),
            password.to_owned(),
        )));
    }
    if let Some(token) = entry["identitytoken"].as_str() {
        return Ok(Some(RegistryAuth::Bearer(token.to_owned())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "registry.example",
            "10.0.0.5:5000",
            "ghcr.io",
            "[2001:db8::1]:443",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn auth_files_give_the_entry_for_the_host() -> anyhow::Result<()> {
        let file = r#"{"auths": {
            "https://reg.example/v1/": {"auth": "dXNlcjpwYXNz"},
            "other.example": {"username": "u2", "password": "p2"}
        }}"#;
        match auth_from_file(file, "reg.example")? {
            Some(RegistryAuth::Basic(user, password)) => {
                assert_eq!((user.as_str(), password.as_str()), ("user", "pass"));
            }
            other => panic!("reg.example: {other:?}"),
        }
        assert!(matches!(
            auth_from_file(file, "other.example")?,
            Some(RegistryAuth::Basic(..))
        ));
        assert!(auth_from_file(file, "third.example")?.is_none());
        assert!(auth_from_file(r#"{"auths": {"x": {"auth": "%%%"}}}"#, "x").is_err());
        assert!(auth_from_file("not json", "x").is_err());
        Ok(())
    }
}
