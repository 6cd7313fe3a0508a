//! One registry repository: the client the command's registry verbs and the shim's signature
//! check share (oci-client over rustls, with the `ring` provider the workspace already links),
//! where credentials come from, when plain HTTP is allowed, and transfers that are bounded in
//! size and time and checked byte for byte against their digests before anything is kept.
//!
//! Defaults, each stated once:
//! - HTTPS, except for a registry on loopback (`localhost`, `127.0.0.0/8`, `[::1]`) or with
//!   `--plain-http`;
//! - credentials from `--creds`, else the first auth file that exists of `--authfile`,
//!   `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` (Podman) and
//!   `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (Docker); else anonymous;
//! - a connection must open within [`CONNECT_TIMEOUT`], and a response that sends nothing for
//!   [`RegistryOptions::read_timeout`] (default [`READ_TIMEOUT`]) fails; a manifest is at most
//!   [`MAX_MANIFEST`] bytes and a blob at most [`RegistryOptions::max_blob_size`] (default
//!   [`DEFAULT_MAX_BLOB`]);
//! - a blob of at least [`PROGRESS_FROM`] bytes shows its progress on stderr when that is a
//!   terminal.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
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
pub const MAX_MANIFEST: usize = wasmcell_oci::MAX_MANIFEST_BYTES as usize;
/// The most referrers of one manifest looked at.
pub const MAX_REFERRERS: usize = 256;
/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// The largest blob read unless `--max-blob-size` says otherwise.
pub const DEFAULT_MAX_BLOB: u64 = 1 << 30;
/// Blobs at least this large show their progress on a terminal.
pub const PROGRESS_FROM: u64 = 8 << 20;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Credentials `(user, password)`; `None`: from the auth files.
    pub creds: Option<(String, String)>,
    /// The auth file to read instead of the default ones.
    pub authfile: Option<PathBuf>,
    /// Plain HTTP to a registry that is not on loopback.
    pub plain_http: bool,
    /// The largest blob to transfer, in bytes.
    pub max_blob_size: u64,
    /// How long a response may send nothing.
    pub read_timeout: Duration,
    /// Show the progress of large blobs on stderr when it is a terminal.
    pub progress: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            creds: None,
            authfile: None,
            plain_http: false,
            max_blob_size: DEFAULT_MAX_BLOB,
            read_timeout: READ_TIMEOUT,
            progress: false,
        }
    }
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("{reference:?} is not an image reference: {message}")]
    Reference { reference: String, message: String },
    /// The credentials given or found are unusable.
    #[error("{what}: {message}")]
    Credentials { what: String, message: String },
    /// The registry could not be asked, or refused, or stopped answering.
    #[error("{doing}: {message}")]
    Transfer { doing: String, message: String },
    /// The registry has no such manifest.
    #[error("{what}: the registry has no such manifest")]
    NotFound { what: String },
    /// Something served is over its size limit.
    #[error("{what} ({digest}) is {size} bytes, over the {limit} byte limit")]
    TooLarge {
        what: String,
        digest: String,
        size: u64,
        limit: u64,
    },
    /// What was served is not what was asked for.
    #[error("{what}: {message}")]
    Mismatch { what: String, message: String },
    /// The I/O runtime could not start.
    #[error("starting the registry client's I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// One registry repository, reached with the credentials and protocol the arguments say.
pub struct Repository {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    max_blob: u64,
    progress: bool,
    runtime: tokio::runtime::Runtime,
    /// Manifests and indexes are fetched with this client, read in bounded chunks: oci-client
    /// reads a whole response body before its caller can check the size.
    documents: reqwest::Client,
    scheme: &'static str,
    pull_token: std::sync::Mutex<Option<Option<String>>>,
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
    pub fn open(reference: &str, options: &RegistryOptions) -> Result<Self, RegistryError> {
        let reference: Reference =
            reference
                .parse()
                .map_err(|e: oci_client::ParseError| RegistryError::Reference {
                    reference: reference.to_owned(),
                    message: e.to_string(),
                })?;
        let host = reference.resolve_registry().to_owned();
        let plain = options.plain_http || is_loopback(&host);
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![host.clone()])
        } else {
            ClientProtocol::Https
        };
        // Several crates in the tree enable rustls providers; the client needs one chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(options.read_timeout.max(Duration::from_millis(100))),
            ..ClientConfig::default()
        });
        let documents = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(options.read_timeout.max(Duration::from_millis(100)))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(|e| RegistryError::Transfer {
                doing: "setting up the HTTP client".to_owned(),
                message: e.to_string(),
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        let auth = credentials(options, &host)?;
        // Every operation (pushes too, which do not pass credentials themselves) authenticates
        // with these, per operation and repository, as the registry asks.
        runtime.block_on(client.store_auth_if_needed(&host, &auth));
        Ok(Repository {
            auth,
            client,
            reference,
            max_blob: options.max_blob_size,
            progress: options.progress,
            runtime,
            documents,
            scheme: if plain { "http" } else { "https" },
            pull_token: std::sync::Mutex::new(None),
        })
    }

    /// The reference as given, fully spelled.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The manifest or index `reference` names (`digest` instead of its tag when given).
    pub fn manifest(&self, digest: Option<&str>) -> Result<PulledManifest, RegistryError> {
        let reference = match digest {
            Some(digest) => self.reference.clone_with_digest(digest.to_owned()),
            None => self.reference.clone(),
        };
        self.manifest_of(&reference)
    }

    /// The manifest or index tagged `tag` in this repository, `None` when there is none.
    pub fn tagged(&self, tag: &str) -> Result<Option<PulledManifest>, RegistryError> {
        let reference = Reference::with_tag(
            self.reference.registry().to_owned(),
            self.reference.repository().to_owned(),
            tag.to_owned(),
        );
        match self.manifest_of(&reference) {
            Ok(manifest) => Ok(Some(manifest)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn manifest_of(&self, reference: &Reference) -> Result<PulledManifest, RegistryError> {
        let accepted = [
            mt::OCI_IMAGE_MANIFEST,
            mt::OCI_IMAGE_INDEX,
            mt::DOCKER_MANIFEST,
            mt::DOCKER_MANIFEST_LIST,
        ];
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_owned();
        let doing = format!("fetching the manifest of {}", reference.whole());
        let (bytes, served_digest) =
            self.document(&format!("manifests/{target}"), &accepted.join(", "), &doing)?;
        let digest_of_bytes = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if bytes.len() > MAX_MANIFEST {
            return Err(RegistryError::TooLarge {
                what: format!("the manifest of {}", reference.whole()),
                digest: digest_of_bytes,
                size: bytes.len() as u64,
                limit: MAX_MANIFEST as u64,
            });
        }
        if let Some(expected) = reference.digest()
            && expected != digest_of_bytes
        {
            return Err(RegistryError::Mismatch {
                what: format!("the manifest of {}", reference.whole()),
                message: format!("the registry served bytes whose digest is {digest_of_bytes}"),
            });
        }
        if served_digest != digest_of_bytes && served_digest.starts_with("sha256:") {
            return Err(RegistryError::Mismatch {
                what: format!("the manifest of {}", reference.whole()),
                message: format!(
                    "the registry said it is {served_digest}, but its bytes are {digest_of_bytes}"
                ),
            });
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
    pub fn blob(&self, digest: &str, size: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
        if size > self.max_blob {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                digest: digest.to_owned(),
                size,
                limit: self.max_blob,
            });
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
                return Err(RegistryError::Mismatch {
                    what: format!("{what} ({digest})"),
                    message: format!("the registry announced {length} bytes; it has {size}"),
                });
            }
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
            let mut progress = Progress::new(what, size, self.progress);
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| registry_error(e, &format!("fetching {what} ({digest})")))?;
                if (bytes.len() + chunk.len()) as u64 > size {
                    return Err(RegistryError::Mismatch {
                        what: format!("{what} ({digest})"),
                        message: format!("the registry sent more than its {size} bytes"),
                    });
                }
                bytes.extend_from_slice(&chunk);
                progress.show(bytes.len() as u64);
            }
            progress.finish();
            Ok(bytes)
        };
        let bytes = self.runtime.block_on(fetch)?;
        wasmcell_oci::digest::verify_blob(digest, size, &bytes).map_err(|e| {
            RegistryError::Mismatch {
                what: format!("{what} from the registry"),
                message: e.to_string(),
            }
        })?;
        Ok(bytes)
    }

    /// GETs `/v2/<repository>/<path>` as a document (a manifest, an index): refused past
    /// [`MAX_MANIFEST`] by its `Content-Length` before the body is read, else cut off there.
    /// Returns the bytes and the digest the registry says they have (empty when it says none).
    fn document(
        &self,
        path: &str,
        accept: &str,
        doing: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let transfer = |message: String| RegistryError::Transfer {
            doing: doing.to_owned(),
            message,
        };
        let token = self.pull_token()?;
        let url = format!(
            "{}://{}/v2/{}/{path}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        );
        let fetch = async {
            let mut request = self
                .documents
                .get(&url)
                .header(http::header::ACCEPT, accept);
            request = match (&token, &self.auth) {
                (Some(token), _) => request.bearer_auth(token),
                (None, RegistryAuth::Basic(user, password)) => {
                    request.basic_auth(user, Some(password))
                }
                _ => request,
            };
            let mut response = request.send().await.map_err(|e| registry_error(e, doing))?;
            let status = response.status();
            if status == http::StatusCode::NOT_FOUND {
                return Err(RegistryError::NotFound {
                    what: doing.to_owned(),
                });
            }
            if !status.is_success() {
                let mut said = Vec::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    said.extend_from_slice(&chunk);
                    if said.len() > 512 {
                        break;
                    }
                }
                let said = String::from_utf8_lossy(&said[..said.len().min(512)]).into_owned();
                return Err(registry_error(
                    std::io::Error::other(format!("{status}: {}", said.trim())),
                    doing,
                ));
            }
            if let Some(length) = response.content_length()
                && length > MAX_MANIFEST as u64
            {
                return Err(RegistryError::TooLarge {
                    what: doing.to_owned(),
                    digest: "announced by Content-Length".to_owned(),
                    size: length,
                    limit: MAX_MANIFEST as u64,
                });
            }
            let served_digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| registry_error(e, doing))?
            {
                if bytes.len() + chunk.len() > MAX_MANIFEST {
                    return Err(RegistryError::TooLarge {
                        what: doing.to_owned(),
                        digest: "still being sent".to_owned(),
                        size: (bytes.len() + chunk.len()) as u64,
                        limit: MAX_MANIFEST as u64,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((bytes, served_digest))
        };
        self.runtime.block_on(fetch).map_err(|e| match e {
            RegistryError::Transfer { message, .. } => transfer(message),
            other => other,
        })
    }

    /// The bearer token for pulling from this repository (`None`: the registry takes basic
    /// credentials or none), asked for once.
    fn pull_token(&self) -> Result<Option<String>, RegistryError> {
        let mut cached = self
            .pull_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(token) = cached.as_ref() {
            return Ok(token.clone());
        }
        let token = self
            .runtime
            .block_on(self.client.auth(
                &self.reference,
                &self.auth,
                oci_client::RegistryOperation::Pull,
            ))
            .map_err(|e| {
                registry_error(
                    e,
                    &format!("authenticating to {}", self.reference.registry()),
                )
            })?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Uploads `bytes` as blob `digest` unless the registry has it already.
    pub fn push_blob(&self, bytes: &[u8], digest: &str) -> Result<(), RegistryError> {
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
    pub fn push_manifest(&self, bytes: &[u8], media_type: &str) -> Result<(), RegistryError> {
        let content_type =
            http::HeaderValue::from_str(media_type).map_err(|e| RegistryError::Mismatch {
                what: format!("media type {media_type:?}"),
                message: e.to_string(),
            })?;
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
    pub fn referrers(&self, digest: &str) -> Result<Vec<Referrer>, RegistryError> {
        let doing = format!("listing the referrers of {digest}");
        // The referrers API, else (a registry without it answers 404, or with an error) the
        // fallback tag; neither is an error when absent.
        let listed =
            match self.document(&format!("referrers/{digest}"), mt::OCI_IMAGE_INDEX, &doing) {
                Ok((bytes, _)) => Some(bytes),
                Err(RegistryError::Transfer { .. } | RegistryError::NotFound { .. }) => self
                    .tagged(&digest.replace(':', "-"))?
                    .map(|index| index.bytes),
                Err(e) => return Err(e),
            };
        let index: serde_json::Value = match listed {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Mismatch {
                what: format!("the referrers index of {digest}"),
                message: format!("not JSON: {e}"),
            })?,
            None => serde_json::Value::Null,
        };
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut referrers = Vec::new();
        for entry in entries.iter().take(MAX_REFERRERS) {
            let Some(entry_digest) = entry["digest"].as_str() else {
                continue;
            };
            let manifest = self.manifest(Some(entry_digest))?;
            let document: serde_json::Value =
                serde_json::from_slice(&manifest.bytes).map_err(|e| RegistryError::Mismatch {
                    what: format!("referrer {entry_digest}"),
                    message: format!("not JSON: {e}"),
                })?;
            let names_subject = document["subject"]["digest"].as_str() == Some(digest);
            referrers.push(Referrer {
                digest: entry_digest.to_owned(),
                artifact_type: document["artifactType"]
                    .as_str()
                    .or(entry["artifactType"].as_str())
                    .unwrap_or_else(|| document["config"]["mediaType"].as_str().unwrap_or("-"))
                    .to_owned(),
                size: entry["size"].as_i64().unwrap_or(0),
                subject_checked: names_subject,
                manifest,
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
    fn new(what: &str, total: u64, wanted: bool) -> Self {
        use std::io::IsTerminal;
        let shown = wanted && total >= PROGRESS_FROM && std::io::stderr().is_terminal();
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
    /// The manifest itself.
    pub manifest: PulledManifest,
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
fn registry_error(error: impl std::error::Error, doing: &str) -> RegistryError {
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
    let doing = doing.to_owned();
    if lower.contains("timed out") || lower.contains("timeout") {
        return RegistryError::Transfer {
            doing,
            message: format!(
                "the registry stopped sending (nothing within the read timeout): {}",
                text.trim()
            ),
        };
    }
    if ["401", "403", "unauthorized", "not authorized", "denied"]
        .iter()
        .any(|word| lower.contains(word))
    {
        RegistryError::Transfer {
            doing,
            message: format!(
                "the registry refused the credentials or asked for some ({}); give them with \
                 --creds or an auth file (--authfile, $REGISTRY_AUTH_FILE, ~/.docker/config.json)",
                text.trim()
            ),
        }
    } else {
        RegistryError::Transfer {
            doing,
            message: text.trim().to_owned(),
        }
    }
}

/// The credentials for `host`: `--creds`, else the first auth file that exists, else none.
fn credentials(options: &RegistryOptions, host: &str) -> Result<RegistryAuth, RegistryError> {
    if let Some((user, password)) = &options.creds {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let files: Vec<PathBuf> = match &options.authfile {
        Some(file) => {
            if !file.is_file() {
                return Err(RegistryError::Credentials {
                    what: format!("auth file {}", file.display()),
                    message: "it does not exist".to_owned(),
                });
            }
            vec![file.clone()]
        }
        None => default_auth_files(),
    };
    for file in files.iter().filter(|f| f.is_file()) {
        let credentials_error = |message: String| RegistryError::Credentials {
            what: format!("auth file {}", file.display()),
            message,
        };
        let text = std::fs::read_to_string(file).map_err(|e| credentials_error(e.to_string()))?;
        if let Some(auth) = auth_from_file(&text, host).map_err(credentials_error)? {
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
fn auth_from_file(text: &str, host: &str) -> Result<Option<RegistryAuth>, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
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
            .map_err(|e| format!("the auth entry for {host} is not base64: {e}"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("the auth entry for {host} is not UTF-8"))?;
        let Some((user, password)) = decoded.split_once(':') else {
            return Err(format!("the auth entry for {host} is not USER:PASSWORD"));
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
    fn auth_files_give_the_entry_for_the_host() -> Result<(), String> {
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
