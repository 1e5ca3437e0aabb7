//! One typed [`Settings`], layered: built-in defaults, then an optional
//! config file (`--config` or `AUTH_JIT_CONFIG`), then `.env`, then
//! `AUTH_JIT_*` environment variables; later wins.
//!
//! The struct is the one list of settings: serde reads it (a missing value
//! takes its [`Default`]), `auth-jit settings` prints it (secrets redacted),
//! and [`Settings::finish`] checks the rules between values. Adding a
//! setting is one field and its default. A wrong value stops start-up with
//! one line that names the variable and says what it expects; secret values
//! are never echoed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use config::{Config, ConfigError, Environment as EnvSource, File, FileFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::token::jws::SigningAlg;

/// The highest `AUTH_JIT_MAX_TTL` accepted, in seconds: entries that must
/// outlive any token (revocations by jti, client cut-offs) are kept this long.
pub const MAX_TTL_CEILING: u64 = 86_400;

/// Every variable name starts with this.
pub const PREFIX: &str = "AUTH_JIT";

/// Where the service runs; changes defaults that differ between a laptop and
/// production (log format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[serde(alias = "development")]
    Dev,
    Test,
    Staging,
    #[serde(alias = "production")]
    Prod,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Test => "test",
            Self::Staging => "staging",
            Self::Prod => "prod",
        }
    }
}

/// How the Redis store is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// One primary; `AUTH_JIT_STORE_URL` is its URL.
    Single,
    /// Redis Cluster; `AUTH_JIT_STORE_URL` lists seed nodes.
    Cluster,
    /// A primary found through Sentinel; `AUTH_JIT_STORE_URL` lists the
    /// sentinels, `AUTH_JIT_STORE_SENTINEL_MASTER` names the primary.
    Sentinel,
}

impl StoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

/// How spans reach the OTLP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, path /v1/traces).
    Http,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// A value that must never be printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_empty() { "" } else { "[redacted]" })
    }
}

/// The key-encryption key: exactly 32 bytes, given in standard base64.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEncryptionKey(pub [u8; 32]);

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

const KEK_EXPECTED: &str = "expected 32 bytes in standard base64 (openssl rand -base64 32)";

impl KeyEncryptionKey {
    fn parse(value: &str) -> Option<Self> {
        STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .map(Self)
    }
}

impl<'de> Deserialize<'de> for KeyEncryptionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The message never carries the value.
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(KEK_EXPECTED))
    }
}

impl Serialize for KeyEncryptionKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

/// The settings of the service and of every command, in the order of the
/// README's table. Each field is `AUTH_JIT_<FIELD>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// IP address to listen on.
    pub host: IpAddr,
    pub port: u16,
    pub environment: Environment,
    pub log_level: String,
    /// Empty: text in dev/test, json in staging/prod (see [`Settings::log_format`]).
    #[serde(serialize_with = "empty_if_none")]
    pub log_format: Option<LogFormat>,
    /// The `iss` of every token; empty: `http://HOST:PORT`.
    pub issuer: String,
    pub data_dir: PathBuf,
    /// Empty: `DATA_DIR/clients.toml`.
    pub clients_file: PathBuf,
    pub store_url: Secret,
    pub store_mode: StoreMode,
    /// The primary's name at the sentinels (sentinel mode).
    pub store_sentinel_master: String,
    /// Replicas a consume or revocation must reach before it is
    /// acknowledged; empty: 0 in single mode, 1 in cluster and sentinel
    /// mode (see [`Settings::store_min_replicas`]).
    #[serde(serialize_with = "empty_if_none")]
    pub store_min_replicas: Option<u32>,
    pub store_prefix: String,
    pub store_timeout_ms: u64,
    pub default_ttl: u64,
    pub max_ttl: u64,
    pub leeway: u64,
    pub signing_alg: SigningAlg,
    /// A rotated key is published this long before it signs.
    pub key_publish_secs: u64,
    /// The fleet rotates its signing keys once per this period (0: never).
    pub key_rotation_secs: u64,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age_secs: u64,
    /// Modulus size of new RSA (RS256/PS256) keys.
    pub rsa_bits: usize,
    #[serde(serialize_with = "redacted_url")]
    pub otlp_endpoint: String,
    pub otlp_protocol: OtlpProtocol,
    /// Audit events are also appended here as JSON lines.
    #[serde(serialize_with = "empty_if_none")]
    pub audit_log_file: Option<PathBuf>,
    /// 32 bytes that encrypt private keys at rest (or from `_FILE`).
    #[serde(serialize_with = "empty_if_none")]
    pub key_encryption_key: Option<KeyEncryptionKey>,
    /// A file holding the key-encryption key.
    #[serde(serialize_with = "empty_if_none")]
    pub key_encryption_key_file: Option<PathBuf>,
    pub rate_limit: u32,
    pub max_delegation_depth: usize,
    /// The `aud` of every Transaction Token; empty: Txn-Tokens off.
    pub trust_domain: String,
    /// TOML list of the external issuers whose JWTs may be exchanged for
    /// Txn-Tokens (`[[issuer]]`: issuer, jwks_uri or jwks_file, audience).
    #[serde(serialize_with = "empty_if_none")]
    pub trusted_issuers_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub request_timeout_secs: u64,
    pub shutdown_timeout_secs: u64,
    /// Connections served at once; more wait unaccepted.
    pub max_connections: usize,
    /// A connection must send its request head within this (idle
    /// keep-alive connections are closed after it too).
    pub header_timeout_secs: u64,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Requests handled at once; more are answered 503 at once.
    pub max_concurrent_requests: usize,
    /// On SIGTERM, keep serving (not ready, `Connection: close`) this long.
    pub drain_secs: u64,
    /// Failed client authentications per minute for one client id before
    /// 429 (0: no limit).
    pub auth_failure_limit: u32,
    /// Failed client authentications per minute from one source address
    /// before 429 (0: no limit). Higher than the per-id limit: many clients
    /// may share an address (a NAT, a sidecar).
    pub auth_failure_limit_per_address: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            environment: Environment::Dev,
            log_level: "info".into(),
            log_format: None,
            issuer: String::new(),
            data_dir: PathBuf::from("./data"),
            clients_file: PathBuf::new(),
            store_url: Secret::default(),
            store_mode: StoreMode::Single,
            store_sentinel_master: String::new(),
            store_min_replicas: None,
            store_prefix: "auth-jit:".into(),
            store_timeout_ms: 100,
            default_ttl: 60,
            max_ttl: 3600,
            leeway: 5,
            signing_alg: SigningAlg::EdDSA,
            key_publish_secs: 330,
            key_rotation_secs: 0,
            jwks_max_age_secs: 300,
            rsa_bits: 2048,
            otlp_endpoint: String::new(),
            otlp_protocol: OtlpProtocol::Grpc,
            audit_log_file: None,
            key_encryption_key: None,
            key_encryption_key_file: None,
            rate_limit: 100,
            max_delegation_depth: 3,
            trust_domain: String::new(),
            trusted_issuers_file: None,
            max_body_bytes: 16 * 1024,
            request_timeout_secs: 10,
            shutdown_timeout_secs: 10,
            max_connections: 1024,
            header_timeout_secs: 5,
            max_header_bytes: 16 * 1024,
            max_concurrent_requests: 256,
            drain_secs: 5,
            auth_failure_limit: 10,
            auth_failure_limit_per_address: 100,
        }
    }
}

fn empty_if_none<T: Serialize, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => v.serialize(s),
        None => s.serialize_str(""),
    }
}

fn redacted_url<S: Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_userinfo(value))
}

/// A JSON object's members in document order.
struct Ordered(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// A setting that is wrong, named as the operator writes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

fn bad(key: &str, what: impl fmt::Display) -> SettingsError {
    SettingsError(format!("{PREFIX}_{}: {what}", key.to_ascii_uppercase()))
}

/// Settings whose values must not appear in error messages.
const SECRET_KEYS: [&str; 2] = ["key_encryption_key", "store_url"];

impl Settings {
    /// Loads `.env` (if present) into the environment, then layers every
    /// source. `config_file` wins over `AUTH_JIT_CONFIG`.
    pub fn load(config_file: Option<&Path>) -> Result<Self, SettingsError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(SettingsError(format!(".env: {e}"))),
        }
        let env_file = std::env::var_os(format!("{PREFIX}_CONFIG")).map(PathBuf::from);
        let file = config_file.map(Path::to_path_buf).or(env_file);
        Self::from_sources(file.as_deref(), std::env::vars())
    }

    /// Layers defaults, `file` and the given environment. Used by [`load`]
    /// and by tests, which pass their own environment.
    ///
    /// [`load`]: Settings::load
    pub fn from_sources(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError(format!(
                    "{PREFIX}_CONFIG: no config file at {}",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        // Only our prefix, and empty values count as unset.
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, v)| k.starts_with(&format!("{PREFIX}_")) && !v.trim().is_empty())
            .collect();
        builder = builder.add_source(
            EnvSource::with_prefix(PREFIX)
                .try_parsing(true)
                .source(Some(env)),
        );
        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(describe_error)?;
        settings.finish()
    }

    /// `host:port` to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The log format: as set, or by environment.
    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(match self.environment {
            Environment::Prod | Environment::Staging => LogFormat::Json,
            Environment::Dev | Environment::Test => LogFormat::Text,
        })
    }

    /// Records the port actually bound (when `AUTH_JIT_PORT=0` asked the OS
    /// to pick one); a derived issuer follows it.
    pub fn bound_to(&mut self, port: u16) {
        let derived = default_issuer(self.host, self.port);
        if self.issuer == derived {
            self.issuer = default_issuer(self.host, port);
        }
        self.port = port;
    }

    /// Every setting as `(AUTH_JIT_NAME, value)`, secrets redacted: what
    /// `auth-jit settings` prints, in the order of the struct.
    pub fn describe(&self) -> Vec<(String, String)> {
        // serde_json writes fields in struct order; read them back in order.
        let Ok(text) = serde_json::to_string(self) else {
            return Vec::new();
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        let Ok(Ordered(fields)) = Ordered::deserialize(&mut de) else {
            return Vec::new();
        };
        fields
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (format!("{PREFIX}_{}", k.to_ascii_uppercase()), value)
            })
            .collect()
    }

    /// Whether an external store (Redis) is configured.
    pub fn uses_redis(&self) -> bool {
        !self.store_url.is_empty()
    }

    /// Replicas a protecting write waits for: as set, else 0 on one
    /// primary and 1 on a cluster or behind Sentinel, where a failover
    /// must not undo an acknowledged consume or revocation.
    pub fn store_min_replicas(&self) -> u32 {
        self.store_min_replicas
            .unwrap_or(if self.store_mode == StoreMode::Single {
                0
            } else {
                1
            })
    }

    /// Fills what derives from other settings and checks the rules between
    /// values.
    fn finish(mut self) -> Result<Self, SettingsError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(bad(
                "log_level",
                "expected a level (error, warn, info, debug, trace) or tracing directives",
            ));
        }
        if self.max_ttl == 0 {
            return Err(bad("max_ttl", "expected a positive number of seconds"));
        }
        if self.default_ttl == 0 {
            return Err(bad("default_ttl", "expected a positive number of seconds"));
        }
        if self.default_ttl > self.max_ttl {
            return Err(bad(
                "default_ttl",
                format_args!(
                    "{} exceeds {PREFIX}_MAX_TTL ({})",
                    self.default_ttl, self.max_ttl
                ),
            ));
        }
        if self.max_ttl > MAX_TTL_CEILING {
            return Err(bad(
                "max_ttl",
                "expected at most 86400 seconds: just-in-time tokens are short-lived",
            ));
        }
        if self.leeway > 300 {
            return Err(bad("leeway", "expected at most 300 seconds"));
        }
        if self.store_timeout_ms == 0 || self.store_timeout_ms > 60_000 {
            return Err(bad("store_timeout_ms", "expected 1 to 60000 milliseconds"));
        }
        if self.store_mode != StoreMode::Single && !self.uses_redis() {
            return Err(bad(
                "store_mode",
                "cluster and sentinel modes need AUTH_JIT_STORE_URL (seed nodes or sentinels)",
            ));
        }
        if self.store_mode == StoreMode::Sentinel && self.store_sentinel_master.is_empty() {
            return Err(bad(
                "store_sentinel_master",
                "sentinel mode needs the primary's name at the sentinels",
            ));
        }
        if self.store_min_replicas.is_some_and(|n| n > 16) {
            return Err(bad("store_min_replicas", "expected 0 to 16"));
        }
        self.check_keys()?;
        if self.max_delegation_depth > 10 {
            return Err(bad(
                "max_delegation_depth",
                "expected 0 to 10 (0 turns token exchange off)",
            ));
        }
        self.trust_domain = self.trust_domain.trim().to_owned();
        if !self.trust_domain.is_empty() {
            crate::token::types::Audience::parse(&self.trust_domain)
                .map_err(|e| bad("trust_domain", format_args!("expected an audience: {e}")))?;
        }
        if self.trusted_issuers_file.is_some() && self.trust_domain.is_empty() {
            return Err(bad(
                "trusted_issuers_file",
                "trusted issuers are for Txn-Tokens: set AUTH_JIT_TRUST_DOMAIN too",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(bad("max_body_bytes", "expected at least 1024 bytes"));
        }
        if self.request_timeout_secs == 0 {
            return Err(bad("request_timeout_secs", "expected at least 1 second"));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections", "expected at least 1"));
        }
        if self.max_concurrent_requests == 0 {
            return Err(bad("max_concurrent_requests", "expected at least 1"));
        }
        if self.header_timeout_secs == 0 || self.header_timeout_secs > 300 {
            return Err(bad("header_timeout_secs", "expected 1 to 300 seconds"));
        }
        if !(8192..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(bad("max_header_bytes", "expected 8192 to 1048576 bytes"));
        }
        if self.drain_secs > 600 {
            return Err(bad("drain_secs", "expected 0 to 600 seconds"));
        }
        self.issuer = match self.issuer.trim() {
            "" => default_issuer(self.host, self.port),
            issuer => {
                let url = url::Url::parse(issuer)
                    .map_err(|_| bad("issuer", "expected an absolute http or https URL"))?;
                if !matches!(url.scheme(), "http" | "https")
                    || url.query().is_some()
                    || url.fragment().is_some()
                {
                    return Err(bad(
                        "issuer",
                        "expected an http or https URL without query or fragment",
                    ));
                }
                issuer.to_owned()
            }
        };
        self.otlp_endpoint = self.otlp_endpoint.trim().to_owned();
        if !self.otlp_endpoint.is_empty() {
            let ok = url::Url::parse(&self.otlp_endpoint)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(bad(
                    "otlp_endpoint",
                    "expected empty (no export) or an http(s) URL such as http://localhost:4317",
                ));
            }
        }
        if self.uses_redis() {
            let urls: Vec<&str> = self.store_url.expose().split(',').map(str::trim).collect();
            let scheme_ok = urls.iter().all(|url| {
                url::Url::parse(url)
                    .map(|u| matches!(u.scheme(), "redis" | "rediss"))
                    .unwrap_or(false)
            });
            if !scheme_ok {
                return Err(bad(
                    "store_url",
                    "expected empty (embedded store), a redis:// or rediss:// URL, or (cluster and sentinel mode) a comma-separated list of them",
                ));
            }
            if urls.len() > 1 && self.store_mode == StoreMode::Single {
                return Err(bad(
                    "store_url",
                    "a list of URLs needs AUTH_JIT_STORE_MODE=cluster or sentinel",
                ));
            }
        }
        if self.store_prefix.is_empty() {
            return Err(bad("store_prefix", "expected a non-empty prefix"));
        }
        if self.store_prefix.contains(['{', '}']) {
            // A brace would change the hash tag of the token keys, and every
            // script would touch several cluster slots.
            return Err(bad("store_prefix", "expected no braces ({ or })"));
        }
        self.key_encryption_key_file = self
            .key_encryption_key_file
            .take()
            .filter(|p| !p.as_os_str().is_empty());
        match (&self.key_encryption_key, &self.key_encryption_key_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "key_encryption_key",
                    format_args!("set either it or {PREFIX}_KEY_ENCRYPTION_KEY_FILE, not both"),
                ))
            }
            (None, Some(path)) => {
                let value = std::fs::read_to_string(path).map_err(|e| {
                    bad(
                        "key_encryption_key_file",
                        format_args!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                self.key_encryption_key = Some(
                    KeyEncryptionKey::parse(&value)
                        .ok_or_else(|| bad("key_encryption_key_file", KEK_EXPECTED))?,
                );
            }
            _ => {}
        }
        if self.uses_redis() && self.key_encryption_key.is_none() {
            return Err(bad(
                "key_encryption_key",
                format_args!(
                    "required with a Redis store: the signing keys live in Redis, encrypted with it. Make one with `openssl rand -base64 32` and give the same value to every instance (or {PREFIX}_KEY_ENCRYPTION_KEY_FILE: a file holding it)"
                ),
            ));
        }
        if self.clients_file.as_os_str().is_empty() {
            self.clients_file = self.data_dir.join("clients.toml");
        }
        self.audit_log_file = self
            .audit_log_file
            .take()
            .filter(|p| !p.as_os_str().is_empty());
        Ok(self)
    }

    /// The key settings that keep verifiers working through rotations.
    fn check_keys(&self) -> Result<(), SettingsError> {
        if self.key_publish_secs > MAX_TTL_CEILING {
            return Err(bad("key_publish_secs", "expected 0 to 86400 seconds"));
        }
        if self.jwks_max_age_secs > MAX_TTL_CEILING {
            return Err(bad("jwks_max_age_secs", "expected 0 to 86400 seconds"));
        }
        // A verifier may hold a JWKS for max-age: a key must be published
        // longer than that before it signs, or some verifier will not know
        // it yet.
        if self.key_publish_secs <= self.jwks_max_age_secs {
            return Err(bad(
                "key_publish_secs",
                format_args!(
                    "{} must exceed {PREFIX}_JWKS_MAX_AGE_SECS ({}): a key is published longer than verifiers cache the JWKS before it signs",
                    self.key_publish_secs, self.jwks_max_age_secs
                ),
            ));
        }
        if self.key_rotation_secs > 0
            && self.key_rotation_secs < self.key_publish_secs.saturating_add(self.max_ttl)
        {
            return Err(bad(
                "key_rotation_secs",
                format_args!(
                    "{} is shorter than {PREFIX}_KEY_PUBLISH_SECS + {PREFIX}_MAX_TTL ({} + {}): each key must be published ahead and its tokens expire before the next rotation",
                    self.key_rotation_secs, self.key_publish_secs, self.max_ttl
                ),
            ));
        }
        if ![2048, 3072, 4096].contains(&self.rsa_bits) {
            return Err(bad("rsa_bits", "expected 2048, 3072 or 4096"));
        }
        Ok(())
    }
}

/// Turns a `config` error into one line naming the variable.
fn describe_error(error: ConfigError) -> SettingsError {
    match error {
        ConfigError::Type {
            key: Some(key),
            unexpected,
            expected,
            ..
        } => {
            if SECRET_KEYS.contains(&key.as_str()) {
                bad(&key, format_args!("expected {expected}"))
            } else {
                bad(&key, format_args!("expected {expected}, got {unexpected}"))
            }
        }
        other => {
            // Other errors (unknown enum variants, bad addresses, ...) end
            // in "for key `name`": name the variable as the operator writes
            // it. A secret's own message never carries its value.
            let message = other.to_string();
            match message.rsplit_once(" for key `") {
                Some((what, key)) => bad(key.trim_end_matches('`'), what),
                None => SettingsError(format!("invalid settings: {message}")),
            }
        }
    }
}

/// A URL with any `user:password@` replaced, for printing.
fn redact_userinfo(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("redacted");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => value.to_owned(),
    }
}

fn default_issuer(host: IpAddr, port: u16) -> String {
    match host {
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_sources(
            None,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn error(vars: &[(&str, &str)]) -> String {
        match load(vars) {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = load(&[]).expect("defaults are valid");
        assert_eq!(s.listen_addr().to_string(), "127.0.0.1:8000");
        assert_eq!(s.issuer, "http://127.0.0.1:8000");
        assert_eq!(s.environment, Environment::Dev);
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.clients_file, PathBuf::from("./data/clients.toml"));
        assert!(!s.uses_redis());
        assert_eq!((s.default_ttl, s.max_ttl, s.leeway), (60, 3600, 5));
        assert_eq!(s.signing_alg, SigningAlg::EdDSA);
        assert_eq!(s.log_format(), LogFormat::Text);
        assert!(s.key_encryption_key.is_none());
    }

    #[test]
    fn describe_names_every_setting_once_in_order() {
        let s = load(&[]).expect("defaults");
        let names: Vec<String> = s.describe().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names.first().map(String::as_str), Some("AUTH_JIT_HOST"));
        assert_eq!(
            names.last().map(String::as_str),
            Some("AUTH_JIT_AUTH_FAILURE_LIMIT_PER_ADDRESS")
        );
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        // Every described name reads back: the list is the struct.
        for (name, value) in s.describe() {
            if value.is_empty() || value == "[redacted]" {
                continue;
            }
            let again = load(&[(name.as_str(), value.as_str())]);
            assert!(again.is_ok(), "{name}={value}: {:?}", again.err());
        }
        let described: std::collections::BTreeMap<_, _> = s.describe().into_iter().collect();
        assert_eq!(described["AUTH_JIT_PORT"], "8000");
        assert_eq!(described["AUTH_JIT_SIGNING_ALG"], "EdDSA");
        assert_eq!(described["AUTH_JIT_ENVIRONMENT"], "dev");
        assert_eq!(described["AUTH_JIT_LOG_FORMAT"], "");
        assert_eq!(described["AUTH_JIT_CLIENTS_FILE"], "./data/clients.toml");
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load(&[
            ("AUTH_JIT_PORT", "9001"),
            ("AUTH_JIT_HOST", "0.0.0.0"),
            ("AUTH_JIT_DEFAULT_TTL", "30"),
            ("AUTH_JIT_SIGNING_ALG", "ES256"),
            ("AUTH_JIT_ENVIRONMENT", "prod"),
            ("AUTH_JIT_ISSUER", "https://auth.example"),
            ("AUTH_JIT_STORE_URL", "redis://127.0.0.1:6379/0"),
            (
                "AUTH_JIT_KEY_ENCRYPTION_KEY",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("OTHER_PORT", "1"),
        ])
        .expect("valid");
        assert_eq!(s.port, 9001);
        assert_eq!(s.default_ttl, 30);
        assert_eq!(s.signing_alg, SigningAlg::ES256);
        assert_eq!(s.issuer, "https://auth.example");
        assert_eq!(s.log_format(), LogFormat::Json);
        assert!(s.uses_redis());
    }

    #[test]
    fn wrong_values_name_their_variable() {
        assert!(error(&[("AUTH_JIT_PORT", "abc")]).starts_with("AUTH_JIT_PORT:"));
        assert!(error(&[("AUTH_JIT_PORT", "70000")]).starts_with("AUTH_JIT_PORT:"));
        assert!(error(&[("AUTH_JIT_DEFAULT_TTL", "-5")]).starts_with("AUTH_JIT_DEFAULT_TTL:"));
        assert!(error(&[("AUTH_JIT_DEFAULT_TTL", "7200")]).contains("AUTH_JIT_MAX_TTL"));
        assert!(error(&[("AUTH_JIT_MAX_TTL", "0")]).starts_with("AUTH_JIT_MAX_TTL:"));
        assert!(error(&[("AUTH_JIT_HOST", "localhost:1")]).starts_with("AUTH_JIT_HOST:"));
        assert!(error(&[("AUTH_JIT_SIGNING_ALG", "HS256")]).starts_with("AUTH_JIT_SIGNING_ALG:"));
        assert!(error(&[("AUTH_JIT_ISSUER", "ftp://x")]).starts_with("AUTH_JIT_ISSUER:"));
        assert!(error(&[("AUTH_JIT_LOG_LEVEL", "loud[")]).starts_with("AUTH_JIT_LOG_LEVEL:"));
        assert!(error(&[("AUTH_JIT_ENVIRONMENT", "moon")]).starts_with("AUTH_JIT_ENVIRONMENT:"));
        assert!(error(&[("AUTH_JIT_LOG_FORMAT", "xml")]).starts_with("AUTH_JIT_LOG_FORMAT:"));
    }

    #[test]
    fn store_modes_need_what_they_name() {
        let kek = (
            "AUTH_JIT_KEY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        );
        let two = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
        // A list of URLs is for cluster or sentinel mode.
        let msg = error(&[("AUTH_JIT_STORE_URL", two), kek]);
        assert!(
            msg.starts_with("AUTH_JIT_STORE_URL:") && msg.contains("AUTH_JIT_STORE_MODE"),
            "{msg}"
        );
        let cluster = load(&[
            ("AUTH_JIT_STORE_URL", two),
            ("AUTH_JIT_STORE_MODE", "cluster"),
            kek,
        ])
        .expect("cluster");
        assert_eq!(
            cluster.store_min_replicas(),
            1,
            "a failover must not undo a consume"
        );
        // Every URL of the list is checked.
        let msg = error(&[
            ("AUTH_JIT_STORE_URL", "redis://127.0.0.1:7000,http://x"),
            ("AUTH_JIT_STORE_MODE", "cluster"),
            kek,
        ]);
        assert!(msg.starts_with("AUTH_JIT_STORE_URL:"), "{msg}");
        // Sentinel mode names the primary; cluster mode needs URLs.
        let msg = error(&[
            ("AUTH_JIT_STORE_URL", two),
            ("AUTH_JIT_STORE_MODE", "sentinel"),
            kek,
        ]);
        assert!(msg.starts_with("AUTH_JIT_STORE_SENTINEL_MASTER:"), "{msg}");
        let msg = error(&[("AUTH_JIT_STORE_MODE", "cluster")]);
        assert!(msg.starts_with("AUTH_JIT_STORE_MODE:"), "{msg}");
        let single =
            load(&[("AUTH_JIT_STORE_URL", "redis://127.0.0.1:6379/0"), kek]).expect("single");
        assert_eq!(single.store_min_replicas(), 0);
        let set = load(&[
            ("AUTH_JIT_STORE_URL", "redis://127.0.0.1:6379/0"),
            ("AUTH_JIT_STORE_MIN_REPLICAS", "2"),
            kek,
        ])
        .expect("explicit");
        assert_eq!(set.store_min_replicas(), 2);
        // A brace in the prefix would move the token keys' hash tag.
        let msg = error(&[("AUTH_JIT_STORE_PREFIX", "a{b}:")]);
        assert!(msg.starts_with("AUTH_JIT_STORE_PREFIX:"), "{msg}");
    }

    #[test]
    fn key_settings_that_would_break_verifiers_are_refused() {
        // Published no longer than verifiers cache the JWKS: refused.
        let msg = error(&[("AUTH_JIT_KEY_PUBLISH_SECS", "300")]);
        assert!(msg.starts_with("AUTH_JIT_KEY_PUBLISH_SECS:"), "{msg}");
        assert!(msg.contains("AUTH_JIT_JWKS_MAX_AGE_SECS"), "{msg}");
        let ok = load(&[
            ("AUTH_JIT_KEY_PUBLISH_SECS", "3"),
            ("AUTH_JIT_JWKS_MAX_AGE_SECS", "2"),
        ]);
        assert!(ok.is_ok());
        // A period shorter than publish lead + max TTL: refused.
        let msg = error(&[("AUTH_JIT_KEY_ROTATION_SECS", "3000")]);
        assert!(msg.starts_with("AUTH_JIT_KEY_ROTATION_SECS:"), "{msg}");
        assert!(msg.contains("AUTH_JIT_MAX_TTL"), "{msg}");
        assert!(load(&[("AUTH_JIT_KEY_ROTATION_SECS", "86400")]).is_ok());
        assert!(error(&[("AUTH_JIT_RSA_BITS", "1024")]).starts_with("AUTH_JIT_RSA_BITS:"));
        // Redis holds the key ring, so it needs a key-encryption key.
        let msg = error(&[("AUTH_JIT_STORE_URL", "redis://127.0.0.1:6379/0")]);
        assert!(msg.starts_with("AUTH_JIT_KEY_ENCRYPTION_KEY:"), "{msg}");
        assert!(msg.contains("openssl rand -base64 32"), "{msg}");
    }

    #[test]
    fn secrets_are_checked_but_never_echoed() {
        let msg = error(&[("AUTH_JIT_KEY_ENCRYPTION_KEY", "c2hvcnQ=")]);
        assert!(msg.starts_with("AUTH_JIT_KEY_ENCRYPTION_KEY:"));
        assert!(!msg.contains("c2hvcnQ"));
        let msg = error(&[("AUTH_JIT_STORE_URL", "http://user:hunter2@x")]);
        assert!(msg.starts_with("AUTH_JIT_STORE_URL:") && !msg.contains("hunter2"));
        let kek = STANDARD.encode([7u8; 32]);
        let s = load(&[("AUTH_JIT_KEY_ENCRYPTION_KEY", &kek)]).expect("valid kek");
        assert_eq!(s.key_encryption_key, Some(KeyEncryptionKey([7u8; 32])));
        assert!(!format!("{s:?}").contains(&kek));
    }

    #[test]
    fn a_config_file_sits_between_defaults_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth-jit.toml");
        std::fs::write(&path, "port = 7000\nleeway = 2\n").expect("write");
        let s = Settings::from_sources(
            Some(&path),
            [("AUTH_JIT_PORT".to_string(), "7001".to_string())],
        )
        .expect("valid");
        assert_eq!((s.port, s.leeway), (7001, 2));
        let missing = Settings::from_sources(Some(&dir.path().join("nope.toml")), []);
        assert!(missing.is_err());
    }
}
