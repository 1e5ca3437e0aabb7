//! The signing keys: one file per key in `DATA_DIR/keys`, PKCS#8 DER, mode
//! 0600, created on first start and reused after every restart.
//!
//! File names are `<not-before-unix-seconds>-<alg>-<kid prefix>.p8`: a key signs from
//! that instant on. `auth-jit keys rotate` writes the next key with a
//! not-before in the future, so it is published in the JWKS (and cached by
//! verifiers) before anything is signed with it; the previous key stays
//! published until every token it signed has expired. With
//! `AUTH_JIT_KEY_ENCRYPTION_KEY` set, new keys are written as `.p8.enc`:
//! AES-256-GCM with a random nonce and the file name as associated data, so
//! a file cannot be renamed into another key's place.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use jsonwebtoken::jwk::JwkSet;

use crate::settings::{KeyEncryptionKey, Settings};
use crate::token::jws::{SigningAlg, SigningKey, VerifyingKey};
use crate::token::verify::KeyLookup;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("key directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {0}: not a valid key")]
    Invalid(PathBuf),
    #[error("key file {0} is encrypted: set AUTH_JIT_KEY_ENCRYPTION_KEY (or _FILE) to the key that wrote it")]
    NeedsKek(PathBuf),
    #[error("key file {0} does not decrypt with AUTH_JIT_KEY_ENCRYPTION_KEY")]
    WrongKek(PathBuf),
    #[error("key file {0} is not encrypted, but AUTH_JIT_KEY_ENCRYPTION_KEY is set: a planted plaintext key would be trusted, so it is refused (remove it; a new, encrypted key is created)")]
    Plaintext(PathBuf),
    #[error("could not generate a signing key")]
    Generate,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet (its not-before is in the future).
    Next,
    /// Signs new tokens.
    Active,
    /// Replaced; published until every token it signed has expired.
    Retired,
    /// Replaced long enough ago that no token it signed can be valid: no
    /// longer published or trusted. Its file may be deleted.
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Expired => "expired",
        }
    }
}

/// One key as the operator sees it in `auth-jit keys list`.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: SigningAlg,
    /// Signs from this instant (unix seconds); its creation time unless it
    /// was written by `keys rotate` for later.
    pub created: u64,
    pub state: KeyState,
    pub encrypted: bool,
    pub file: PathBuf,
}

/// How long a replaced key stays published: the longest a token can live,
/// plus the leeway verifiers allow.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub retire_after: u64,
}

impl Retention {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            retire_after: crate::settings::MAX_TTL_CEILING.min(settings.max_ttl) + settings.leeway,
        }
    }
}

/// The loaded key set: the active signing key and every verifying key.
#[derive(Debug)]
pub struct KeySet {
    active: Arc<SigningKey>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: JwkSet,
    info: Vec<KeyInfo>,
}

impl KeyLookup for KeySet {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }
}

impl KeySet {
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn info(&self) -> &[KeyInfo] {
        &self.info
    }

    /// Opens `DATA_DIR/keys`, creating a key of `AUTH_JIT_SIGNING_ALG` when
    /// none of that algorithm exists yet. The newest key of that algorithm
    /// whose not-before has passed signs; next, active and retired keys
    /// verify and are published.
    pub fn load_or_create(settings: &Settings, now: u64) -> Result<Self, KeysError> {
        let dir = settings.data_dir.join("keys");
        create_private_dir(&dir)?;
        let kek = settings.key_encryption_key.as_ref();
        let mut loaded = read_dir(&dir, kek)?;
        if !loaded.iter().any(|k| k.0.alg == settings.signing_alg) {
            let (key, der) =
                SigningKey::generate(settings.signing_alg).map_err(|_| KeysError::Generate)?;
            let mut info = write_key(&dir, settings.signing_alg, &der, now, kek)?;
            info.kid = key.kid().to_owned();
            tracing::info!(
                target: crate::services::telemetry::AUDIT,
                event = "key_created",
                outcome = "success",
                kid = key.kid(),
                alg = %settings.signing_alg,
                "created a signing key"
            );
            loaded.push((info, key));
        }
        Self::from_loaded(
            loaded,
            settings.signing_alg,
            now,
            Retention::from_settings(settings),
        )
    }

    /// Re-reads the directory (a running server does this every second),
    /// creating nothing.
    pub fn load(settings: &Settings, now: u64) -> Result<Self, KeysError> {
        let dir = settings.data_dir.join("keys");
        let loaded = read_dir(&dir, settings.key_encryption_key.as_ref())?;
        Self::from_loaded(
            loaded,
            settings.signing_alg,
            now,
            Retention::from_settings(settings),
        )
    }

    /// Writes the next key of `AUTH_JIT_SIGNING_ALG`, signing from
    /// `not_before` on (`auth-jit keys rotate`).
    /// The not-before is moved past every existing key's, so the new key
    /// is the newest on every instance, whatever their clocks.
    pub fn rotate(settings: &Settings, not_before: u64) -> Result<KeyInfo, KeysError> {
        let dir = settings.data_dir.join("keys");
        create_private_dir(&dir)?;
        let newest = read_dir(&dir, settings.key_encryption_key.as_ref())?
            .iter()
            .map(|(info, _)| info.created)
            .max();
        let not_before = newest.map_or(not_before, |n| not_before.max(n + 1));
        let (key, der) =
            SigningKey::generate(settings.signing_alg).map_err(|_| KeysError::Generate)?;
        let mut info = write_key(
            &dir,
            settings.signing_alg,
            &der,
            not_before,
            settings.key_encryption_key.as_ref(),
        )?;
        info.kid = key.kid().to_owned();
        Ok(info)
    }

    /// Whether `other` differs in what it signs with or publishes.
    pub fn differs_from(&self, other: &KeySet) -> bool {
        self.active.kid() != other.active.kid()
            || self.verifying.len() != other.verifying.len()
            || self
                .verifying
                .keys()
                .any(|k| !other.verifying.contains_key(k))
    }

    /// Lists the keys without creating any (for `auth-jit keys list`).
    pub fn list(settings: &Settings) -> Result<Vec<KeyInfo>, KeysError> {
        let dir = settings.data_dir.join("keys");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let loaded = read_dir(&dir, settings.key_encryption_key.as_ref())?;
        let now = crate::token::clock::Clock::now(&crate::token::clock::SystemClock);
        Ok(Self::from_loaded(
            loaded,
            settings.signing_alg,
            now,
            Retention::from_settings(settings),
        )
        .map(|set| set.info)
        .unwrap_or_default())
    }

    fn from_loaded(
        mut loaded: Vec<(KeyInfo, SigningKey)>,
        alg: SigningAlg,
        now: u64,
        retention: Retention,
    ) -> Result<Self, KeysError> {
        loaded.sort_by(|a, b| (a.0.created, &a.0.file).cmp(&(b.0.created, &b.0.file)));
        // The newest key of the algorithm whose time has come; if every key
        // of it lies in the future (clock trouble), the earliest of them.
        let active_index = loaded
            .iter()
            .rposition(|(info, _)| info.alg == alg && info.created <= now)
            .or_else(|| loaded.iter().position(|(info, _)| info.alg == alg))
            .ok_or(KeysError::Generate)?;
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut info = Vec::new();
        let mut active = None;
        let starts: Vec<u64> = loaded.iter().map(|(i, _)| i.created).collect();
        for (index, (mut key_info, key)) in loaded.into_iter().enumerate() {
            key_info.state = if index == active_index {
                KeyState::Active
            } else if key_info.created > now {
                KeyState::Next
            } else {
                // Replaced when the next key in line began to sign.
                let replaced_at = starts[index + 1..]
                    .iter()
                    .copied()
                    .find(|t| *t <= now)
                    .unwrap_or(now);
                if now >= replaced_at.saturating_add(retention.retire_after) {
                    KeyState::Expired
                } else {
                    KeyState::Retired
                }
            };
            if key_info.state != KeyState::Expired
                && verifying
                    .insert(key.kid().to_owned(), key.verifying_key().clone())
                    .is_none()
            {
                jwks.keys.push(key.verifying_key().jwk().clone());
            }
            info.push(key_info);
            if index == active_index {
                active = Some(Arc::new(key));
            }
        }
        Ok(Self {
            active: active.ok_or(KeysError::Generate)?,
            verifying,
            jwks,
            info,
        })
    }
}

/// Creates the directory (and parents) private to the owner (0700). An
/// existing directory is left as the operator made it (it may be a
/// read-only mount), with a warning if others can read it.
pub fn create_private_dir(dir: &Path) -> Result<(), KeysError> {
    if dir.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir).map_err(io(dir))?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "directory is accessible to other users");
            }
        }
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

fn read_dir(
    dir: &Path,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Vec<(KeyInfo, SigningKey)>, KeysError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let (stem, encrypted) = if let Some(stem) = name.strip_suffix(".p8.enc") {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(".p8") {
            (stem, false)
        } else {
            continue;
        };
        // `<not-before>-<alg>` or `<not-before>-<alg>-<tag>`.
        let mut parts = stem.splitn(3, '-');
        let Some((created, alg)) = parts
            .next()
            .zip(parts.next())
            .and_then(|(ts, alg)| Some((ts.parse::<u64>().ok()?, SigningAlg::parse(alg)?)))
        else {
            return Err(KeysError::Invalid(path));
        };
        let bytes = fs::read(&path).map_err(io(&path))?;
        let der = match (encrypted, kek) {
            (true, Some(kek)) => {
                open(kek, name, bytes).ok_or_else(|| KeysError::WrongKek(path.clone()))?
            }
            (true, None) => return Err(KeysError::NeedsKek(path)),
            (false, Some(_)) => return Err(KeysError::Plaintext(path)),
            (false, None) => bytes,
        };
        let key =
            SigningKey::from_pkcs8(alg, &der).map_err(|_| KeysError::Invalid(path.clone()))?;
        keys.push((
            KeyInfo {
                kid: key.kid().to_owned(),
                alg,
                created,
                state: KeyState::Next,
                encrypted,
                file: path,
            },
            key,
        ));
    }
    Ok(keys)
}

fn write_key(
    dir: &Path,
    alg: SigningAlg,
    der: &[u8],
    now: u64,
    kek: Option<&KeyEncryptionKey>,
) -> Result<KeyInfo, KeysError> {
    // The kid prefix keeps names unique when two keys share a second.
    let tag = SigningKey::from_pkcs8(alg, der)
        .map(|k| k.kid().chars().take(8).collect::<String>())
        .map_err(|_| KeysError::Generate)?;
    let name = match kek {
        Some(_) => format!("{now}-{alg}-{tag}.p8.enc"),
        None => format!("{now}-{alg}-{tag}.p8"),
    };
    let path = dir.join(&name);
    let contents = match kek {
        Some(kek) => seal(kek, &name, der).ok_or(KeysError::Generate)?,
        None => der.to_vec(),
    };
    write_private_file(&path, &contents).map_err(io(&path))?;
    Ok(KeyInfo {
        kid: String::new(),
        alg,
        created: now,
        state: KeyState::Next,
        encrypted: kek.is_some(),
        file: path,
    })
}

/// Writes a new file readable by the owner only; never overwrites.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn seal(kek: &KeyEncryptionKey, name: &str, der: &[u8]) -> Option<Vec<u8>> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, &kek.0).ok()?;
    let mut in_out = der.to_vec();
    let nonce = key
        .seal_in_place_append_tag(Aad::from(name.as_bytes()), &mut in_out)
        .ok()?;
    let mut out = nonce.as_ref().to_vec();
    out.extend_from_slice(&in_out);
    Some(out)
}

fn open(kek: &KeyEncryptionKey, name: &str, bytes: Vec<u8>) -> Option<Vec<u8>> {
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let key = RandomizedNonceKey::new(&AES_256_GCM, &kek.0).ok()?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = sealed.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(name.as_bytes()), &mut in_out)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, extra: &[(&str, String)]) -> Settings {
        let mut env = vec![("AUTH_JIT_DATA_DIR".to_string(), dir.display().to_string())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Settings::from_sources(None, env).expect("settings")
    }

    #[test]
    fn a_key_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(dir.path(), &[]);
        let first = KeySet::load_or_create(&s, 100).expect("create");
        let second = KeySet::load_or_create(&s, 200).expect("reload");
        assert_eq!(first.active().kid(), second.active().kid());
        assert_eq!(second.info().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&second.info()[0].file)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(first.jwks().keys.len(), 1);
    }

    #[test]
    fn changing_the_algorithm_adds_a_key_and_keeps_the_old_one_verifying() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ed = KeySet::load_or_create(&settings(dir.path(), &[]), 100).expect("ed");
        let es_settings = settings(dir.path(), &[("AUTH_JIT_SIGNING_ALG", "ES256".into())]);
        let both = KeySet::load_or_create(&es_settings, 200).expect("es");
        assert_eq!(both.active().alg(), SigningAlg::ES256);
        assert!(both.find(ed.active().kid()).is_some());
        assert_eq!(both.jwks().keys.len(), 2);
    }

    #[test]
    fn rotation_publishes_first_switches_on_time_and_retires_after_max_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = settings(
            dir.path(),
            &[
                ("AUTH_JIT_MAX_TTL", "600".into()),
                ("AUTH_JIT_LEEWAY", "5".into()),
            ],
        );
        let first = KeySet::load_or_create(&s, 100).expect("create");
        let old = first.active().kid().to_owned();
        let next = KeySet::rotate(&s, 1_000).expect("rotate");
        // Before its time: published, not signing.
        let before = KeySet::load(&s, 500).expect("load");
        assert_eq!(before.active().kid(), old);
        assert!(before.find(&next.kid).is_some(), "next key published early");
        assert_eq!(before.jwks().keys.len(), 2);
        let state =
            |set: &KeySet, kid: &str| set.info().iter().find(|k| k.kid == kid).map(|k| k.state);
        assert_eq!(state(&before, &next.kid), Some(KeyState::Next));
        // From its time: it signs; the old one still verifies.
        let after = KeySet::load(&s, 1_000).expect("load");
        assert_eq!(after.active().kid(), next.kid);
        assert_eq!(state(&after, &old), Some(KeyState::Retired));
        assert!(after.find(&old).is_some());
        assert!(after.differs_from(&before));
        // Once every token of the old key has expired, it is dropped.
        let still = KeySet::load(&s, 1_000 + 604).expect("load");
        assert!(still.find(&old).is_some());
        let later = KeySet::load(&s, 1_000 + 605).expect("load");
        assert!(later.find(&old).is_none(), "expired key still trusted");
        assert_eq!(state(&later, &old), Some(KeyState::Expired));
        assert_eq!(later.jwks().keys.len(), 1);
    }

    #[test]
    fn encrypted_keys_need_the_right_kek() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let other = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let with = settings(dir.path(), &[("AUTH_JIT_KEY_ENCRYPTION_KEY", kek)]);
        let created = KeySet::load_or_create(&with, 100).expect("create");
        assert!(created.info()[0].encrypted);
        let again = KeySet::load_or_create(&with, 200).expect("reload");
        assert_eq!(again.active().kid(), created.active().kid());
        let wrong = settings(dir.path(), &[("AUTH_JIT_KEY_ENCRYPTION_KEY", other)]);
        assert!(matches!(
            KeySet::load_or_create(&wrong, 300),
            Err(KeysError::WrongKek(_))
        ));
        let without = settings(dir.path(), &[]);
        assert!(matches!(
            KeySet::load_or_create(&without, 300),
            Err(KeysError::NeedsKek(_))
        ));
        // A plaintext key planted next to encrypted ones is refused.
        let (_, der) = SigningKey::generate(SigningAlg::EdDSA).expect("key");
        write_private_file(&dir.path().join("keys/9999999999-EdDSA.p8"), &der).expect("plant");
        assert!(matches!(
            KeySet::load_or_create(&with, 400),
            Err(KeysError::Plaintext(_))
        ));
    }
}
