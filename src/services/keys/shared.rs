//! The key ring in the shared store (Redis): one hash, `<prefix>keyring`.
//! Field `v` holds the ring's version, a random token that every commit
//! replaces (a counter could repeat after the hash is deleted and a
//! stale reader would not notice); field `k:<kid>` holds one key as JSON,
//! its private key sealed under the key-encryption key and bound to its
//! kid, algorithm and not-before. Every commit is one compare-and-set on
//! `v` (a Lua script in the store).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{seal, Change, KeyRecord, KeysError, Material};
use crate::services::store::StoreHandle;
use crate::settings::KeyEncryptionKey;
use crate::token::jws::SigningAlg;

/// A key as the store holds it.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: SigningAlg,
    not_before: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<u64>,
    /// base64 of nonce || AES-256-GCM ciphertext || tag; gone once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// What a sealed key is bound to: moving it under another kid, algorithm
/// or not-before makes it fail to open.
fn aad(kid: &str, alg: SigningAlg, not_before: u64) -> String {
    format!("auth-jit-key:v1:{kid}:{alg}:{not_before}")
}

pub struct SharedRing {
    store: StoreHandle,
}

impl SharedRing {
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    pub async fn version(&self) -> Result<String, KeysError> {
        Ok(self.store.ring_version().await?)
    }

    pub async fn load(&self) -> Result<(String, Vec<KeyRecord>), KeysError> {
        let (version, fields) = self.store.ring_load().await?;
        let records = fields
            .into_iter()
            .map(|(kid, json)| {
                let invalid = || KeysError::InvalidRecord(format!("k:{kid} in the store"));
                let stored: StoredKey = serde_json::from_str(&json).map_err(|_| invalid())?;
                if stored.kid != kid {
                    return Err(invalid());
                }
                let material = match &stored.sealed {
                    None => None,
                    Some(b64) => Some(Material {
                        bytes: STANDARD.decode(b64).map_err(|_| invalid())?,
                        aad: aad(&kid, stored.alg, stored.not_before),
                        encrypted: true,
                    }),
                };
                Ok(KeyRecord {
                    id: kid.clone(),
                    kid: Some(kid),
                    alg: stored.alg,
                    not_before: stored.not_before,
                    revoked_at: stored.revoked_at,
                    material,
                    location: self.store.kind().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, KeysError>>()?;
        Ok((version, records))
    }

    pub async fn commit(
        &self,
        kek: Option<&KeyEncryptionKey>,
        expected: &str,
        changes: Vec<Change>,
    ) -> Result<bool, KeysError> {
        let kek =
            kek.ok_or_else(|| KeysError::NeedsKek("every key in the shared store".to_owned()))?;
        let json = |stored: &StoredKey| {
            serde_json::to_string(stored)
                .map_err(|_| KeysError::Internal("a key record does not serialize"))
        };
        let mut put = Vec::new();
        let mut delete = Vec::new();
        for change in changes {
            match change {
                Change::Add(new) => {
                    let sealed =
                        seal::seal(kek, &aad(&new.kid, new.alg, new.not_before), &new.pkcs8)
                            .ok_or(KeysError::Internal("sealing a key failed"))?;
                    let stored = StoredKey {
                        kid: new.kid.clone(),
                        alg: new.alg,
                        not_before: new.not_before,
                        revoked_at: None,
                        sealed: Some(STANDARD.encode(sealed)),
                    };
                    put.push((new.kid, json(&stored)?));
                }
                Change::Revoke { record, at } => {
                    let kid = record
                        .kid
                        .clone()
                        .ok_or(KeysError::Internal("revoking a key of unknown kid"))?;
                    let stored = StoredKey {
                        kid: kid.clone(),
                        alg: record.alg,
                        not_before: record.not_before,
                        revoked_at: Some(at),
                        sealed: None,
                    };
                    put.push((kid, json(&stored)?));
                }
                Change::Drop { id } => delete.push(id),
            }
        }
        let mut token = [0u8; 16];
        aws_lc_rs::rand::fill(&mut token).map_err(|_| KeysError::Internal("no randomness"))?;
        let next = URL_SAFE_NO_PAD.encode(token);
        Ok(self
            .store
            .ring_commit(expected, &next, &put, &delete)
            .await?)
    }
}
