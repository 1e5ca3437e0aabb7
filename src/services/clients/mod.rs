//! Registered clients, read from a TOML file that `auth-jit client ...`
//! writes and operators may edit. The running server re-reads the file when
//! it changes, so adding or removing a client needs no restart.
//!
//! Only a SHA-256 digest of each server-generated secret is stored. Secrets
//! have 256 random bits, so a fast digest is enough: there is nothing to
//! brute-force that a slow hash would protect.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

pub mod auth;

use crate::token::assertion::ClientKey;
use crate::token::clock::Random;
use crate::token::jws::SigningAlg;
use crate::token::policy::ClientPolicy;
use crate::token::types::{Audience, ClientId, Scope, ScopeToken};

/// The file's shape. Hand edits must keep to it; unknown keys are refused so
/// a typo (`audience` for `audiences`) cannot silently widen or narrow policy.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientEntry>,
    /// Audiences with settings of their own (`[[audience]]` tables).
    #[serde(default, rename = "audience", skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<AudienceEntry>,
}

/// An audience's own settings: the algorithm its tokens are signed with,
/// for receivers (API gateways) that accept only RS256, say.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceEntry {
    pub id: Audience,
    pub signing_alg: SigningAlg,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub id: ClientId,
    /// base64url SHA-256 of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// A public JWK (JSON) for `private_key_jwt`, instead of a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<String>,
    pub audiences: BTreeSet<Audience>,
    #[serde(default)]
    pub scopes: BTreeSet<ScopeToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u64>,
    #[serde(default)]
    pub exchange: bool,
    /// May request Transaction Tokens for the trust domain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub txn_token: bool,
    /// Token requests per second for this client; overrides the global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Audiences this client serves as a resource server, besides its own
    /// id: it may verify, introspect and revoke tokens addressed to them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub receives: BTreeSet<Audience>,
    /// Set by `auth-jit client revoke-tokens`: every token issued to this
    /// client at or before this instant (unix seconds) is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_revoked_before: Option<u64>,
}

/// A client as the server uses it.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: ClientId,
    pub policy: ClientPolicy,
    pub rate_limit: Option<u32>,
    /// Its own id and the `receives` audiences.
    pub receives: BTreeSet<String>,
    pub tokens_revoked_before: Option<u64>,
    /// The public key of a `private_key_jwt` client.
    pub key: Option<ClientKey>,
    digest: Option<[u8; 32]>,
}

impl Client {
    /// Whether this client is the resource server for `audience`.
    pub fn receives(&self, audience: &str) -> bool {
        self.receives.contains(audience)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("clients file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("client {0} already exists")]
    Exists(ClientId),
    #[error("no client {0}")]
    Unknown(ClientId),
    #[error("no randomness available for a secret")]
    Random,
}

impl ClientsFile {
    /// Reads the file; a missing file is an empty registry.
    pub fn read(path: &Path) -> Result<Self, ClientsError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(file_error(path, e)),
        };
        let file: Self = toml::from_str(&text).map_err(|e| ClientsError::File {
            path: path.to_path_buf(),
            message: e.message().to_owned(),
        })?;
        let mut audiences = BTreeSet::new();
        for audience in &file.audiences {
            if !audiences.insert(audience.id.clone()) {
                return Err(ClientsError::File {
                    path: path.to_path_buf(),
                    message: format!("audience {} is listed twice", audience.id),
                });
            }
        }
        let mut seen = BTreeSet::new();
        for entry in &file.clients {
            if !seen.insert(entry.id.clone()) {
                return Err(ClientsError::File {
                    path: path.to_path_buf(),
                    message: format!("client {} is listed twice", entry.id),
                });
            }
            let fail = |message: String| ClientsError::File {
                path: path.to_path_buf(),
                message,
            };
            match (&entry.secret_sha256, &entry.public_jwk) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(fail(format!(
                        "client {}: give exactly one of secret_sha256 and public_jwk",
                        entry.id
                    )))
                }
                (None, Some(jwk)) => {
                    ClientKey::from_jwk_json(jwk)
                        .map_err(|e| fail(format!("client {}: public_jwk: {e}", entry.id)))?;
                }
                (Some(_), None) => {}
            }
            if entry
                .secret_sha256
                .as_deref()
                .map(decode_digest)
                .is_some_and(|d| d.is_none())
            {
                return Err(ClientsError::File {
                    path: path.to_path_buf(),
                    message: format!(
                        "client {}: secret_sha256 is not a base64url SHA-256",
                        entry.id
                    ),
                });
            }
        }
        Ok(file)
    }

    /// Writes the file atomically (temp file + rename), mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), ClientsError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::services::keys::create_private_dir(parent).map_err(|e| ClientsError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let body = toml::to_string_pretty(self).map_err(|e| ClientsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# auth-jit clients: written by `auth-jit client ...`; hand edits are read too.\n\
             # secret_sha256 is base64url(SHA-256(secret)); the secret itself is never stored.\n\
             # public_jwk (instead of a secret) is the public key of a private_key_jwt client.\n\n{body}"
        );
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let result = (|| {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| file_error(path, e))
    }

    /// Takes an exclusive lock for a read-modify-write of the file at
    /// `path`, so that concurrent `auth-jit client ...` commands (a
    /// provisioning script) cannot lose each other's changes. Released when
    /// the returned file is dropped.
    pub fn lock(path: &Path) -> Result<fs::File, ClientsError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::services::keys::create_private_dir(parent).map_err(|e| ClientsError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let mut options = fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(PathBuf::from(name))
            .map_err(|e| file_error(path, e))?;
        file.lock().map_err(|e| file_error(path, e))?;
        Ok(file)
    }

    /// Adds a client with a new secret; returns the secret to show once.
    pub fn add(
        &mut self,
        mut entry: ClientEntry,
        random: &dyn Random,
    ) -> Result<String, ClientsError> {
        if self.clients.iter().any(|c| c.id == entry.id) {
            return Err(ClientsError::Exists(entry.id));
        }
        let mut bytes = [0u8; 32];
        random.fill(&mut bytes).map_err(|_| ClientsError::Random)?;
        // A fixed prefix lets secret scanners recognise a leaked secret,
        // and means a secret never starts with `-` (an option to many CLIs).
        let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        entry.secret_sha256 = Some(URL_SAFE_NO_PAD.encode(digest(&secret)));
        self.clients.push(entry);
        Ok(secret)
    }

    /// Adds a `private_key_jwt` client: no secret, its public key instead.
    pub fn add_with_key(
        &mut self,
        mut entry: ClientEntry,
        key: &ClientKey,
    ) -> Result<(), ClientsError> {
        if self.clients.iter().any(|c| c.id == entry.id) {
            return Err(ClientsError::Exists(entry.id));
        }
        entry.secret_sha256 = None;
        entry.public_jwk = Some(key.to_json());
        self.clients.push(entry);
        Ok(())
    }

    /// Marks every token issued to `id` up to `at` as revoked.
    pub fn revoke_tokens(&mut self, id: &ClientId, at: u64) -> Result<(), ClientsError> {
        let entry = self
            .clients
            .iter_mut()
            .find(|c| &c.id == id)
            .ok_or_else(|| ClientsError::Unknown(id.clone()))?;
        entry.tokens_revoked_before = Some(entry.tokens_revoked_before.unwrap_or(0).max(at));
        Ok(())
    }

    /// Signs tokens for `audience` with `alg` (`None`: the default again).
    pub fn set_audience_alg(&mut self, audience: &Audience, alg: Option<SigningAlg>) {
        self.audiences.retain(|a| &a.id != audience);
        if let Some(alg) = alg {
            self.audiences.push(AudienceEntry {
                id: audience.clone(),
                signing_alg: alg,
            });
            self.audiences.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }

    pub fn remove(&mut self, id: &ClientId) -> Result<(), ClientsError> {
        let before = self.clients.len();
        self.clients.retain(|c| &c.id != id);
        if self.clients.len() == before {
            return Err(ClientsError::Unknown(id.clone()));
        }
        Ok(())
    }
}

fn file_error(path: &Path, e: std::io::Error) -> ClientsError {
    ClientsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Every generated client secret starts with this.
pub const SECRET_PREFIX: &str = "ajs_";

fn digest(secret: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn decode_digest(text: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

impl From<ClientEntry> for Client {
    fn from(entry: ClientEntry) -> Self {
        let mut receives: BTreeSet<String> = entry.receives.iter().map(|a| a.to_string()).collect();
        receives.insert(entry.id.to_string());
        Client {
            receives,
            tokens_revoked_before: entry.tokens_revoked_before,
            key: entry
                .public_jwk
                .as_deref()
                .and_then(|jwk| ClientKey::from_jwk_json(jwk).ok()),
            digest: entry.secret_sha256.as_deref().and_then(decode_digest),
            policy: ClientPolicy {
                audiences: entry.audiences,
                scopes: Scope::from_tokens(entry.scopes),
                max_ttl: entry.max_ttl,
                exchange: entry.exchange,
                txn_token: entry.txn_token,
            },
            rate_limit: entry.rate_limit,
            id: entry.id,
        }
    }
}

/// Why authentication failed. Deliberately one case: callers must not learn
/// whether the id or the secret was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client authentication failed")]
pub struct AuthFailed;

#[derive(Debug)]
struct Loaded {
    clients: BTreeMap<String, Arc<Client>>,
    audience_algs: BTreeMap<String, SigningAlg>,
    modified: Option<SystemTime>,
    healthy: bool,
}

/// The live registry, shared by every request.
#[derive(Debug, Clone)]
pub struct Clients {
    path: PathBuf,
    inner: Arc<RwLock<Loaded>>,
}

impl Clients {
    /// Loads the file; a broken file stops start-up.
    pub fn open(path: &Path) -> Result<Self, ClientsError> {
        let file = ClientsFile::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            inner: Arc::new(RwLock::new(Loaded {
                audience_algs: audience_algs(&file),
                clients: index(file),
                modified: modified(path),
                healthy: true,
            })),
        })
    }

    /// Re-reads the file if it changed. A file that no longer parses empties
    /// the registry (fail closed: a half-edited file must not keep a removed
    /// client alive) and marks the registry unhealthy until it is fixed.
    pub fn reload_if_changed(&self) {
        let now = modified(&self.path);
        let unchanged = self
            .inner
            .read()
            .map(|l| l.modified == now && l.healthy)
            .unwrap_or(false);
        if unchanged {
            return;
        }
        let (algs, clients, healthy) = match ClientsFile::read(&self.path) {
            Ok(file) => {
                tracing::info!(clients = file.clients.len(), "clients file reloaded");
                (audience_algs(&file), index(file), true)
            }
            Err(e) => {
                tracing::error!(error = %e, "clients file unreadable: refusing every client until it is fixed");
                (BTreeMap::new(), BTreeMap::new(), false)
            }
        };
        if let Ok(mut loaded) = self.inner.write() {
            *loaded = Loaded {
                audience_algs: algs,
                clients,
                modified: now,
                healthy,
            };
        }
    }

    /// Whether the last read of the clients file succeeded.
    pub fn is_healthy(&self) -> bool {
        self.inner.read().map(|l| l.healthy).unwrap_or(false)
    }

    /// The algorithm `audience`'s tokens are signed with, if it has its own.
    pub fn signing_alg_for(&self, audience: &str) -> Option<SigningAlg> {
        self.inner.read().ok()?.audience_algs.get(audience).copied()
    }

    /// Every algorithm some audience asks for.
    pub fn audience_algs(&self) -> Vec<SigningAlg> {
        self.inner
            .read()
            .map(|l| l.audience_algs.values().copied().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.inner.read().ok()?.clients.get(id).cloned()
    }

    /// Checks a client id and secret in constant time. An unknown id costs
    /// the same work as a wrong secret and fails the same way.
    pub fn authenticate(&self, id: &str, secret: &str) -> Result<Arc<Client>, AuthFailed> {
        const DUMMY: [u8; 32] = [0x5a; 32];
        let presented = digest(secret);
        let client = self.get(id);
        let stored = client.as_ref().and_then(|c| c.digest);
        let matches: bool = presented.ct_eq(stored.as_ref().unwrap_or(&DUMMY)).into();
        match client {
            Some(client) if matches && stored.is_some() => Ok(client),
            _ => Err(AuthFailed),
        }
    }
}

fn audience_algs(file: &ClientsFile) -> BTreeMap<String, SigningAlg> {
    file.audiences
        .iter()
        .map(|a| (a.id.to_string(), a.signing_alg))
        .collect()
}

fn index(file: ClientsFile) -> BTreeMap<String, Arc<Client>> {
    file.clients
        .into_iter()
        .map(|e| (e.id.to_string(), Arc::new(Client::from(e))))
        .collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::clock::SystemRandom;

    fn entry(id: &str) -> ClientEntry {
        ClientEntry {
            id: ClientId::parse(id).expect("id"),
            secret_sha256: None,
            public_jwk: None,
            audiences: [Audience::parse("ledger").expect("aud")].into(),
            scopes: [ScopeToken::parse("read").expect("scope")].into(),
            max_ttl: Some(120),
            exchange: false,
            txn_token: false,
            rate_limit: None,
            receives: BTreeSet::new(),
            tokens_revoked_before: None,
        }
    }

    #[test]
    fn add_writes_only_a_digest_and_the_secret_authenticates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clients.toml");
        let mut file = ClientsFile::read(&path).expect("empty");
        let secret = file
            .add(entry("billing"), &SystemRandom::new())
            .expect("add");
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), 4 + 43, "prefix + 256 bits in base64url");
        file.write(&path).expect("write");
        let text = fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&secret));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let clients = Clients::open(&path).expect("open");
        let client = clients.authenticate("billing", &secret).expect("auth");
        assert_eq!(client.policy.max_ttl, Some(120));
        assert!(clients.authenticate("billing", "wrong").is_err());
        assert!(clients.authenticate("nobody", &secret).is_err());
        let mut file = ClientsFile::read(&path).expect("read");
        assert!(matches!(
            file.add(entry("billing"), &SystemRandom::new()),
            Err(ClientsError::Exists(_))
        ));
    }

    #[test]
    fn a_broken_file_on_reload_refuses_everyone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clients.toml");
        let mut file = ClientsFile::default();
        let secret = file.add(entry("a"), &SystemRandom::new()).expect("add");
        file.write(&path).expect("write");
        let clients = Clients::open(&path).expect("open");
        assert!(clients.authenticate("a", &secret).is_ok());
        fs::write(&path, "[[client]]\nid = 'a'\naudience = ['x']\n").expect("write");
        clients.reload_if_changed();
        assert!(!clients.is_healthy());
        assert!(clients.authenticate("a", &secret).is_err());
    }
}
