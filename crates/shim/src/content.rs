//! Reading a container's wasm layer from containerd's content store (wasm-layer images and
//! imported artifacts), over containerd's gRPC API. Every blob is checked against its
//! descriptor's size and sha256 before it is parsed or handed to the engine.

use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::{Client, with_namespace};
use tonic::Request;
use wasmcell_oci::digest::verify_blob;
use wasmcell_oci::media_types as mt;

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

/// Fetches the first wasm layer of the image that container `id` was created from.
pub async fn fetch_wasm_layer(
    address: &str,
    namespace: &str,
    id: &str,
) -> Result<WasmLayer, ContentError> {
    let client = Client::from_path(address)
        .await
        .map_err(|e| ContentError::Connect {
            address: address.to_owned(),
            message: e.to_string(),
        })?;
    let store = Store {
        client,
        namespace: namespace.to_owned(),
    };
    let call = |call: &str| {
        let call = call.to_owned();
        move |s: tonic::Status| ContentError::Call {
            call,
            message: s.message().to_owned(),
        }
    };
    let container = store
        .client
        .containers()
        .get(with_namespace!(
            GetContainerRequest { id: id.to_owned() },
            namespace
        ))
        .await
        .map_err(call("containers get"))?
        .into_inner()
        .container
        .ok_or_else(|| ContentError::NoImage { id: id.to_owned() })?;
    if container.image.is_empty() {
        return Err(ContentError::NoImage { id: id.to_owned() });
    }
    let image = store
        .client
        .images()
        .get(with_namespace!(
            GetImageRequest {
                name: container.image.clone()
            },
            namespace
        ))
        .await
        .map_err(call("images get"))?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| ContentError::NoImage { id: id.to_owned() })?;

    let (mut media_type, mut digest, mut size) =
        (image.media_type, image.digest, image.size as u64);
    // Follow indexes to the wasm platform's manifest (or the only one).
    for _ in 0..4 {
        if !mt::is_index(&media_type) {
            break;
        }
        let what = format!("index {digest} of image {}", container.image);
        let index = parse(&store.read_blob(&digest, size, &what).await?, &what)?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == "wasm")
            .or_else(|| manifests.first())
            .ok_or_else(|| ContentError::NoWasmLayer {
                image: container.image.clone(),
            })?;
        (media_type, digest, size) = descriptor(chosen);
    }
    let what = format!("manifest {digest} of image {}", container.image);
    let manifest = parse(&store.read_blob(&digest, size, &what).await?, &what)?;
    let layer = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["mediaType"].as_str().is_some_and(mt::is_wasm_layer))
        .ok_or_else(|| ContentError::NoWasmLayer {
            image: container.image.clone(),
        })?;
    let (media_type, digest, size) = descriptor(layer);
    let what = format!("wasm layer {digest} of image {}", container.image);
    let bytes = store.read_blob(&digest, size, &what).await?;
    Ok(WasmLayer {
        image: container.image,
        digest,
        media_type,
        bytes,
    })
}
