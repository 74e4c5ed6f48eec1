//! The one content hash of the project: the first 16 hex digits of a sha256. The
//! EndpointPickerConfig's identity, the applied-object annotation and the KV-transfer
//! ConfigMap's pod-template annotation are all this hash of their canonical bytes.

use sha2::{Digest, Sha256};

/// The first 16 hex digits of the sha256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_the_sha256_prefix() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(content_hash(b"abc"), "ba7816bf8f01cfea");
    }
}
