//! [`KeyRing`]: the key ring behind one backend (a directory, or the shared
//! store), with a cache of parsed keys and every change the fleet makes to
//! it, each as one compare-and-set on the ring's version.
//!
//! Reading is cheap on purpose: a poll asks only for the version, and a new
//! version re-parses only the keys it has not seen (a key is decrypted,
//! parsed and probed once per process). Changes are planned from the ring
//! as read, as steps; new keys are generated off the async threads (an RSA
//! key takes a while), then committed only if nobody changed the ring in
//! between.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::dir::DirRing;
use super::shared::SharedRing;
use super::{seal, states, Change, Entry, KeyInfo, KeyRecord, KeySet, KeyState, KeysError};
use super::{Material, NewKey, RingPolicy};
use crate::services::store::StoreHandle;
use crate::services::telemetry::AUDIT;
use crate::settings::{KeyEncryptionKey, Settings};
use crate::token::jws::{SigningAlg, SigningKey};

enum Backend {
    Dir(Arc<DirRing>),
    Shared(SharedRing),
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

/// One planned change; `Add` becomes a key only when committed.
enum Step {
    Add {
        alg: SigningAlg,
        not_before: u64,
        event: &'static str,
    },
    Import(NewKey),
    Revoke {
        record: KeyRecord,
        at: u64,
    },
    Drop {
        id: String,
    },
}

pub struct KeyRing {
    backend: Backend,
    kek: Option<KeyEncryptionKey>,
    rsa_bits: usize,
    cache: Mutex<Cache>,
    health: Mutex<RingHealth>,
}

impl KeyRing {
    /// The ring of `settings`: in the store when it is shared (Redis),
    /// else in `DATA_DIR/keys` (`store` may then be `None`: commands do
    /// not open the embedded store, which the server holds).
    pub fn open(settings: &Settings, store: Option<&StoreHandle>) -> Self {
        let backend = match store {
            Some(store) if store.is_shared() => Backend::Shared(SharedRing::new(store.clone())),
            _ => Backend::Dir(Arc::new(DirRing::new(
                settings.data_dir.join("keys"),
                settings.key_encryption_key.clone(),
            ))),
        };
        Self {
            backend,
            kek: settings.key_encryption_key.clone(),
            rsa_bits: settings.rsa_bits,
            cache: Mutex::new(Cache::default()),
            health: Mutex::new(RingHealth::default()),
        }
    }

    /// Where the keys live, for messages.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(dir) => dir.path().display().to_string(),
            Backend::Shared(shared) => format!("the {} store", shared.kind()),
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
            Backend::Shared(shared) => shared.version().await,
        }
    }

    async fn load(&self) -> Result<(String, Vec<KeyRecord>), KeysError> {
        match &self.backend {
            Backend::Dir(dir) => blocking(dir, |d| d.load()).await,
            Backend::Shared(shared) => shared.load().await,
        }
    }

    async fn commit(&self, expected: &str, changes: Vec<Change>) -> Result<bool, KeysError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let expected = expected.to_owned();
                blocking(dir, move |d| d.commit(&expected, &changes)).await
            }
            Backend::Shared(shared) => shared.commit(self.kek.as_ref(), expected, changes).await,
        }
    }

    /// The ring's entries, sorted by (not-before, kid); re-read only when
    /// its version moved, re-parsing only new keys.
    pub(crate) async fn entries(&self) -> Result<(String, Vec<Entry>), KeysError> {
        let result = self.read_entries().await;
        self.set_health(result.as_ref().err().map(ToString::to_string));
        result
    }

    async fn read_entries(&self) -> Result<(String, Vec<Entry>), KeysError> {
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
        for record in &records {
            if let Some(material) = &record.material {
                let key = match known.get(&record.id) {
                    Some(key) => Arc::clone(key),
                    None => Arc::new(self.open_key(record, material)?),
                };
                parsed.insert(record.id.clone(), key);
            }
        }
        let entries = sorted_entries(&records, &parsed);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Cache {
                version: Some(version.clone()),
                records,
                parsed,
            };
        }
        Ok((version, entries))
    }

    /// The entries last read, for when the ring cannot be read now.
    fn cached_entries(&self) -> Option<Vec<Entry>> {
        let cache = self.cache.lock().ok()?;
        cache.version.as_ref()?;
        Some(sorted_entries(&cache.records, &cache.parsed))
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
        let states = states(&entries, policy.retire_after, now);
        Ok(entries
            .iter()
            .zip(&states)
            .map(|(e, (s, _))| e.info(*s))
            .collect())
    }

    /// The key set at `now`. When the ring cannot be read, the set is
    /// built from the ring as last read (so keys still start and retire on
    /// time) and [`health`](Self::health) reports the error.
    pub async fn key_set(&self, policy: &RingPolicy, now: u64) -> Result<KeySet, KeysError> {
        match self.entries().await {
            Ok((_, entries)) => KeySet::build(&entries, policy, now),
            Err(e) => match self.cached_entries() {
                Some(entries) => KeySet::build(&entries, policy, now),
                None => Err(e),
            },
        }
    }

    /// Applies the steps `plan` makes of the current ring as one
    /// compare-and-set; re-plans on a conflict with another writer.
    async fn update<F>(&self, now: u64, retire_after: u64, mut plan: F) -> Result<usize, KeysError>
    where
        F: FnMut(&[Entry], &[(KeyState, u64)]) -> Result<Vec<Step>, KeysError>,
    {
        for attempt in 0..8u64 {
            // The version check makes the cached entries exactly current;
            // a stale plan only loses the compare-and-set below.
            let (version, entries) = self.entries().await?;
            let steps = plan(&entries, &states(&entries, retire_after, now))?;
            if steps.is_empty() {
                return Ok(0);
            }
            let changes = self.materialize(steps).await?;
            let count = changes.len();
            let done: Vec<Done> = changes.iter().map(Done::of).collect();
            if self.commit(&version, changes).await? {
                for d in &done {
                    d.audit(now);
                }
                return Ok(count);
            }
            // Another instance changed the ring first: look again.
            tokio::time::sleep(std::time::Duration::from_millis(20 + 30 * attempt)).await;
        }
        Err(KeysError::Contended)
    }

    /// Turns steps into changes, generating new keys on a blocking thread.
    async fn materialize(&self, steps: Vec<Step>) -> Result<Vec<Change>, KeysError> {
        let rsa_bits = self.rsa_bits;
        tokio::task::spawn_blocking(move || {
            steps
                .into_iter()
                .map(|step| match step {
                    Step::Add {
                        alg,
                        not_before,
                        event,
                    } => {
                        let generated =
                            SigningKey::generate(alg, rsa_bits).map_err(|_| KeysError::Generate)?;
                        Ok(Change::Add(NewKey {
                            kid: generated.key.kid().to_owned(),
                            alg,
                            not_before,
                            pkcs8: generated.pkcs8,
                            event,
                        }))
                    }
                    Step::Import(new) => Ok(Change::Add(new)),
                    Step::Revoke { record, at } => Ok(Change::Revoke { record, at }),
                    Step::Drop { id } => Ok(Change::Drop { id }),
                })
                .collect()
        })
        .await
        .map_err(|_| KeysError::Internal("key generation stopped"))?
    }

    /// Creates a key for every algorithm in use that has no active one
    /// (first start, an audience given a new algorithm, the active key
    /// revoked). It signs at once: there is no key a verifier could be
    /// using instead.
    pub async fn ensure(&self, policy: &RingPolicy, now: u64) -> Result<usize, KeysError> {
        self.update(now, policy.retire_after, |entries, states| {
            Ok(missing_keys(entries, states, policy, now))
        })
        .await
    }

    /// Adds the next key of every algorithm in use; returns their (kid,
    /// alg, not-before). It signs after the publish lead, or with `urgent`
    /// at once (it replaces the key that signs now; a key already
    /// scheduled still takes over at its own time).
    pub async fn rotate(
        &self,
        policy: &RingPolicy,
        now: u64,
        urgent: bool,
    ) -> Result<Vec<(String, SigningAlg, u64)>, KeysError> {
        let before: BTreeSet<String> = self
            .entries()
            .await?
            .1
            .iter()
            .map(|e| e.kid().to_owned())
            .collect();
        self.update(now, policy.retire_after, |entries, _| {
            Ok(policy
                .in_use
                .iter()
                .map(|alg| {
                    let not_before = if urgent {
                        // Past every key that has started, so it is the
                        // newest of those: it signs now.
                        newest(entries, *alg, |nb| nb <= now).map_or(now, |n| now.max(n + 1))
                    } else {
                        newest(entries, *alg, |_| true)
                            .map_or(now + policy.lead(), |n| (now + policy.lead()).max(n + 1))
                    };
                    Step::Add {
                        alg: *alg,
                        not_before,
                        event: "key_rotated",
                    }
                })
                .collect())
        })
        .await?;
        let (_, entries) = self.entries().await?;
        Ok(entries
            .iter()
            .filter(|e| !before.contains(e.kid()))
            .map(|e| (e.kid().to_owned(), e.record.alg, e.record.not_before))
            .collect())
    }

    /// Once a second on every instance: creates missing keys; schedules
    /// rotation (when the next key of an algorithm is due to be published,
    /// the first instance to commit adds it, signing one period after the
    /// newest key, and at least the lead from now); drops keys that expired
    /// long ago and old revocations.
    pub async fn maintain(&self, policy: &RingPolicy, now: u64) -> Result<usize, KeysError> {
        // Gone a day after nothing can depend on them any more.
        let keep = policy.retire_after + 86_400;
        self.update(now, policy.retire_after, |entries, states| {
            let mut steps = missing_keys(entries, states, policy, now);
            if policy.rotation_secs > 0 {
                for alg in &policy.in_use {
                    let live_newest = entries
                        .iter()
                        .zip(states)
                        .filter(|(e, (s, _))| e.record.alg == *alg && *s != KeyState::Revoked)
                        .map(|(e, _)| e.record.not_before)
                        .max();
                    let Some(live_newest) = live_newest else {
                        continue;
                    };
                    let due = live_newest.saturating_add(policy.rotation_secs);
                    if now.saturating_add(policy.lead()) >= due {
                        let at = due.max(now + policy.lead());
                        let at = newest(entries, *alg, |_| true).map_or(at, |n| at.max(n + 1));
                        steps.push(Step::Add {
                            alg: *alg,
                            not_before: at,
                            event: "key_rotated",
                        });
                    }
                }
            }
            for (entry, (state, replaced_at)) in entries.iter().zip(states) {
                let stale = match state {
                    KeyState::Expired => now >= replaced_at.saturating_add(keep),
                    // A revocation outlives every token its key can have
                    // signed, so a copy of the key found later stays refused.
                    KeyState::Revoked => entry.record.revoked_at.is_some_and(|at| {
                        now >= at.saturating_add(crate::settings::MAX_TTL_CEILING + keep)
                    }),
                    _ => false,
                };
                if stale {
                    steps.push(Step::Drop {
                        id: entry.record.id.clone(),
                    });
                }
            }
            Ok(steps)
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
            .update(now, policy.retire_after, |entries, states| {
                let mut found = false;
                let mut steps = Vec::new();
                for (entry, (state, _)) in entries.iter().zip(states) {
                    if entry.kid() != kid {
                        continue;
                    }
                    found = true;
                    if *state == KeyState::Active && policy.in_use.contains(&entry.record.alg) {
                        return Err(KeysError::OnlySigner(kid.to_owned(), entry.record.alg));
                    }
                    if entry.record.revoked_at.is_none() {
                        let mut record = entry.record.clone();
                        record.kid = Some(kid.to_owned());
                        steps.push(Step::Revoke { record, at: now });
                    }
                }
                if found {
                    Ok(steps)
                } else {
                    Err(KeysError::UnknownKid(kid.to_owned()))
                }
            })
            .await?;
        Ok(changed > 0)
    }

    /// Copies the keys of an existing keys directory into an empty shared
    /// ring (an upgrade from per-instance keys), once: the directory is
    /// then marked imported. Revoked keys stay out. A ring that has keys
    /// already is the fleet's, and the directory is not read.
    pub async fn import_dir(&self, settings: &Settings, now: u64) -> Result<usize, KeysError> {
        if !matches!(self.backend, Backend::Shared(_)) {
            return Ok(0);
        }
        let path = settings.data_dir.join("keys");
        if !path.is_dir() {
            return Ok(0);
        }
        let local = Arc::new(DirRing::importing(path, self.kek.clone()));
        let ring_has_keys = !self.entries().await?.1.is_empty();
        let listed = !blocking(&local, |d| d.version()).await?.is_empty();
        if !listed || local.is_imported() {
            return Ok(0);
        }
        if ring_has_keys {
            tracing::warn!(dir = %local.path().display(), "the shared key ring has keys already; the local keys directory is not imported");
            return Ok(0);
        }
        let (_, records) = blocking(&local, |d| d.load()).await?;
        let revoked: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.revoked_at.is_some())
            .filter_map(|r| r.kid.as_deref())
            .collect();
        let mut keys = Vec::new();
        for record in &records {
            if let Some(material) = &record.material {
                let der = self.open_der(record, material)?;
                let key = SigningKey::from_pkcs8(record.alg, &der)
                    .map_err(|_| KeysError::InvalidRecord(record.location.clone()))?;
                if !revoked.contains(key.kid()) {
                    keys.push((record.alg, record.not_before, key.kid().to_owned(), der));
                }
            }
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let imported = self
            .update(now, settings.max_ttl + settings.leeway, |entries, _| {
                if !entries.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(keys
                    .iter()
                    .map(|(alg, not_before, kid, der)| {
                        Step::Import(NewKey {
                            kid: kid.clone(),
                            alg: *alg,
                            not_before: *not_before,
                            pkcs8: der.clone(),
                            event: "key_imported",
                        })
                    })
                    .collect())
            })
            .await?;
        if imported > 0 {
            blocking(&local, |d| d.mark_imported()).await?;
        }
        Ok(imported)
    }
}

/// Entries sorted by (not-before, kid), with their parsed keys.
fn sorted_entries(records: &[KeyRecord], parsed: &HashMap<String, Arc<SigningKey>>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = records
        .iter()
        .map(|record| Entry {
            record: record.clone(),
            key: parsed.get(&record.id).cloned(),
        })
        .collect();
    entries.sort_by(|a, b| (a.record.not_before, a.kid()).cmp(&(b.record.not_before, b.kid())));
    entries
}

/// The newest not-before of `alg` among entries (any state) that `keep`.
fn newest(entries: &[Entry], alg: SigningAlg, keep: impl Fn(u64) -> bool) -> Option<u64> {
    entries
        .iter()
        .filter(|e| e.record.alg == alg && keep(e.record.not_before))
        .map(|e| e.record.not_before)
        .max()
}

/// A first key, signing now, for each algorithm in use without an active
/// key.
fn missing_keys(
    entries: &[Entry],
    states: &[(KeyState, u64)],
    policy: &RingPolicy,
    now: u64,
) -> Vec<Step> {
    policy
        .in_use
        .iter()
        .filter(|alg| {
            !entries
                .iter()
                .zip(states)
                .any(|(e, (s, _))| e.record.alg == **alg && *s == KeyState::Active)
        })
        .map(|alg| Step::Add {
            alg: *alg,
            // Past every key of the algorithm that has started (a revoked
            // one included), so this one is the newest and signs.
            not_before: newest(entries, *alg, |nb| nb <= now).map_or(now, |n| now.max(n + 1)),
            event: "key_created",
        })
        .collect()
}

/// What a committed change did, for the audit trail (no key material).
enum Done {
    Added(String, SigningAlg, u64, &'static str),
    Revoked(String, SigningAlg),
    Dropped(String),
}

impl Done {
    fn of(change: &Change) -> Self {
        match change {
            Change::Add(new) => Self::Added(new.kid.clone(), new.alg, new.not_before, new.event),
            Change::Revoke { record, .. } => {
                Self::Revoked(record.kid.clone().unwrap_or_default(), record.alg)
            }
            Change::Drop { id } => Self::Dropped(id.clone()),
        }
    }

    fn audit(&self, now: u64) {
        match self {
            Self::Added(kid, alg, not_before, event) => {
                let starts_in = not_before.saturating_sub(now);
                tracing::info!(target: AUDIT, event, outcome = "success", kid = %kid, alg = %alg, not_before, starts_in, "signing key added to the ring");
            }
            Self::Revoked(kid, alg) => {
                tracing::warn!(target: AUDIT, event = "key_revoked", outcome = "success", kid = %kid, alg = %alg, "signing key revoked: no longer published or trusted");
            }
            Self::Dropped(id) => {
                tracing::debug!(id = %id, "long-expired key dropped from the ring")
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    dir: &Arc<DirRing>,
    f: impl FnOnce(&DirRing) -> Result<T, KeysError> + Send + 'static,
) -> Result<T, KeysError> {
    let dir = Arc::clone(dir);
    tokio::task::spawn_blocking(move || f(&dir))
        .await
        .map_err(|_| KeysError::Internal("a key directory task stopped"))?
}
