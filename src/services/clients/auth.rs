//! Client authentication, every method in one place: a secret (HTTP Basic
//! or `client_secret_post`) or a `private_key_jwt` assertion (RFC 7523),
//! behind one failure limit.
//!
//! Failed attempts are counted per client id and per source address in
//! fixed one-minute windows; past `AUTH_JIT_AUTH_FAILURE_LIMIT` for an id,
//! or `AUTH_JIT_AUTH_FAILURE_LIMIT_PER_ADDRESS` for an address, attempts for
//! that id or from that address are answered 429 without checking
//! anything, the same whether the id exists or not. With a shared
//! store (Redis) the counts are the fleet's; otherwise, or while it does
//! not answer, each instance counts on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Client, Clients};
use crate::services::store::StoreHandle;
use crate::token::assertion::{self, ClientKey};

/// The counting window of the failure limit, in seconds.
pub const WINDOW: u64 = 60;

/// Why authentication did not succeed. `reason` is for the audit log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 401 `invalid_client`; `known` whether the claimed id is registered.
    Failed { reason: String, known: bool },
    /// 429: too many failures for this id or address; retry after seconds.
    Throttled(u64),
    /// 503: the store could not check an assertion for replay.
    Unavailable,
}

/// Counts failed authentications.
pub struct FailureGuard {
    per_id: u32,
    per_address: u32,
    local: Mutex<HashMap<String, (u64, u64)>>,
    /// The latest window with a failure counted here (0: none): while it
    /// is older than the current one, no local counter can be over its
    /// limit, and a check needs neither the lock nor a digest.
    last_local_failure: AtomicU64,
    shared: Option<StoreHandle>,
}

impl FailureGuard {
    /// Failures allowed per window for one id and for one address (0: no
    /// limit); counts in `store` when it is shared.
    pub fn new(per_id: u32, per_address: u32, store: &StoreHandle) -> Self {
        Self {
            per_id,
            per_address,
            local: Mutex::new(HashMap::new()),
            last_local_failure: AtomicU64::new(0),
            shared: store.is_shared().then(|| store.clone()),
        }
    }

    /// The counters an attempt touches, with their limits.
    fn keys(&self, id: Option<&str>, peer: Option<IpAddr>) -> Vec<(String, u32)> {
        // Ids come from the caller, and an "id" may be a pasted secret: the
        // counter is named by a digest, never by the text.
        let id = id.filter(|_| self.per_id > 0).map(|id| {
            use base64::Engine as _;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
            let mut name = String::with_capacity(3 + 22);
            name.push_str("id:");
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode_string(&digest.as_ref()[..16], &mut name);
            (name, self.per_id)
        });
        let ip = peer
            .filter(|_| self.per_address > 0)
            .map(|ip| (format!("ip:{ip}"), self.per_address));
        id.into_iter().chain(ip).collect()
    }

    /// `Err(seconds)` if `id` or `peer` used up its failures in this window.
    pub async fn check(&self, id: Option<&str>, peer: Option<IpAddr>, now: u64) -> Result<(), u64> {
        let window = now / WINDOW;
        if self.shared.is_none() && self.last_local_failure.load(Ordering::Relaxed) < window {
            return Ok(());
        }
        let retry_after = (WINDOW - now % WINDOW).max(1);
        for (key, limit) in self.keys(id, peer) {
            if self.count(&key, window, false).await >= u64::from(limit) {
                metrics::counter!(crate::services::metrics::AUTH_THROTTLED).increment(1);
                return Err(retry_after);
            }
        }
        Ok(())
    }

    /// Counts one failure for `id` and for `peer`.
    pub async fn failed(&self, id: Option<&str>, peer: Option<IpAddr>, now: u64) {
        for (key, _) in self.keys(id, peer) {
            self.count(&key, now / WINDOW, true).await;
        }
    }

    async fn count(&self, key: &str, window: u64, add: bool) -> u64 {
        if let Some(store) = &self.shared {
            if let Ok(Some(n)) = store.failure_count(key, window, add).await {
                return n;
            }
            // Not answering: this instance counts on its own.
        }
        let Ok(mut local) = self.local.lock() else {
            return 0;
        };
        if !add {
            return local
                .get(key)
                .map_or(0, |(w, n)| if *w == window { *n } else { 0 });
        }
        if local.len() >= 100_000 {
            // Bound memory under a flood of fresh ids: old windows go.
            local.retain(|_, (w, _)| *w == window);
        }
        // Never backwards: a slower request from an older window must not
        // hide this one's failures from the fast path.
        self.last_local_failure.fetch_max(window, Ordering::Relaxed);
        let entry = local.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        entry.1
    }
}

/// Authenticates clients; the one path for every method.
pub struct Authenticator {
    clients: Clients,
    store: StoreHandle,
    guard: FailureGuard,
    dummy: Option<ClientKey>,
}

/// What a client assertion must be addressed to and when it is checked.
pub struct AssertionContext<'a> {
    pub audiences: &'a [String],
    pub leeway: u64,
    pub now: u64,
}

impl Authenticator {
    pub fn new(clients: Clients, store: StoreHandle, guard: FailureGuard) -> Self {
        Self {
            clients,
            store,
            guard,
            dummy: dummy_key(),
        }
    }

    /// Credentials that could not even be read (no or malformed header):
    /// counted against the address.
    pub async fn malformed(&self, peer: Option<IpAddr>, now: u64) -> AuthError {
        if let Err(retry) = self.guard.check(None, peer, now).await {
            return AuthError::Throttled(retry);
        }
        self.guard.failed(None, peer, now).await;
        AuthError::Failed {
            reason: "missing or malformed credentials".into(),
            known: false,
        }
    }

    /// A client id and secret.
    pub async fn secret(
        &self,
        id: &str,
        secret: &str,
        peer: Option<IpAddr>,
        now: u64,
    ) -> Result<Arc<Client>, AuthError> {
        self.guard
            .check(Some(id), peer, now)
            .await
            .map_err(AuthError::Throttled)?;
        match self.clients.authenticate(id, secret) {
            Ok(client) => Ok(client),
            Err(_) => Err(self.fail(id, peer, now, "wrong credentials").await),
        }
    }

    /// A `private_key_jwt` assertion of the client it names (`iss`), which
    /// must be `form_client_id` when that is given. Replay is refused
    /// through the store.
    pub async fn assertion(
        &self,
        jwt: &str,
        form_client_id: Option<&str>,
        context: &AssertionContext<'_>,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Client>, AuthError> {
        let now = context.now;
        let Some(id) = assertion::claimed_client(jwt) else {
            return Err(self.malformed(peer, now).await);
        };
        self.guard
            .check(Some(&id), peer, now)
            .await
            .map_err(AuthError::Throttled)?;
        if form_client_id.is_some_and(|c| c != id) {
            return Err(self
                .fail(&id, peer, now, "client_id does not match the assertion")
                .await);
        }
        let registered = self
            .clients
            .get(&id)
            .and_then(|c| c.key.clone().map(|k| (c, k)));
        let Some((client, key)) = registered else {
            // Same work for an unknown (or secret-only) client as for a
            // wrong signature, so timing does not tell which ids exist.
            if let Some(dummy) = &self.dummy {
                let _ = assertion::verify(jwt, dummy, &id, context.audiences, 0, now);
            }
            return Err(self
                .fail(&id, peer, now, "no such private_key_jwt client")
                .await);
        };
        let verified =
            match assertion::verify(jwt, &key, &id, context.audiences, context.leeway, now) {
                Ok(verified) => verified,
                Err(e) => return Err(self.fail(&id, peer, now, &e.to_string()).await),
            };
        let keep_until = verified
            .exp
            .saturating_add(context.leeway)
            .saturating_add(1);
        let fresh = self
            .store
            .remember_once(&format!("assertion:{id}:{}", verified.jti), keep_until)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "store unavailable: cannot check assertion replay");
                AuthError::Unavailable
            })?;
        if !fresh {
            return Err(self.fail(&id, peer, now, "assertion replayed").await);
        }
        Ok(client)
    }

    async fn fail(&self, id: &str, peer: Option<IpAddr>, now: u64, reason: &str) -> AuthError {
        self.guard.failed(Some(id), peer, now).await;
        AuthError::Failed {
            reason: reason.to_owned(),
            known: self.clients.get(id).is_some(),
        }
    }
}

/// A throw-away public key that assertions of unknown clients are checked
/// against; `None` only if key generation itself failed.
fn dummy_key() -> Option<ClientKey> {
    use crate::token::jws::{SigningAlg, SigningKey};
    let key = SigningKey::generate(SigningAlg::EdDSA, 2048).ok()?.key;
    let jwk = serde_json::Value::Object(key.verifying_key().jwk().clone()).to_string();
    ClientKey::from_jwk_json(&jwk).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StoreHandle {
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded =
            crate::services::store::EmbeddedStore::open(&dir.path().join("s.redb")).expect("store");
        StoreHandle::new(Arc::new(embedded), std::time::Duration::from_secs(1))
    }

    #[tokio::test]
    async fn failures_lock_the_id_and_the_address_for_the_rest_of_the_window() {
        let guard = FailureGuard::new(3, 3, &store());
        let attacker: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t = 6_000; // start of a window
        for _ in 0..3 {
            assert!(guard
                .check(Some("billing"), Some(attacker), t)
                .await
                .is_ok());
            guard.failed(Some("billing"), Some(attacker), t).await;
        }
        // The id is locked from anywhere, the address for any id.
        assert_eq!(
            guard.check(Some("billing"), Some(other), t + 1).await,
            Err(59)
        );
        assert_eq!(
            guard.check(Some("ledger"), Some(attacker), t + 1).await,
            Err(59)
        );
        // Unknown ids count like known ones; others are untouched.
        assert!(guard
            .check(Some("ledger"), Some(other), t + 1)
            .await
            .is_ok());
        // A new window starts afresh.
        assert!(guard
            .check(Some("billing"), Some(attacker), t + 60)
            .await
            .is_ok());
        let off = FailureGuard::new(0, 0, &store());
        for _ in 0..100 {
            off.failed(Some("x"), None, t).await;
        }
        assert!(off.check(Some("x"), None, t).await.is_ok());
    }
}
