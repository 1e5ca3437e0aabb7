//! [`KeyRing`]: the key ring behind one backend (a directory, or the shared
//! store), with a cache of parsed keys and every change the fleet makes to
//! it, each as one compare-and-set on the ring's version.
//!
//! Reading is cheap on purpose: a poll asks only for the version, and a new
//! version re-parses only the keys it has not seen (a key is decrypted,
//! parsed and probed once per process).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::dir::DirRing;
use super::{
    seal, states, Change, Entry, KeyInfo, KeyRecord, KeySet, KeyState, KeysError, Material,
};
use super::{NewKey, RingPolicy, PROPAGATION_SECS};
use crate::services::store::StoreHandle;
use crate::services::telemetry::AUDIT;
use crate::settings::{KeyEncryptionKey, Settings};
use crate::token::jws::{SigningAlg, SigningKey};

/// A key as the shared store holds it (one field of the ring's hash).
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

/// What a sealed key in the store is bound to: moving it under another
/// kid, algorithm or not-before makes it fail to open.
fn store_aad(kid: &str, alg: SigningAlg, not_before: u64) -> String {
    format!("auth-jit-key:v1:{kid}:{alg}:{not_before}")
}

enum Backend {
    Dir(Arc<DirRing>),
    Store(StoreHandle),
}

#[derive(Default)]
struct Cache {
    version: Option<String>,
    records: Vec<KeyRecord>,
    /// Parsed keys by record id.
    parsed: HashMap<String, Arc<SigningKey>>,
}

/// Whether the last read of the ring worked.
#[derive(Debug, Clone, Default)]
pub struct RingHealth {
    pub error: Option<String>,
}

/// What a committed change did, for the audit trail (no key material).
enum Done {
    Added(String, SigningAlg, u64, &'static str),
    Revoked(String, SigningAlg),
    Dropped(String),
}

pub struct KeyRing {
    backend: Backend,
    kek: Option<KeyEncryptionKey>,
    cache: Mutex<Cache>,
    health: Mutex<RingHealth>,
}

impl KeyRing {
    /// The ring of `settings`: in the store when it is shared (Redis),
    /// else in `DATA_DIR/keys` (`store` may then be `None`: commands do
    /// not open the embedded store, which the server holds).
    pub fn open(settings: &Settings, store: Option<&StoreHandle>) -> Self {
        let backend = match store {
            Some(store) if store.is_shared() => Backend::Store(store.clone()),
            _ => Backend::Dir(Arc::new(DirRing::new(
                settings.data_dir.join("keys"),
                settings.key_encryption_key.clone(),
            ))),
        };
        Self {
            backend,
            kek: settings.key_encryption_key.clone(),
            cache: Mutex::new(Cache::default()),
            health: Mutex::new(RingHealth::default()),
        }
    }

    /// Where the keys live, for messages.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(dir) => dir.path().display().to_string(),
            Backend::Store(store) => format!("the {} store", store.kind()),
        }
    }

    pub fn health(&self) -> RingHealth {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn set_health(&self, error: Option<String>) {
        if let Ok(mut health) = self.health.lock() {
            health.error = error;
        }
    }

    async fn version(&self) -> Result<String, KeysError> {
        match &self.backend {
            Backend::Dir(dir) => blocking(dir, |d| d.version()).await,
            Backend::Store(store) => Ok(store.ring_version().await?),
        }
    }

    async fn load(&self) -> Result<(String, Vec<KeyRecord>), KeysError> {
        match &self.backend {
            Backend::Dir(dir) => blocking(dir, |d| d.load()).await,
            Backend::Store(store) => {
                let (version, fields) = store.ring_load().await?;
                let records = fields
                    .into_iter()
                    .map(|(field, json)| {
                        let stored: StoredKey = serde_json::from_str(&json)
                            .map_err(|_| KeysError::InvalidRecord(field.clone()))?;
                        let material = match &stored.sealed {
                            None => None,
                            Some(b64) => Some(Material {
                                bytes: STANDARD
                                    .decode(b64)
                                    .map_err(|_| KeysError::InvalidRecord(field.clone()))?,
                                aad: store_aad(&stored.kid, stored.alg, stored.not_before),
                                encrypted: true,
                            }),
                        };
                        Ok(KeyRecord {
                            id: stored.kid.clone(),
                            kid: Some(stored.kid),
                            alg: stored.alg,
                            not_before: stored.not_before,
                            revoked_at: stored.revoked_at,
                            material,
                            location: store.kind().to_owned(),
                        })
                    })
                    .collect::<Result<Vec<_>, KeysError>>()?;
                Ok((version, records))
            }
        }
    }

    async fn commit(&self, expected: &str, changes: Vec<Change>) -> Result<bool, KeysError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let expected = expected.to_owned();
                blocking(dir, move |d| d.commit(&expected, &changes)).await
            }
            Backend::Store(store) => {
                let kek = self.kek.as_ref().ok_or_else(|| {
                    KeysError::NeedsKek("a new key for the shared store".to_owned())
                })?;
                let mut put = Vec::new();
                let mut delete = Vec::new();
                for change in changes {
                    match change {
                        Change::Add(new) => {
                            let aad = store_aad(&new.kid, new.alg, new.not_before);
                            let sealed =
                                seal::seal(kek, &aad, &new.pkcs8).ok_or(KeysError::Generate)?;
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
                            let kid = record.kid.clone().unwrap_or(record.id.clone());
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
                Ok(store.ring_commit(expected, &put, &delete).await?)
            }
        }
    }

    /// The ring's entries, sorted by (not-before, kid); re-read only when
    /// its version moved, re-parsing only new keys.
    pub(crate) async fn entries(&self) -> Result<(String, Vec<Entry>), KeysError> {
        let result = self.entries_inner().await;
        self.set_health(result.as_ref().err().map(ToString::to_string));
        result
    }

    async fn entries_inner(&self) -> Result<(String, Vec<Entry>), KeysError> {
        let version = self.version().await?;
        let cached = self.cache.lock().ok().and_then(|c| {
            (c.version.as_deref() == Some(version.as_str()))
                .then(|| (c.records.clone(), c.parsed.clone()))
        });
        let (version, records, known) = match cached {
            Some((records, parsed)) => (version, records, parsed),
            None => {
                let (version, records) = self.load().await?;
                let known = self
                    .cache
                    .lock()
                    .map(|c| c.parsed.clone())
                    .unwrap_or_default();
                (version, records, known)
            }
        };
        let mut parsed = HashMap::new();
        let mut entries = Vec::with_capacity(records.len());
        for record in &records {
            let key = match &record.material {
                None => None,
                Some(material) => Some(match known.get(&record.id) {
                    Some(key) => Arc::clone(key),
                    None => Arc::new(self.open_key(record, material)?),
                }),
            };
            if let Some(key) = &key {
                parsed.insert(record.id.clone(), Arc::clone(key));
            }
            entries.push(Entry {
                record: record.clone(),
                key,
            });
        }
        entries.sort_by(|a, b| (a.record.not_before, a.kid()).cmp(&(b.record.not_before, b.kid())));
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Cache {
                version: Some(version.clone()),
                records,
                parsed,
            };
        }
        Ok((version, entries))
    }

    /// The PKCS#8 document of a record.
    fn open_der(&self, record: &KeyRecord, material: &Material) -> Result<Vec<u8>, KeysError> {
        if !material.encrypted {
            return Ok(material.bytes.clone());
        }
        let kek = self
            .kek
            .as_ref()
            .ok_or_else(|| KeysError::NeedsKek(record.location.clone()))?;
        seal::open(kek, &material.aad, &material.bytes)
            .ok_or_else(|| KeysError::WrongKek(record.location.clone()))
    }

    fn open_key(&self, record: &KeyRecord, material: &Material) -> Result<SigningKey, KeysError> {
        let der = self.open_der(record, material)?;
        let key = SigningKey::from_pkcs8(record.alg, &der)
            .map_err(|_| KeysError::InvalidRecord(record.location.clone()))?;
        if record.kid.as_deref().is_some_and(|kid| kid != key.kid()) {
            return Err(KeysError::InvalidRecord(record.location.clone()));
        }
        Ok(key)
    }

    /// Every key with its state at `now` (`auth-jit keys list`).
    pub async fn list(&self, policy: &RingPolicy, now: u64) -> Result<Vec<KeyInfo>, KeysError> {
        let (_, entries) = self.entries().await?;
        let states = states(&entries, policy, now);
        Ok(entries
            .iter()
            .zip(&states)
            .map(|(e, (s, _))| e.info(*s))
            .collect())
    }

    /// The key set at `now`.
    pub async fn key_set(&self, policy: &RingPolicy, now: u64) -> Result<KeySet, KeysError> {
        let (_, entries) = self.entries().await?;
        KeySet::build(&entries, policy, now)
    }

    /// Applies the changes `plan` makes of the current ring, as one
    /// compare-and-set; re-plans on a conflict with another writer.
    async fn update<F>(
        &self,
        now: u64,
        policy: &RingPolicy,
        mut plan: F,
    ) -> Result<usize, KeysError>
    where
        F: FnMut(&[Entry], &[(KeyState, u64)]) -> Result<Vec<Change>, KeysError>,
    {
        for attempt in 0..8u64 {
            // The version check makes the cached entries exactly current;
            // a stale plan only loses the compare-and-set below.
            let (version, entries) = self.entries().await?;
            let changes = plan(&entries, &states(&entries, policy, now))?;
            if changes.is_empty() {
                return Ok(0);
            }
            let done: Vec<Done> = changes
                .iter()
                .map(|c| match c {
                    Change::Add(new) => {
                        Done::Added(new.kid.clone(), new.alg, new.not_before, new.event)
                    }
                    Change::Revoke { record, .. } => {
                        Done::Revoked(record.kid.clone().unwrap_or(record.id.clone()), record.alg)
                    }
                    Change::Drop { id } => Done::Dropped(id.clone()),
                })
                .collect();
            if self.commit(&version, changes).await? {
                for d in &done {
                    audit(d, now);
                }
                return Ok(done.len());
            }
            // Another instance changed the ring first: look again.
            tokio::time::sleep(std::time::Duration::from_millis(20 + 30 * attempt)).await;
        }
        Err(KeysError::Contended)
    }

    /// Creates a key for every algorithm in use that has none (first
    /// start, or an audience given a new algorithm). It signs at once:
    /// there is no earlier key a verifier could be using instead.
    pub async fn ensure(&self, policy: &RingPolicy, now: u64) -> Result<usize, KeysError> {
        self.update(now, policy, |entries, states| {
            missing_keys(entries, states, policy, now)
        })
        .await
    }

    /// Adds the next key of every algorithm in use, signing from
    /// `not_before` (moved past every existing key of its algorithm, so it
    /// is the newest on every instance, whatever their clocks). Returns
    /// the new keys' (kid, alg, not-before).
    pub async fn rotate(
        &self,
        policy: &RingPolicy,
        now: u64,
        not_before: u64,
    ) -> Result<Vec<(String, SigningAlg, u64)>, KeysError> {
        let mut added = Vec::new();
        self.update(now, policy, |entries, states| {
            added.clear();
            let mut changes = Vec::new();
            for alg in &policy.in_use {
                let newest = entries
                    .iter()
                    .zip(states)
                    .filter(|(e, (s, _))| e.record.alg == *alg && *s != KeyState::Revoked)
                    .map(|(e, _)| e.record.not_before)
                    .max();
                let at = newest.map_or(not_before, |n| not_before.max(n + 1));
                let change = new_key(*alg, at, policy.rsa_bits, "key_rotated")?;
                if let Change::Add(new) = &change {
                    added.push((new.kid.clone(), *alg, at));
                }
                changes.push(change);
            }
            Ok(changes)
        })
        .await?;
        Ok(added)
    }

    /// Scheduled rotation: when the next key of an algorithm is due to be
    /// published, one instance adds it (the compare-and-set makes it one
    /// decision for the fleet), signing one period after the newest key,
    /// and at least the publish lead (plus propagation) from now. Also
    /// drops keys that expired long ago and old revocations.
    pub async fn maintain(&self, policy: &RingPolicy, now: u64) -> Result<usize, KeysError> {
        let lead = policy.publish_secs + PROPAGATION_SECS;
        let keep = policy.retire_after + 86_400;
        self.update(now, policy, |entries, states| {
            let mut changes = missing_keys(entries, states, policy, now)?;
            if policy.rotation_secs > 0 {
                for alg in &policy.in_use {
                    let newest = entries
                        .iter()
                        .zip(states)
                        .filter(|(e, (s, _))| e.record.alg == *alg && *s != KeyState::Revoked)
                        .map(|(e, _)| e.record.not_before)
                        .max();
                    let Some(newest) = newest else { continue };
                    let due = newest.saturating_add(policy.rotation_secs);
                    if now.saturating_add(lead) >= due {
                        changes.push(new_key(
                            *alg,
                            due.max(now + lead),
                            policy.rsa_bits,
                            "key_rotated",
                        )?);
                    }
                }
            }
            for (entry, (state, replaced_at)) in entries.iter().zip(states) {
                let stale = match state {
                    KeyState::Expired => now >= replaced_at.saturating_add(keep),
                    KeyState::Revoked => entry.record.revoked_at.is_some_and(|at| {
                        now >= at.saturating_add(crate::settings::MAX_TTL_CEILING + keep)
                    }),
                    _ => false,
                };
                if stale {
                    changes.push(Change::Drop {
                        id: entry.record.id.clone(),
                    });
                }
            }
            Ok(changes)
        })
        .await
    }

    /// Ends `kid`: unpublished and untrusted everywhere at the next poll,
    /// its private material destroyed. The key that signs now for an
    /// algorithm in use is refused until a successor signs.
    pub async fn revoke(
        &self,
        policy: &RingPolicy,
        kid: &str,
        now: u64,
    ) -> Result<bool, KeysError> {
        let changed = self
            .update(now, policy, |entries, states| {
                let mut found = false;
                let mut changes = Vec::new();
                for (entry, (state, _)) in entries.iter().zip(states) {
                    if entry.kid() != kid {
                        continue;
                    }
                    found = true;
                    if *state == KeyState::Active {
                        return Err(KeysError::OnlySigner(kid.to_owned(), entry.record.alg));
                    }
                    if entry.record.revoked_at.is_none() {
                        let mut record = entry.record.clone();
                        record.kid = Some(kid.to_owned());
                        changes.push(Change::Revoke { record, at: now });
                    }
                }
                if found {
                    Ok(changes)
                } else {
                    Err(KeysError::UnknownKid(kid.to_owned()))
                }
            })
            .await?;
        Ok(changed > 0)
    }

    /// Copies the keys of an existing keys directory into an empty shared
    /// ring (an upgrade from per-instance keys); returns how many. A ring
    /// that has keys already is left alone: it is the fleet's.
    pub async fn import_dir(&self, settings: &Settings, now: u64) -> Result<usize, KeysError> {
        if !matches!(self.backend, Backend::Store(_)) {
            return Ok(0);
        }
        let path = settings.data_dir.join("keys");
        if !path.is_dir() {
            return Ok(0);
        }
        let local = Arc::new(DirRing::importing(path, self.kek.clone()));
        if !self.entries().await?.1.is_empty() {
            // Only listed, never opened: a stale local file must not stop
            // an instance whose keys are the fleet's.
            if !blocking(&local, |d| d.version()).await?.is_empty() {
                tracing::warn!(dir = %local.path().display(), "the shared key ring has keys already; the local keys directory is not used");
            }
            return Ok(0);
        }
        let (_, records) = blocking(&local, |d| d.load()).await?;
        let mut keys = Vec::new();
        for record in records.iter().filter(|r| r.revoked_at.is_none()) {
            if let Some(material) = &record.material {
                let der = self.open_der(record, material)?;
                let key = SigningKey::from_pkcs8(record.alg, &der)
                    .map_err(|_| KeysError::InvalidRecord(record.location.clone()))?;
                keys.push((record.alg, record.not_before, key.kid().to_owned(), der));
            }
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let policy = RingPolicy {
            default_alg: settings.signing_alg,
            in_use: Default::default(),
            rsa_bits: settings.rsa_bits,
            publish_secs: settings.key_publish_secs,
            rotation_secs: 0,
            retire_after: 0,
        };
        let imported = self
            .update(now, &policy, |entries, _| {
                if !entries.is_empty() {
                    return Ok(Vec::new());
                }
                keys.iter()
                    .map(|(alg, not_before, kid, der)| {
                        Ok(Change::Add(NewKey {
                            kid: kid.clone(),
                            alg: *alg,
                            not_before: *not_before,
                            pkcs8: der.clone(),
                            event: "key_imported",
                        }))
                    })
                    .collect()
            })
            .await?;
        if imported == 0 {
            tracing::warn!(dir = %local.path().display(), "the shared key ring has keys already; the local keys directory is not used");
        }
        Ok(imported)
    }
}

/// A first key for each algorithm in use that has no usable one.
fn missing_keys(
    entries: &[Entry],
    states: &[(KeyState, u64)],
    policy: &RingPolicy,
    now: u64,
) -> Result<Vec<Change>, KeysError> {
    let mut changes = Vec::new();
    for alg in &policy.in_use {
        let has = entries
            .iter()
            .zip(states)
            .any(|(e, (s, _))| e.record.alg == *alg && *s != KeyState::Revoked);
        if !has {
            changes.push(new_key(*alg, now, policy.rsa_bits, "key_created")?);
        }
    }
    Ok(changes)
}

fn json(stored: &StoredKey) -> Result<String, KeysError> {
    serde_json::to_string(stored).map_err(|_| KeysError::Generate)
}

fn new_key(
    alg: SigningAlg,
    not_before: u64,
    rsa_bits: usize,
    event: &'static str,
) -> Result<Change, KeysError> {
    let generated = SigningKey::generate(alg, rsa_bits).map_err(|_| KeysError::Generate)?;
    Ok(Change::Add(NewKey {
        kid: generated.key.kid().to_owned(),
        alg,
        not_before,
        pkcs8: generated.pkcs8,
        event,
    }))
}

fn audit(done: &Done, now: u64) {
    match done {
        Done::Added(kid, alg, not_before, event) => {
            let starts_in = not_before.saturating_sub(now);
            tracing::info!(target: AUDIT, event, outcome = "success", kid = %kid, alg = %alg, not_before, starts_in, "signing key added to the ring");
        }
        Done::Revoked(kid, alg) => {
            tracing::warn!(target: AUDIT, event = "key_revoked", outcome = "success", kid = %kid, alg = %alg, "signing key revoked: no longer published or trusted");
        }
        Done::Dropped(id) => tracing::debug!(id = %id, "long-expired key dropped from the ring"),
    }
}

async fn blocking<T: Send + 'static>(
    dir: &Arc<DirRing>,
    f: impl FnOnce(&DirRing) -> Result<T, KeysError> + Send + 'static,
) -> Result<T, KeysError> {
    let dir = Arc::clone(dir);
    tokio::task::spawn_blocking(move || f(&dir))
        .await
        .map_err(|_| KeysError::Generate)?
}
