//! Content digests: computing sha256 and checking a blob against its descriptor.

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Why a blob does not match the descriptor that names it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobMismatch {
    /// The blob's length differs from the descriptor's `size`.
    #[error("size mismatch for blob {digest}: descriptor says {expected} bytes, blob has {actual}")]
    Size {
        /// The digest the descriptor names.
        digest: String,
        /// Size the descriptor claims.
        expected: u64,
        /// Size of the bytes found.
        actual: u64,
    },
    /// The blob's sha256 differs from the descriptor's digest.
    #[error("digest mismatch for blob {expected}: content hashes to {actual}")]
    Digest {
        /// The digest the descriptor names.
        expected: String,
        /// The digest of the bytes found.
        actual: String,
    },
}

/// Checks size first (cheap, and catches truncation), then the sha256.
pub fn verify_blob(
    expected_digest: &str,
    expected_size: u64,
    bytes: &[u8],
) -> Result<(), BlobMismatch> {
    let actual_size = bytes.len() as u64;
    if actual_size != expected_size {
        return Err(BlobMismatch::Size {
            digest: expected_digest.to_owned(),
            expected: expected_size,
            actual: actual_size,
        });
    }
    let actual = sha256_digest(bytes);
    if actual != expected_digest {
        return Err(BlobMismatch::Digest {
            expected: expected_digest.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// The hex part of a `sha256:<64 hex>` digest, or `None` for any other form.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_has_the_well_known_digest() {
        assert_eq!(
            sha256_digest(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn verify_reports_size_before_digest() {
        let d = sha256_digest(b"abc");
        assert_eq!(verify_blob(&d, 3, b"abc"), Ok(()));
        assert!(matches!(
            verify_blob(&d, 4, b"abc"),
            Err(BlobMismatch::Size { .. })
        ));
        assert!(matches!(
            verify_blob(&d, 3, b"abd"),
            Err(BlobMismatch::Digest { .. })
        ));
    }

    #[test]
    fn sha256_hex_rejects_other_forms() {
        assert!(sha256_hex("sha512:00").is_none());
        assert!(sha256_hex("sha256:../../etc/passwd").is_none());
        assert!(sha256_hex(&sha256_digest(b"x")).is_some());
    }
}
