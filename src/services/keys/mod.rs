//! The signing key ring: where keys live, which one signs, which ones are
//! published, and the changes the fleet agrees on (creation, rotation,
//! revocation).
//!
//! Keys follow the store. With the embedded store they are files in
//! `DATA_DIR/keys` ([`dir`]); with Redis they live in Redis, each private
//! key sealed under the key-encryption key ([`seal`]), so instances with
//! separate data directories sign with the same key and publish the same
//! JWKS. Every change is a compare-and-set on the ring's version: three
//! instances that find an empty ring at once create one key, and a
//! scheduled rotation happens once per period for the whole fleet.
//!
//! A key's life: published (`next`) at least `AUTH_JIT_KEY_PUBLISH_SECS`
//! before it signs, so every verifier that caches the JWKS for max-age has
//! it; `active` from its not-before; `retired` (published, verifying) once
//! its successor signs, until every token it signed has expired; then
//! `expired`. `keys revoke` ends a key at once: unpublished, untrusted, its
//! private material destroyed.

mod dir;
mod ring;
mod seal;
mod shared;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::services::store::StoreError;
use crate::settings::Settings;
use crate::token::jws::{SigningAlg, SigningKey, VerifyingKey};
use crate::token::verify::KeyLookup;

pub use self::dir::write_private_file;
pub use self::ring::KeyRing;

/// Seconds a change to the ring may take to reach every instance (they
/// poll every second); added to the publish lead of scheduled keys.
pub const PROPAGATION_SECS: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("key directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {0}: not a valid key")]
    Invalid(PathBuf),
    #[error("key {0}: not a valid key record")]
    InvalidRecord(String),
    #[error(
        "key {0} is encrypted: set AUTH_JIT_KEY_ENCRYPTION_KEY (or _FILE) to the key that wrote it"
    )]
    NeedsKek(String),
    #[error("key {0} does not decrypt with AUTH_JIT_KEY_ENCRYPTION_KEY")]
    WrongKek(String),
    #[error("key file {0} is not encrypted, but AUTH_JIT_KEY_ENCRYPTION_KEY is set: a planted plaintext key would be trusted, so it is refused (remove it; a new, encrypted key is created)")]
    Plaintext(PathBuf),
    #[error("could not generate a signing key")]
    Generate,
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("no usable {0} signing key in the key ring")]
    NoKey(SigningAlg),
    #[error("the key ring in the store: {0}")]
    Store(#[from] StoreError),
    #[error("the key ring kept changing under this update; try again")]
    Contended,
    #[error("no key {0} in the key ring")]
    UnknownKid(String),
    #[error("key {0} is the {1} key that signs now and has no successor yet: run `auth-jit keys rotate --now` first, then revoke it")]
    OnlySigner(String, SigningAlg),
}

/// Creates the directory (and parents) private to the owner (0700). An
/// existing directory is left as the operator made it (it may be a
/// read-only mount), with a warning if others can read it.
pub fn create_private_dir(dir: &Path) -> Result<(), KeysError> {
    let fail = |source| KeysError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "directory is accessible to other users");
            }
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet (its not-before is in the future).
    Next,
    /// Signs new tokens of its algorithm.
    Active,
    /// Replaced; published until every token it signed has expired.
    Retired,
    /// Replaced long enough ago that no token it signed can be valid: no
    /// longer published or trusted.
    Expired,
    /// Ended by `auth-jit keys revoke`: never published or trusted again.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// In the JWKS (and trusted).
    pub fn is_published(self) -> bool {
        matches!(self, Self::Next | Self::Active | Self::Retired)
    }
}

/// One key as the operator sees it in `auth-jit keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: SigningAlg,
    /// Signs from this instant (unix seconds).
    pub not_before: u64,
    pub state: KeyState,
    pub revoked_at: Option<u64>,
    pub encrypted: bool,
    /// The file, or the store that holds it.
    pub location: String,
}

/// A private key as stored: sealed (or, in a directory without a
/// key-encryption key, plain) PKCS#8.
#[derive(Clone)]
pub struct Material {
    pub bytes: Vec<u8>,
    /// Associated data it was sealed under.
    pub aad: String,
    pub encrypted: bool,
}

/// One entry of the ring as a backend returns it.
#[derive(Clone)]
pub struct KeyRecord {
    /// The backend's name for it (file name, or kid in the store).
    pub id: String,
    /// Known without opening the key for store records and revoked keys.
    pub kid: Option<String>,
    pub alg: SigningAlg,
    pub not_before: u64,
    pub revoked_at: Option<u64>,
    /// `None` once revoked: the private key is destroyed.
    pub material: Option<Material>,
    pub location: String,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("alg", &self.alg)
            .field("not_before", &self.not_before)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// A new key for a backend to store.
pub struct NewKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub not_before: u64,
    pub pkcs8: Vec<u8>,
    /// The audit event that records it: `key_created`, `key_rotated` or
    /// `key_imported`.
    pub event: &'static str,
}

/// One change to the ring, applied atomically with the others of a commit.
pub enum Change {
    Add(NewKey),
    Revoke { record: KeyRecord, at: u64 },
    Drop { id: String },
}

/// How the ring is used: which algorithms sign, how long keys live.
#[derive(Debug, Clone)]
pub struct RingPolicy {
    /// Signs tokens of audiences that name no algorithm.
    pub default_alg: SigningAlg,
    /// Every algorithm some audience is signed with (the default included).
    pub in_use: BTreeSet<SigningAlg>,
    pub rsa_bits: usize,
    /// A scheduled or `keys rotate` key is published this long before it signs.
    pub publish_secs: u64,
    /// Scheduled rotation period; 0: none.
    pub rotation_secs: u64,
    /// A replaced key stays published this long: the longest a token can
    /// live plus the verifiers' leeway.
    pub retire_after: u64,
}

impl RingPolicy {
    /// How long before it signs a rotated key is published: the publish
    /// lead plus the time a change takes to reach every instance.
    pub fn lead(&self) -> u64 {
        self.publish_secs + PROPAGATION_SECS
    }

    pub fn new(settings: &Settings, audience_algs: impl IntoIterator<Item = SigningAlg>) -> Self {
        let mut in_use: BTreeSet<SigningAlg> = audience_algs.into_iter().collect();
        in_use.insert(settings.signing_alg);
        Self {
            default_alg: settings.signing_alg,
            in_use,
            rsa_bits: settings.rsa_bits,
            publish_secs: settings.key_publish_secs,
            rotation_secs: settings.key_rotation_secs,
            retire_after: settings.max_ttl + settings.leeway,
        }
    }
}

/// A record with its parsed key (absent for revoked ones).
#[derive(Clone)]
pub(crate) struct Entry {
    pub record: KeyRecord,
    pub key: Option<Arc<SigningKey>>,
}

impl Entry {
    pub fn kid(&self) -> &str {
        match (&self.key, &self.record.kid) {
            (Some(key), _) => key.kid(),
            (None, Some(kid)) => kid,
            (None, None) => "",
        }
    }

    pub fn info(&self, state: KeyState) -> KeyInfo {
        KeyInfo {
            kid: self.kid().to_owned(),
            alg: self.record.alg,
            not_before: self.record.not_before,
            state,
            revoked_at: self.record.revoked_at,
            encrypted: self.record.material.as_ref().is_some_and(|m| m.encrypted),
            location: self.record.location.clone(),
        }
    }
}

/// The state of every entry at `now`, with the instant each replaced key
/// was replaced. Entries must be sorted by (not-before, kid).
///
/// Only the ring decides, never an instance's settings, so every instance
/// computes the same states: per algorithm, the newest key whose time has
/// come signs; if that key is revoked, none does (an older key is never
/// brought back). Every older key was replaced when the next one of its
/// algorithm began, and expires `retire_after` later. A key whose
/// algorithm nobody uses any more stays active until it is revoked.
pub(crate) fn states(entries: &[Entry], retire_after: u64, now: u64) -> Vec<(KeyState, u64)> {
    let revoked: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.record.revoked_at.is_some())
        .map(Entry::kid)
        .collect();
    let live = |e: &Entry| e.key.is_some() && !revoked.contains(e.kid());
    let mut newest_started: BTreeMap<SigningAlg, usize> = BTreeMap::new();
    let mut first_live: BTreeMap<SigningAlg, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.record.not_before <= now {
            newest_started.insert(e.record.alg, i);
        }
        if live(e) {
            first_live.entry(e.record.alg).or_insert(i);
        }
    }
    let mut active: BTreeMap<SigningAlg, usize> = BTreeMap::new();
    for (alg, first) in &first_live {
        match newest_started.get(alg) {
            Some(&i) if live(&entries[i]) => {
                active.insert(*alg, i);
            }
            Some(_) => {}
            // Every key of the algorithm lies in the future (clock
            // trouble): the earliest signs.
            None => {
                active.insert(*alg, *first);
            }
        }
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if !live(e) {
                return (KeyState::Revoked, 0);
            }
            if active.get(&e.record.alg) == Some(&i) {
                return (KeyState::Active, 0);
            }
            if e.record.not_before > now {
                return (KeyState::Next, 0);
            }
            let replaced_at = entries[i + 1..]
                .iter()
                .filter(|n| n.record.alg == e.record.alg && n.record.not_before <= now)
                .map(|n| n.record.not_before)
                .next()
                .unwrap_or(now);
            if now >= replaced_at.saturating_add(retire_after) {
                (KeyState::Expired, replaced_at)
            } else {
                (KeyState::Retired, replaced_at)
            }
        })
        .collect()
}

/// The JWKS as served: the body and its entity tag.
#[derive(Debug, Clone)]
pub struct Jwks {
    pub body: bytes::Bytes,
    pub etag: String,
}

/// The loaded key set: the active key of each algorithm and every key that
/// verifies. Built from the ring at one instant; cheap to share.
#[derive(Debug)]
pub struct KeySet {
    /// `None` only in the empty set a server starts with while the shared
    /// ring cannot be read yet: it signs and trusts nothing.
    default: Option<Arc<SigningKey>>,
    active: BTreeMap<SigningAlg, Arc<SigningKey>>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: Jwks,
    info: Vec<KeyInfo>,
}

impl KeyLookup for KeySet {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }
}

impl KeySet {
    pub(crate) fn build(
        entries: &[Entry],
        policy: &RingPolicy,
        now: u64,
    ) -> Result<Self, KeysError> {
        let states = states(entries, policy.retire_after, now);
        let mut active = BTreeMap::new();
        let mut verifying = HashMap::new();
        let mut keys = Vec::new();
        let mut info = Vec::new();
        for (entry, (state, _)) in entries.iter().zip(&states) {
            if let (Some(key), true) = (&entry.key, state.is_published()) {
                if verifying
                    .insert(key.kid().to_owned(), key.verifying_key().clone())
                    .is_none()
                {
                    keys.push(serde_json::Value::Object(key.verifying_key().jwk().clone()));
                }
                if *state == KeyState::Active {
                    active.insert(key.alg(), Arc::clone(key));
                }
            }
            info.push(entry.info(*state));
        }
        let default = Some(
            active
                .get(&policy.default_alg)
                .cloned()
                .ok_or(KeysError::NoKey(policy.default_alg))?,
        );
        let body: bytes::Bytes = serde_json::to_vec(&serde_json::json!({ "keys": keys }))
            .map_err(|_| KeysError::Internal("the JWKS does not serialize"))?
            .into();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        use base64::Engine;
        let etag = format!(
            "\"{}\"",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
        );
        Ok(Self {
            default,
            active,
            verifying,
            jwks: Jwks { body, etag },
            info,
        })
    }

    /// No keys at all: what a server holds until it first reads the ring.
    pub fn empty() -> Self {
        Self {
            default: None,
            active: BTreeMap::new(),
            verifying: HashMap::new(),
            jwks: Jwks {
                body: bytes::Bytes::from_static(br#"{"keys":[]}"#),
                etag: "\"empty\"".to_owned(),
            },
            info: Vec::new(),
        }
    }

    /// The key that signs tokens of audiences without an algorithm of
    /// their own.
    pub fn active(&self) -> Option<&SigningKey> {
        self.default.as_deref()
    }

    /// The key that signs with `alg` now, if the ring has one yet.
    pub fn active_for(&self, alg: SigningAlg) -> Option<&SigningKey> {
        self.active.get(&alg).map(AsRef::as_ref)
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    pub fn info(&self) -> &[KeyInfo] {
        &self.info
    }

    /// Whether `other` differs in what it signs with or publishes.
    pub fn differs_from(&self, other: &KeySet) -> bool {
        self.jwks.etag != other.jwks.etag
            || self.active.len() != other.active.len()
            || self
                .active
                .iter()
                .any(|(alg, key)| other.active.get(alg).map(|k| k.kid()) != Some(key.kid()))
    }
}

#[cfg(test)]
mod tests;
