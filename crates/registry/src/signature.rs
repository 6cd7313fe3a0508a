//! cosign key-based signatures over a manifest digest: the public keys an operator trusts, the
//! two stored forms cosign writes, and the verdict for one image.
//!
//! The forms, both checked against the exact manifest digest, with no transparency log or
//! network beyond the registry:
//! - **legacy** (cosign 2): the tag `sha256-<hex>.sig` in the image's repository, a manifest
//!   whose `application/vnd.dev.cosign.simplesigning.v1+json` layers are payloads naming
//!   `critical.image.docker-manifest-digest`, each signed (ASN.1 ECDSA, base64) in the layer
//!   annotation `dev.cosignproject.cosign/signature`;
//! - **Sigstore bundle v0.3** (cosign 3): a referrer of the manifest (referrers API or the
//!   `sha256-<hex>` fallback tag) whose layer is a bundle holding a DSSE envelope; the
//!   signature is over the envelope's pre-authentication encoding and its in-toto statement's
//!   `subject` names the digest.
//!
//! Keys are PEM `PUBLIC KEY` files (cosign's `cosign.pub`): ECDSA P-256 or P-384, or Ed25519.

use std::path::Path;

use base64::Engine as _;
use ring::signature::{self as ring_signature, UnparsedPublicKey, VerificationAlgorithm};
use sha2::{Digest as _, Sha256};

use crate::client::{RegistryError, Repository};

/// A legacy cosign signature payload's media type.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that holds a legacy signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type prefix of Sigstore bundles (`…bundle.v0.3+json`).
pub const BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The largest signature payload or bundle read.
pub const MAX_SIGNATURE_BLOB: u64 = 1 << 20;
/// The most signature layers or referrers looked at for one image.
pub const MAX_CANDIDATES: usize = 32;

const IN_TOTO: &str = "application/vnd.in-toto+json";
const SPKI_P256: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
const SPKI_P384: &str = "3076301006072a8648ce3d020106052b81040022036200";
const SPKI_ED25519: &str = "302a300506032b6570032100";

/// Why a signature could not be checked, or did not hold.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A trusted key file is unusable.
    #[error("signature key {path}: {message}")]
    Key { path: String, message: String },
    /// No signature by a trusted key over the digest was found.
    #[error(
        "image {image} ({digest}) has no signature by {keys} over its digest; found: {}",
        found.join("; ")
    )]
    NotVerified {
        /// The image, as named.
        image: String,
        /// The manifest digest that must be signed.
        digest: String,
        /// The trusted keys, for the message.
        keys: String,
        /// What was found, each with the reason it did not verify.
        found: Vec<String>,
    },
}

/// A public key an operator trusts.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where it came from, for messages.
    pub name: String,
    algorithm: &'static dyn VerificationAlgorithm,
    public: Vec<u8>,
    /// sha256 of its SubjectPublicKeyInfo, as cosign's bundle `publicKey.hint` (base64).
    pub fingerprint: [u8; 32],
}

impl TrustedKey {
    /// Reads a PEM public key file.
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let text = std::fs::read_to_string(path).map_err(|e| SignatureError::Key {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_pem(&text, &path.display().to_string())
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) named `name`.
    pub fn from_pem(text: &str, name: &str) -> Result<Self, SignatureError> {
        let error = |message: &str| SignatureError::Key {
            path: name.to_owned(),
            message: message.to_owned(),
        };
        let body: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .map(str::trim)
            .collect();
        if body.is_empty() {
            return Err(error("not a PEM PUBLIC KEY (cosign.pub) file"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| error("the PEM body is not base64"))?;
        let hex_der = hex::encode(&der);
        let (algorithm, prefix): (&'static dyn VerificationAlgorithm, &str) = if hex_der
            .starts_with(SPKI_P256)
            && der.len() == 91
        {
            (&ring_signature::ECDSA_P256_SHA256_ASN1, SPKI_P256)
        } else if hex_der.starts_with(SPKI_P384) && der.len() == 120 {
            (&ring_signature::ECDSA_P384_SHA384_ASN1, SPKI_P384)
        } else if hex_der.starts_with(SPKI_ED25519) && der.len() == 44 {
            (&ring_signature::ED25519, SPKI_ED25519)
        } else {
            return Err(error(
                "not an ECDSA P-256/P-384 or Ed25519 public key (RSA and other keys are not supported)",
            ));
        };
        Ok(TrustedKey {
            name: name.to_owned(),
            algorithm,
            public: der[prefix.len() / 2..].to_vec(),
            fingerprint: Sha256::digest(&der).into(),
        })
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm, &self.public)
            .verify(message, signature)
            .is_ok()
    }
}

/// The first of `keys` whose signature over `message` is `signature`.
fn signer<'k>(keys: &'k [TrustedKey], message: &[u8], signature: &[u8]) -> Option<&'k TrustedKey> {
    keys.iter().find(|k| k.verifies(message, signature))
}

/// Checks one legacy signature: `payload` (a simple-signing document) signed as `signature`
/// (base64) by one of `keys`, naming `digest`. Returns the key's name.
pub fn check_simple_signing(
    payload: &[u8],
    signature: &str,
    digest: &str,
    keys: &[TrustedKey],
) -> Result<String, String> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| "its signature annotation is not base64".to_owned())?;
    let key = signer(keys, payload, &signature)
        .ok_or_else(|| "signed by none of the trusted keys (or tampered with)".to_owned())?;
    let document: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|_| "its payload is not a simple-signing JSON document".to_owned())?;
    let signed = document["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != digest {
        return Err(format!("it signs {signed:?}, not this digest"));
    }
    Ok(key.name.clone())
}

/// Checks one Sigstore bundle (JSON) whose DSSE envelope one of `keys` signed and whose
/// in-toto statement names `digest` as a subject. Returns the key's name.
pub fn check_bundle(bundle: &[u8], digest: &str, keys: &[TrustedKey]) -> Result<String, String> {
    let document: serde_json::Value =
        serde_json::from_slice(bundle).map_err(|_| "the bundle is not JSON".to_owned())?;
    let envelope = &document["dsseEnvelope"];
    if !envelope.is_object() {
        return Err(
            "the bundle holds no DSSE envelope (a message signature cannot name an image digest)"
                .to_owned(),
        );
    }
    let payload_type = envelope["payloadType"].as_str().unwrap_or_default();
    let base64 = base64::engine::general_purpose::STANDARD;
    let payload = base64
        .decode(envelope["payload"].as_str().unwrap_or_default())
        .map_err(|_| "the envelope's payload is not base64".to_owned())?;
    let signed_bytes = pre_authentication_encoding(payload_type, &payload);
    let signatures = envelope["signatures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let key = signatures
        .iter()
        .filter_map(|s| base64.decode(s["sig"].as_str().unwrap_or_default()).ok())
        .find_map(|sig| signer(keys, &signed_bytes, &sig))
        .ok_or_else(|| "signed by none of the trusted keys (or tampered with)".to_owned())?;
    if payload_type != IN_TOTO {
        return Err(format!(
            "its payload is {payload_type:?}, not an in-toto statement"
        ));
    }
    let statement: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|_| "its in-toto statement is not JSON".to_owned())?;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let subjects = statement["subject"].as_array().cloned().unwrap_or_default();
    if !subjects.iter().any(|s| s["digest"]["sha256"] == hex) {
        let named: Vec<&str> = subjects
            .iter()
            .filter_map(|s| s["digest"]["sha256"].as_str())
            .collect();
        return Err(format!(
            "it signs sha256:{}, not this digest",
            named.join(", sha256:")
        ));
    }
    Ok(key.name.clone())
}

/// DSSE's PAE: `DSSEv1 <len type> <type> <len body> <body>`.
fn pre_authentication_encoding(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

/// A signature that held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Which form and where: `legacy signature tag sha256-….sig` or `bundle sha256:…`.
    pub signature: String,
    /// The key that verified it.
    pub key: String,
}

/// Looks in `repository` for a signature by one of `keys` over manifest `digest` of `image`:
/// the legacy tag first, then the bundles among the manifest's referrers.
pub fn verify_image(
    repository: &Repository,
    image: &str,
    digest: &str,
    keys: &[TrustedKey],
) -> Result<Verified, SignatureError> {
    let mut found = Vec::new();
    match legacy_signatures(repository, digest, keys, &mut found) {
        Ok(Some(verified)) => return Ok(verified),
        Ok(None) => {}
        Err(e) => found.push(format!("legacy signature tag: {e}")),
    }
    match bundles(repository, digest, keys, &mut found) {
        Ok(Some(verified)) => return Ok(verified),
        Ok(None) => {}
        Err(e) => found.push(format!("referrers: {e}")),
    }
    if found.is_empty() {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        found.push(format!(
            "nothing (no tag sha256-{hex}.sig, no signature bundle among the referrers)"
        ));
    }
    Err(SignatureError::NotVerified {
        image: image.to_owned(),
        digest: digest.to_owned(),
        keys: describe_keys(keys),
        found,
    })
}

/// The keys, for messages.
pub fn describe_keys(keys: &[TrustedKey]) -> String {
    match keys {
        [one] => format!("key {}", one.name),
        _ => format!(
            "any of the keys {}",
            keys.iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn legacy_signatures(
    repository: &Repository,
    digest: &str,
    keys: &[TrustedKey],
    found: &mut Vec<String>,
) -> Result<Option<Verified>, RegistryError> {
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let Some(manifest) = repository.tagged(&tag)? else {
        return Ok(None);
    };
    let document: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
    let layers = document["layers"].as_array().cloned().unwrap_or_default();
    for (index, layer) in layers.iter().take(MAX_CANDIDATES).enumerate() {
        let what = format!("legacy signature tag {tag}, layer {index}");
        if layer["mediaType"] != SIMPLE_SIGNING {
            continue;
        }
        let Some(signature) = layer["annotations"][SIGNATURE_ANNOTATION].as_str() else {
            found.push(format!("{what}: no {SIGNATURE_ANNOTATION} annotation"));
            continue;
        };
        let Some(size) = layer["size"].as_u64().filter(|s| *s <= MAX_SIGNATURE_BLOB) else {
            found.push(format!(
                "{what}: its payload's size is missing or over {MAX_SIGNATURE_BLOB} bytes"
            ));
            continue;
        };
        let payload_digest = layer["digest"].as_str().unwrap_or_default();
        let payload = match repository.blob(payload_digest, size, &what) {
            Ok(payload) => payload,
            Err(e) => {
                found.push(e.to_string());
                continue;
            }
        };
        match check_simple_signing(&payload, signature, digest, keys) {
            Ok(key) => {
                return Ok(Some(Verified {
                    signature: format!("legacy signature tag {tag}"),
                    key,
                }));
            }
            Err(why) => found.push(format!("{what}: {why}")),
        }
    }
    if !found.iter().any(|f| f.contains(&tag)) {
        found.push(format!("legacy signature tag {tag}: no signature layer"));
    }
    Ok(None)
}

fn bundles(
    repository: &Repository,
    digest: &str,
    keys: &[TrustedKey],
    found: &mut Vec<String>,
) -> Result<Option<Verified>, RegistryError> {
    let referrers = repository.referrers(digest)?;
    for referrer in referrers.iter().take(MAX_CANDIDATES) {
        if !referrer.artifact_type.starts_with(BUNDLE_PREFIX) {
            continue;
        }
        let what = format!("bundle {}", referrer.digest);
        if !referrer.subject_checked {
            found.push(format!("{what}: its subject is not this manifest"));
            continue;
        }
        let document: serde_json::Value =
            serde_json::from_slice(&referrer.manifest.bytes).unwrap_or_default();
        let layer = document["layers"]
            .as_array()
            .and_then(|layers| {
                layers.iter().find(|l| {
                    l["mediaType"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(BUNDLE_PREFIX))
                })
            })
            .cloned();
        let Some(layer) = layer else {
            found.push(format!("{what}: no bundle layer"));
            continue;
        };
        let Some(size) = layer["size"].as_u64().filter(|s| *s <= MAX_SIGNATURE_BLOB) else {
            found.push(format!(
                "{what}: its size is missing or over {MAX_SIGNATURE_BLOB} bytes"
            ));
            continue;
        };
        let bundle =
            match repository.blob(layer["digest"].as_str().unwrap_or_default(), size, &what) {
                Ok(bundle) => bundle,
                Err(e) => {
                    found.push(e.to_string());
                    continue;
                }
            };
        match check_bundle(&bundle, digest, keys) {
            Ok(key) => {
                return Ok(Some(Verified {
                    signature: what,
                    key,
                }));
            }
            Err(why) => found.push(format!("{what}: {why}")),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    struct Signer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_default();
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng);
            Signer {
                pair: pair.unwrap_or_else(|e| panic!("test key: {e}")),
                rng,
            }
        }

        fn key(&self, name: &str) -> TrustedKey {
            let mut der = hex::decode(SPKI_P256).unwrap_or_default();
            der.extend_from_slice(self.pair.public_key().as_ref());
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            let pem = format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n");
            TrustedKey::from_pem(&pem, name).unwrap_or_else(|e| panic!("{e}"))
        }

        fn sign(&self, message: &[u8]) -> Vec<u8> {
            self.pair
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default()
        }
    }

    fn simple_signing(digest: &str) -> Vec<u8> {
        serde_json::json!({"critical": {"identity": {"docker-reference": "reg/x"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"}, "optional": null})
        .to_string()
        .into_bytes()
    }

    fn bundle(signer: &Signer, digest: &str, tamper: bool) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        let statement = serde_json::json!({"_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "reg/x", "digest": {"sha256": hex}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}})
        .to_string();
        let sig = signer.sign(&pre_authentication_encoding(IN_TOTO, statement.as_bytes()));
        let payload = if tamper {
            statement.replace("reg/x", "reg/y")
        } else {
            statement
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "x"}},
            "dsseEnvelope": {"payload": b64.encode(payload), "payloadType": IN_TOTO,
                "signatures": [{"sig": b64.encode(sig), "keyid": ""}]}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn legacy_signatures_hold_only_for_the_key_and_the_digest() {
        let (signer, stranger) = (Signer::new(), Signer::new());
        let keys = [signer.key("release.pub")];
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = simple_signing(DIGEST);
        let good = b64.encode(signer.sign(&payload));
        assert_eq!(
            check_simple_signing(&payload, &good, DIGEST, &keys),
            Ok("release.pub".to_owned())
        );
        let other_key = b64.encode(stranger.sign(&payload));
        let refused = check_simple_signing(&payload, &other_key, DIGEST, &keys);
        assert!(refused.is_err_and(|e| e.contains("none of the trusted keys")));
        let other_payload = simple_signing(OTHER);
        let other_digest = b64.encode(signer.sign(&other_payload));
        let refused = check_simple_signing(&other_payload, &other_digest, DIGEST, &keys);
        assert!(refused.is_err_and(|e| e.contains("not this digest")));
        let tampered = String::from_utf8_lossy(&payload).replace("reg/x", "reg/y");
        let refused = check_simple_signing(tampered.as_bytes(), &good, DIGEST, &keys);
        assert!(refused.is_err_and(|e| e.contains("tampered")));
        assert!(check_simple_signing(&payload, "%%%", DIGEST, &keys).is_err());
    }

    #[test]
    fn bundles_hold_only_for_the_key_the_digest_and_the_untouched_envelope() {
        let (signer, stranger) = (Signer::new(), Signer::new());
        let keys = [stranger.key("old.pub"), signer.key("release.pub")];
        assert_eq!(
            check_bundle(&bundle(&signer, DIGEST, false), DIGEST, &keys),
            Ok("release.pub".to_owned())
        );
        let only_stranger = [stranger.key("old.pub")];
        let refused = check_bundle(&bundle(&signer, DIGEST, false), DIGEST, &only_stranger);
        assert!(refused.is_err_and(|e| e.contains("none of the trusted keys")));
        let refused = check_bundle(&bundle(&signer, OTHER, false), DIGEST, &keys);
        assert!(refused.is_err_and(|e| e.contains("not this digest")));
        let refused = check_bundle(&bundle(&signer, DIGEST, true), DIGEST, &keys);
        assert!(refused.is_err_and(|e| e.contains("tampered")));
        assert!(check_bundle(b"{}", DIGEST, &keys).is_err());
        assert!(check_bundle(b"not json", DIGEST, &keys).is_err());
    }

    #[test]
    fn key_files_must_be_supported_public_keys() {
        let refused = |text: &str| {
            TrustedKey::from_pem(text, "k.pub")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(refused("hello").contains("k.pub"));
        assert!(
            refused("-----BEGIN PUBLIC KEY-----\n%%%\n-----END PUBLIC KEY-----").contains("base64")
        );
        // An RSA SubjectPublicKeyInfo prefix.
        let rsa = base64::engine::general_purpose::STANDARD.encode(
            hex::decode("30820122300d06092a864886f70d01010105000382010f00").unwrap_or_default(),
        );
        assert!(
            refused(&format!(
                "-----BEGIN PUBLIC KEY-----\n{rsa}\n-----END PUBLIC KEY-----"
            ))
            .contains("not supported")
        );
        let key = Signer::new().key("fine.pub");
        assert_eq!(key.name, "fine.pub");
    }
}
