//! Reading a container's wasm layer from containerd's content store (wasm-layer images and
//! imported artifacts), over containerd's gRPC API. Every blob is checked against its
//! descriptor's size and sha256 before it is parsed or handed to the engine.

use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, ListImagesRequest, ReadContentRequest,
};
use containerd_client::{Client, with_namespace};
use tonic::Request;
use wasmcell_oci::digest::verify_blob;
use wasmcell_oci::media_types as mt;
use wasmcell_oci::wasm_config::WasmConfig;

/// Why the wasm layer could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// No connection to containerd.
    #[error("connecting to containerd at {address}: {message}")]
    Connect {
        /// containerd's socket.
        address: String,
        /// The error.
        message: String,
    },
    /// A gRPC call failed.
    #[error("containerd {call}: {message}")]
    Call {
        /// Which call.
        call: String,
        /// The status message.
        message: String,
    },
    /// A manifest with more layers than any snapshotter can mount.
    #[error(transparent)]
    TooManyLayers(#[from] wasmcell_oci::TooManyLayers),
    /// A blob did not match its descriptor.
    #[error("{what}: {source}")]
    Mismatch {
        /// Which blob.
        what: String,
        /// How.
        #[source]
        source: wasmcell_oci::digest::BlobMismatch,
    },
    /// A manifest or index that does not parse.
    #[error("{what} is not valid JSON: {message}")]
    Json {
        /// Which blob.
        what: String,
        /// The error.
        message: String,
    },
    /// The image has no wasm layer.
    #[error("image {image} has no wasm layer")]
    NoWasmLayer {
        /// The image.
        image: String,
    },
    /// The container has no image.
    #[error("container {id} has no image")]
    NoImage {
        /// The container.
        id: String,
    },
}

/// The wasm program of a wasm-layer image or imported artifact.
#[derive(Debug)]
pub struct WasmLayer {
    /// The image name.
    pub image: String,
    /// The layer digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// The verified bytes.
    pub bytes: Vec<u8>,
}

struct Store {
    client: Client,
    namespace: String,
}

impl Store {
    async fn read_blob(
        &self,
        digest: &str,
        size: u64,
        what: &str,
    ) -> Result<Vec<u8>, ContentError> {
        let request = ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        };
        let mut stream = self
            .client
            .content()
            .read(with_namespace!(request, self.namespace.as_str()))
            .await
            .map_err(|s| ContentError::Call {
                call: format!("content read {digest}"),
                message: s.message().to_owned(),
            })?
            .into_inner();
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.message().await.map_err(|s| ContentError::Call {
            call: format!("content read {digest}"),
            message: s.message().to_owned(),
        })? {
            bytes.extend_from_slice(&chunk.data);
            // Never hold more than the descriptor promised.
            if bytes.len() as u64 > size {
                break;
            }
        }
        verify_blob(digest, size, &bytes).map_err(|source| ContentError::Mismatch {
            what: what.to_owned(),
            source,
        })?;
        Ok(bytes)
    }
}

fn parse(bytes: &[u8], what: &str) -> Result<serde_json::Value, ContentError> {
    serde_json::from_slice(bytes).map_err(|e| ContentError::Json {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

fn descriptor(value: &serde_json::Value) -> (String, String, u64) {
    (
        value["mediaType"].as_str().unwrap_or_default().to_owned(),
        value["digest"].as_str().unwrap_or_default().to_owned(),
        value["size"].as_u64().unwrap_or_default(),
    )
}

/// A container's wasm image as far as it has been read: the manifest and the (small) wasm
/// config, but not yet the wasm layer, so the config can be checked first.
pub struct WasmImage {
    /// The image name.
    pub image: String,
    /// The artifact's `application/vnd.wasm.config.v0+json`, when the image carries one (as
    /// its config, or as a layer of an image made by `wasmcell import`).
    pub config: Option<DeclaredConfig>,
    /// Digests of the image's wasm layers, in manifest order.
    pub wasm_layers: Vec<String>,
    store: Store,
    layer: (String, String, u64),
}

impl std::fmt::Debug for WasmImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmImage")
            .field("image", &self.image)
            .field("config", &self.config)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// A wasm config read from the content store.
#[derive(Debug)]
pub struct DeclaredConfig {
    /// The config blob's digest.
    pub digest: String,
    /// What it says.
    pub config: WasmConfig,
}

/// The image a container was created from, as containerd resolved it.
#[derive(Debug, Clone)]
pub struct ImageTarget {
    /// The image name (`registry/repository:tag`).
    pub name: String,
    /// The media type of what the name points at (a manifest or an index).
    pub media_type: String,
    /// Its digest: what was pulled, and what a signature must name.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The registry manifest it was made from, when it is not that manifest itself: an
    /// artifact made runnable by `wasmcell import`/`pull` (its `dev.wasmcell.converted-from`
    /// annotation), or a manifest `wasmcell pull` chose from an index (the image's
    /// `dev.wasmcell.pulled-from` label). A signature must name this one.
    pub source: Option<String>,
    /// The digests of its wasm layers (when it is a manifest), to tie it to `source`.
    pub wasm_layers: Vec<String>,
}

async fn connect(address: &str, namespace: &str) -> Result<Store, ContentError> {
    let client = Client::from_path(address)
        .await
        .map_err(|e| ContentError::Connect {
            address: address.to_owned(),
            message: e.to_string(),
        })?;
    Ok(Store {
        client,
        namespace: namespace.to_owned(),
    })
}

fn failed_call(call: &str) -> impl Fn(tonic::Status) -> ContentError {
    let call = call.to_owned();
    move |s: tonic::Status| ContentError::Call {
        call: call.clone(),
        message: s.message().to_owned(),
    }
}

impl Store {
    /// The image container `id` was created from.
    async fn container_image(&self, id: &str) -> Result<ImageTarget, ContentError> {
        let namespace = self.namespace.as_str();
        let container = self
            .client
            .containers()
            .get(with_namespace!(
                GetContainerRequest { id: id.to_owned() },
                namespace
            ))
            .await
            .map_err(failed_call("containers get"))?
            .into_inner()
            .container
            .ok_or_else(|| ContentError::NoImage { id: id.to_owned() })?;
        if container.image.is_empty() {
            return Err(ContentError::NoImage { id: id.to_owned() });
        }
        let record = self
            .client
            .images()
            .get(with_namespace!(
                GetImageRequest {
                    name: container.image.clone()
                },
                namespace
            ))
            .await
            .map_err(failed_call("images get"))?
            .into_inner()
            .image
            .ok_or_else(|| ContentError::NoImage { id: id.to_owned() })?;
        let pulled_from = record.labels.get(mt::LABEL_PULLED_FROM).cloned();
        let target = record
            .target
            .ok_or_else(|| ContentError::NoImage { id: id.to_owned() })?;
        // CRI may record an image by its ID (`sha256:…`); the name it was pulled by is another
        // image record with the same target.
        let name = if container.image.starts_with("sha256:") {
            self.client
                .images()
                .list(with_namespace!(
                    ListImagesRequest {
                        filters: vec![format!("target.digest=={}", target.digest)],
                    },
                    namespace
                ))
                .await
                .map_err(failed_call("images list"))?
                .into_inner()
                .images
                .into_iter()
                .map(|i| i.name)
                .filter(|n| !n.starts_with("sha256:"))
                // A tagged name reads better in messages than a digest one.
                .min_by_key(|n| n.contains('@'))
                .unwrap_or(container.image)
        } else {
            container.image
        };
        let mut image = ImageTarget {
            name,
            media_type: target.media_type,
            digest: target.digest,
            size: u64::try_from(target.size).unwrap_or(0),
            source: pulled_from,
            wasm_layers: Vec::new(),
        };
        if !mt::is_index(&image.media_type) {
            let what = format!("manifest {} of image {}", image.digest, image.name);
            if image.size > wasmcell_oci::MAX_MANIFEST_BYTES {
                return Err(ContentError::Json {
                    what,
                    message: format!("over {} bytes", wasmcell_oci::MAX_MANIFEST_BYTES),
                });
            }
            let manifest = parse(
                &self.read_blob(&image.digest, image.size, &what).await?,
                &what,
            )?;
            // A pulled-from index names what the registry served; the conversion's own record
            // then names one of its entries.
            if image.source.is_none() {
                image.source = manifest["annotations"][mt::ANNOTATION_CONVERTED_FROM]
                    .as_str()
                    .map(str::to_owned);
            }
            image.wasm_layers = manifest["layers"]
                .as_array()
                .map(|layers| {
                    layers
                        .iter()
                        .filter(|l| l["mediaType"].as_str().is_some_and(mt::is_wasm_layer))
                        .map(|l| descriptor(l).1)
                        .collect()
                })
                .unwrap_or_default();
        }
        Ok(image)
    }
}

/// The image container `id` was created from, as containerd resolved it.
pub async fn image_of_container(
    address: &str,
    namespace: &str,
    id: &str,
) -> Result<ImageTarget, ContentError> {
    connect(address, namespace).await?.container_image(id).await
}

/// Resolves the image container `id` was created from down to its first wasm layer, reading
/// the index, manifest and wasm config (each verified) but not the layer itself.
pub async fn resolve_wasm_image(
    address: &str,
    namespace: &str,
    id: &str,
) -> Result<WasmImage, ContentError> {
    let store = connect(address, namespace).await?;
    let image = store.container_image(id).await?;
    let container_image = image.name.clone();
    let (mut media_type, mut digest, mut size) = (image.media_type, image.digest, image.size);
    // Follow indexes to the wasm platform's manifest (or the only one).
    for _ in 0..4 {
        if !mt::is_index(&media_type) {
            break;
        }
        let what = format!("index {digest} of image {}", container_image);
        let index = parse(&store.read_blob(&digest, size, &what).await?, &what)?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == "wasm")
            .or_else(|| manifests.first())
            .ok_or_else(|| ContentError::NoWasmLayer {
                image: container_image.clone(),
            })?;
        (media_type, digest, size) = descriptor(chosen);
    }
    let what = format!("manifest {digest} of image {}", container_image);
    let manifest = parse(&store.read_blob(&digest, size, &what).await?, &what)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    wasmcell_oci::check_layer_count(layers.len(), wasmcell_oci::MAX_LAYERS, &what)?;
    let wasm_layers: Vec<&serde_json::Value> = layers
        .iter()
        .filter(|l| l["mediaType"].as_str().is_some_and(mt::is_wasm_layer))
        .collect();
    let layer =
        wasm_layers
            .first()
            .map(|l| descriptor(l))
            .ok_or_else(|| ContentError::NoWasmLayer {
                image: container_image.clone(),
            })?;
    let config_descriptor = std::iter::once(&manifest["config"])
        .chain(layers.iter())
        .find(|d| d["mediaType"] == mt::WASM_CONFIG_V0)
        .map(descriptor);
    let config = match config_descriptor {
        Some((_, digest, size)) => {
            let what = format!("wasm config {digest} of image {}", container_image);
            let bytes = store.read_blob(&digest, size, &what).await?;
            let config: WasmConfig =
                serde_json::from_slice(&bytes).map_err(|e| ContentError::Json {
                    what,
                    message: e.to_string(),
                })?;
            Some(DeclaredConfig { digest, config })
        }
        None => None,
    };
    if config.is_none()
        && let Some(media_type) = foreign_config(&manifest)
    {
        log::warn!(
            "{}",
            wasmcell_oci::foreign_config_warning(&container_image, &media_type)
        );
    }
    Ok(WasmImage {
        image: container_image,
        config,
        wasm_layers: wasm_layers.iter().map(|l| descriptor(l).1).collect(),
        store,
        layer,
    })
}

/// The media type of a config that is not a wasm config, for an image that runs from its wasm
/// layer without one: as `wasmcell import` recorded it, or as containerd stored the manifest
/// (an OCI 1.1 artifact, a CRD as config). `None` for image configs (wasm-layer images) and
/// for manifests with a wasm config.
fn foreign_config(manifest: &serde_json::Value) -> Option<String> {
    if let Some(recorded) = manifest["annotations"][mt::ANNOTATION_FOREIGN_CONFIG].as_str() {
        return Some(recorded.to_owned());
    }
    let media_type = manifest["config"]["mediaType"].as_str()?;
    let known = [
        mt::OCI_IMAGE_CONFIG,
        mt::DOCKER_IMAGE_CONFIG,
        mt::WASM_CONFIG_V0,
    ];
    (!known.contains(&media_type)).then(|| media_type.to_owned())
}

impl WasmImage {
    /// Reads and verifies the first wasm layer.
    pub async fn read_layer(self) -> Result<WasmLayer, ContentError> {
        let (media_type, digest, size) = self.layer;
        let what = format!("wasm layer {digest} of image {}", self.image);
        let bytes = self.store.read_blob(&digest, size, &what).await?;
        Ok(WasmLayer {
            image: self.image,
            digest,
            media_type,
            bytes,
        })
    }
}
