//! The state store: revoked tokens, consumed single-use tokens, per-client
//! revocation cut-offs and one-time values. Two backends behind one trait:
//! an embedded redb file (the default) and Redis for a fleet.
//!
//! Every entry carries the expiry of what it describes, so the store never
//! grows without bound. Every call is bounded in time by [`StoreHandle`]:
//! a store that does not answer is an error, and callers fail closed.

mod embedded;
mod link;
mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use self::embedded::EmbeddedStore;
pub use self::redis::RedisStore;
use crate::settings::Settings;

/// What the store knows about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Neither revoked nor (if single-use) already used.
    Active,
    Revoked,
    AlreadyUsed,
}

/// Who revoked a token. A revocation by `jti` alone cannot prove who owns
/// the token, so it is recorded under the revoker's name and only counts
/// for tokens that revoker obtained or receives. A revocation that presented
/// the token itself (ownership proven) counts for everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party<'a> {
    Proven,
    Client(&'a str),
    Audience(&'a str),
}

/// The store key of a revocation. Token ids are base64url, so the separator
/// cannot be forged into a jti.
pub fn revocation_id(jti: &str, party: Party<'_>) -> String {
    let named = match party {
        Party::Proven => "",
        Party::Client(name) | Party::Audience(name) => name,
    };
    let mut id = String::with_capacity(jti.len() + 3 + named.len());
    write_revocation_id(&mut id, jti, party);
    id
}

/// [`revocation_id`] into `out`, which is cleared first: a check of all
/// three parties reuses one buffer.
pub fn write_revocation_id(out: &mut String, jti: &str, party: Party<'_>) {
    out.clear();
    out.push_str(jti);
    match party {
        Party::Proven => {}
        Party::Client(c) => {
            out.push_str("|c:");
            out.push_str(c);
        }
        Party::Audience(a) => {
            out.push_str("|a:");
            out.push_str(a);
        }
    }
}

impl TokenRef<'_> {
    /// The three parties whose revocation ends this token.
    pub fn parties(&self) -> [Party<'_>; 3] {
        [
            Party::Proven,
            Party::Client(self.client_id),
            Party::Audience(self.aud),
        ]
    }
}

/// The parts of a token the store needs.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef<'a> {
    pub jti: &'a str,
    pub client_id: &'a str,
    pub aud: &'a str,
    pub iat: u64,
    /// Entries about this token may be dropped after this instant (unix s).
    pub keep_until: u64,
    pub single_use: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store did not answer in time")]
    Timeout,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// A backend. Implementations make `check` with `consume` atomic: two
/// concurrent calls for one single-use token never both see `Active`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks revocation (by jti and by client cut-off) and, when `consume`
    /// is set on a single-use token, marks it used in the same atomic step.
    async fn check(&self, token: TokenRef<'_>, consume: bool) -> Result<TokenState, StoreError>;
    /// Records a revocation (see [`revocation_id`]) until `keep_until`.
    async fn revoke(&self, revocation_id: &str, keep_until: u64) -> Result<(), StoreError>;
    /// Revokes every token of `client_id` issued at or before `at`; the
    /// cut-off is kept until `keep_until`, when all such tokens have expired.
    async fn revoke_client(
        &self,
        client_id: &str,
        at: u64,
        keep_until: u64,
    ) -> Result<(), StoreError>;
    /// Records a one-time value; `false` if it was already recorded.
    async fn remember_once(&self, key: &str, keep_until: u64) -> Result<bool, StoreError>;
    /// Counts one request of `client` in the current one-second window and
    /// returns the window's count; `None` when the backend is not shared
    /// (embedded: the instance's own limiter is as good).
    async fn rate_count(&self, client: &str, window: u64) -> Result<Option<u64>, StoreError>;
    /// Reads (or, with `add`, increments and reads) the failed-authentication
    /// count of `key` in one-minute `window`; `None` when the backend is
    /// not shared (each instance counts on its own then).
    async fn failure_count(
        &self,
        _key: &str,
        _window: u64,
        _add: bool,
    ) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Drops expired entries (the embedded store; Redis expires by itself).
    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError>;
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The version of the shared key ring ("0" before its first key).
    async fn ring_version(&self) -> Result<String, StoreError> {
        Err(no_ring())
    }
    /// The key ring: its version and every key record (id, JSON).
    async fn ring_load(&self) -> Result<(String, Vec<(String, String)>), StoreError> {
        Err(no_ring())
    }
    /// Writes `put` and deletes `delete` (record ids) in one atomic step if
    /// the ring is still at version `expected`, which becomes `next`;
    /// `false` if another writer changed it first.
    async fn ring_commit(
        &self,
        _expected: &str,
        _next: &str,
        _put: &[(String, String)],
        _delete: &[String],
    ) -> Result<bool, StoreError> {
        Err(no_ring())
    }
    /// A short name for logs and readiness: "embedded" or "redis".
    fn kind(&self) -> &'static str;
    /// How it is deployed: for Redis `single`, `cluster` or `sentinel`;
    /// otherwise the kind.
    fn mode(&self) -> &'static str {
        self.kind()
    }
    /// Whether every instance sees this store's state.
    fn is_shared(&self) -> bool;
}

fn no_ring() -> StoreError {
    StoreError::Unavailable("this store keeps no key ring (keys live in DATA_DIR/keys)".into())
}

/// The store as the application uses it: a backend plus a time bound.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<dyn Store>,
    timeout: Duration,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("kind", &self.inner.kind())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl StoreHandle {
    pub fn new(inner: Arc<dyn Store>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// Opens the backend `AUTH_JIT_STORE_URL` names.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let inner: Arc<dyn Store> = if settings.uses_redis() {
            Arc::new(RedisStore::connect(
                settings.store_mode,
                settings.store_url.expose(),
                &settings.store_sentinel_master,
                &settings.store_prefix,
                Duration::from_millis(settings.store_timeout_ms),
                settings.store_min_replicas(),
            )?)
        } else {
            Arc::new(
                EmbeddedStore::open(&settings.data_dir.join("state.redb"))?
                    .with_write_budget(Duration::from_millis(settings.store_timeout_ms * 4 / 5)),
            )
        };
        Ok(Self::new(
            inner,
            Duration::from_millis(settings.store_timeout_ms),
        ))
    }

    pub fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// `single`, `cluster` or `sentinel` for Redis; else the kind.
    pub fn mode(&self) -> &'static str {
        self.inner.mode()
    }

    /// Whether other instances see the same state (Redis).
    pub fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    /// Runs one store call with the time bound, a `store.<op>` span and
    /// the latency / error metrics.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "store",
            otel.name = %format!("store.{op}"),
            store.op = op,
            store.backend = self.kind(),
            error = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut.instrument(span.clone())).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout),
        };
        let elapsed = started.elapsed();
        let labels = [("op", op), ("backend", self.kind())];
        crate::services::metrics::set(
            crate::services::metrics::STORE_UP,
            &[("backend", self.kind()), ("mode", self.mode())],
            if result.is_ok() { 1.0 } else { 0.0 },
        );
        crate::services::metrics::record(
            crate::services::metrics::STORE_DURATION,
            &labels,
            elapsed.as_secs_f64(),
        );
        if let Err(e) = &result {
            span.record("error", tracing::field::display(e));
            crate::services::metrics::count(crate::services::metrics::STORE_ERRORS, &labels, 1);
            tracing::warn!(op, store = self.kind(), ?elapsed, error = %e, "store call failed");
        }
        result
    }

    pub async fn check(
        &self,
        token: TokenRef<'_>,
        consume: bool,
    ) -> Result<TokenState, StoreError> {
        self.bounded("check", self.inner.check(token, consume))
            .await
    }

    pub async fn revoke(
        &self,
        jti: &str,
        party: Party<'_>,
        keep_until: u64,
    ) -> Result<(), StoreError> {
        let id = revocation_id(jti, party);
        self.bounded("revoke", self.inner.revoke(&id, keep_until))
            .await
    }

    pub async fn revoke_client(
        &self,
        client_id: &str,
        at: u64,
        keep_until: u64,
    ) -> Result<(), StoreError> {
        self.bounded(
            "revoke_client",
            self.inner.revoke_client(client_id, at, keep_until),
        )
        .await
    }

    pub async fn remember_once(&self, key: &str, keep_until: u64) -> Result<bool, StoreError> {
        self.bounded("remember_once", self.inner.remember_once(key, keep_until))
            .await
    }

    pub async fn rate_count(&self, client: &str, window: u64) -> Result<Option<u64>, StoreError> {
        self.bounded("rate_count", self.inner.rate_count(client, window))
            .await
    }

    pub async fn failure_count(
        &self,
        key: &str,
        window: u64,
        add: bool,
    ) -> Result<Option<u64>, StoreError> {
        if !self.is_shared() {
            return Ok(None);
        }
        self.bounded("failure_count", self.inner.failure_count(key, window, add))
            .await
    }

    pub async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        // Purging may scan; give it more room than a request-path call.
        match tokio::time::timeout(self.timeout * 50, self.inner.purge_expired(now)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", self.inner.ping()).await
    }

    pub async fn ring_version(&self) -> Result<String, StoreError> {
        self.bounded("ring_version", self.inner.ring_version())
            .await
    }

    pub async fn ring_load(&self) -> Result<(String, Vec<(String, String)>), StoreError> {
        self.bounded("ring_load", self.inner.ring_load()).await
    }

    pub async fn ring_commit(
        &self,
        expected: &str,
        next: &str,
        put: &[(String, String)],
        delete: &[String],
    ) -> Result<bool, StoreError> {
        self.bounded(
            "ring_commit",
            self.inner.ring_commit(expected, next, put, delete),
        )
        .await
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every backend must have, run against each of them.
    use super::*;

    fn token(jti: &str, single_use: bool) -> TokenRef<'_> {
        TokenRef {
            jti,
            client_id: "billing",
            aud: "ledger",
            iat: 1_000,
            keep_until: 4_000_000_000,
            single_use,
        }
    }

    pub async fn run(store: &dyn Store) {
        // Plain tokens: active until revoked, checks do not consume.
        assert_eq!(
            store.check(token("a", false), true).await.ok(),
            Some(TokenState::Active)
        );
        assert_eq!(
            store.check(token("a", false), true).await.ok(),
            Some(TokenState::Active)
        );
        store.revoke("a", 4_000_000_000).await.expect("revoke");
        assert_eq!(
            store.check(token("a", false), false).await.ok(),
            Some(TokenState::Revoked)
        );
        // Revocations by a party count only for tokens of that party.
        store
            .revoke(&revocation_id("e", Party::Client("evil")), 4_000_000_000)
            .await
            .expect("revoke");
        assert_eq!(
            store.check(token("e", false), false).await.ok(),
            Some(TokenState::Active)
        );
        store
            .revoke(
                &revocation_id("e", Party::Audience("ledger")),
                4_000_000_000,
            )
            .await
            .expect("revoke");
        assert_eq!(
            store.check(token("e", false), false).await.ok(),
            Some(TokenState::Revoked)
        );
        store
            .revoke(&revocation_id("f", Party::Client("billing")), 4_000_000_000)
            .await
            .expect("revoke");
        assert_eq!(
            store.check(token("f", false), false).await.ok(),
            Some(TokenState::Revoked)
        );

        // Single-use: the first consuming check wins, later ones see it used.
        assert_eq!(
            store.check(token("b", true), false).await.ok(),
            Some(TokenState::Active)
        );
        assert_eq!(
            store.check(token("b", true), true).await.ok(),
            Some(TokenState::Active)
        );
        assert_eq!(
            store.check(token("b", true), true).await.ok(),
            Some(TokenState::AlreadyUsed)
        );
        assert_eq!(
            store.check(token("b", true), false).await.ok(),
            Some(TokenState::AlreadyUsed)
        );

        // Client cut-off: tokens issued at or before it are revoked.
        store
            .revoke_client("billing", 1_000, 4_000_000_000)
            .await
            .expect("cut-off");
        assert_eq!(
            store.check(token("c", false), false).await.ok(),
            Some(TokenState::Revoked)
        );
        let later = TokenRef {
            iat: 1_001,
            ..token("d", false)
        };
        assert_eq!(
            store.check(later, false).await.ok(),
            Some(TokenState::Active)
        );

        // One-time values.
        assert_eq!(
            store.remember_once("assertion-1", 4_000_000_000).await.ok(),
            Some(true)
        );
        assert_eq!(
            store.remember_once("assertion-1", 4_000_000_000).await.ok(),
            Some(false)
        );
        store.ping().await.expect("ping");
    }
}
