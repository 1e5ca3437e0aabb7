//! Private keys at rest: AES-256-GCM under the key-encryption key, a random
//! nonce per key, and associated data that names the key (its file name, or
//! its kid, algorithm and not-before in the shared ring), so a sealed key
//! cannot be moved into another key's place.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};

use crate::settings::KeyEncryptionKey;

/// `nonce || ciphertext || tag`.
pub fn seal(kek: &KeyEncryptionKey, aad: &str, der: &[u8]) -> Option<Vec<u8>> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, &kek.0).ok()?;
    let mut in_out = der.to_vec();
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad.as_bytes()), &mut in_out)
        .ok()?;
    let mut out = nonce.as_ref().to_vec();
    out.extend_from_slice(&in_out);
    Some(out)
}

/// The PKCS#8 document, or `None` if the bytes were not sealed by `kek`
/// under `aad`.
pub fn open(kek: &KeyEncryptionKey, aad: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let key = RandomizedNonceKey::new(&AES_256_GCM, &kek.0).ok()?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_kek_and_name() {
        let kek = KeyEncryptionKey([7; 32]);
        let sealed = seal(&kek, "a", b"secret der").expect("seal");
        assert!(!sealed.windows(10).any(|w| w == b"secret der"));
        assert_eq!(
            open(&kek, "a", &sealed).as_deref(),
            Some(&b"secret der"[..])
        );
        assert!(
            open(&kek, "b", &sealed).is_none(),
            "moved under another name"
        );
        assert!(open(&KeyEncryptionKey([8; 32]), "a", &sealed).is_none());
        assert!(open(&kek, "a", &sealed[..5]).is_none());
    }
}
