//! [`Verifier`]: the issuer's rules with the issuer's keys, fetched and
//! cached the way a receiving API needs them.
//!
//! - The issuer is discovered once (RFC 8414 metadata; its `issuer` must be
//!   the configured one), and only its `jwks_uri` and verify endpoint are
//!   ever fetched: never a URL that a token names.
//! - The JWKS is cached for the `max-age` the issuer sends, revalidated
//!   with `If-None-Match` (a 304 costs no parsing) in the background while
//!   requests go on with the current set. Reads are lock-free.
//! - A `kid` that is not in the set triggers at most one refetch per
//!   [`Builder::kid_miss_interval`]: a rotation is followed at once, and
//!   a flood of forged `kid`s costs the issuer one request per interval.
//! - When the issuer cannot be reached, the last good set keeps serving for
//!   [`Builder::stale_if_error`] past its freshness, then nothing verifies.
//! - Tokens only the issuer can judge (single-use: it consumes them;
//!   request-bound: it checks the binding against its own records) are
//!   checked locally first, then sent to the issuer's verify endpoint with
//!   this API's client credentials. If the issuer cannot answer, they are
//!   refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{Mutex, OnceCell};
use url::Url;

use crate::claims::AccessClaims;
use crate::jwks::KeySet;
use crate::jws::{Jws, JwsError, ACCESS_TOKEN, TXN_TOKEN};
use crate::rules::{verify_jws, Expectation, KeyLookup, Rules, VerifyError};
use crate::txn::{verify_txn_jws, TxnClaims, TxnExpectation};
use crate::types::{Audience, ParseError, Scope};

/// A JWKS larger than this is refused (ours are a few KiB).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// After a failed fetch, the next attempt waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// The well-known path of RFC 8414 metadata.
const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// Verifies auth-jit access tokens for one audience. Cheap to clone: every
/// clone shares one key cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.rules.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

struct Inner {
    rules: Rules,
    audience: Audience,
    http: reqwest::Client,
    jwks_uri: Option<Url>,
    verify_endpoint: Url,
    credentials: Option<Credentials>,
    origin: Option<String>,
    https_issuer: bool,
    timeout: Duration,
    kid_miss_interval: Duration,
    stale_if_error: Duration,
    min_cache: Duration,
    max_cache: Duration,
    default_cache: Duration,
    endpoints: OnceCell<Url>,
    cache: ArcSwap<Snapshot>,
    /// Held while a fetch runs: one fetch at a time.
    fetching: Mutex<()>,
    revalidating: AtomicBool,
    /// Milliseconds since `epoch` of the last kid-miss refetch, plus one
    /// (0: never).
    last_miss: AtomicU64,
    epoch: Instant,
    stats: Counters,
}

struct Credentials {
    id: String,
    secret: String,
}

/// One state of the key cache, replaced whole.
struct Snapshot {
    keys: Option<Arc<KeySet>>,
    etag: Option<String>,
    /// Until then the set is used as is; after, it is revalidated.
    fresh_until: Instant,
    /// Until then the set still verifies while revalidation fails.
    usable_until: Instant,
    /// Bumped by every fetch that answered, so a waiter can tell that the
    /// fetch it waited for happened.
    generation: u64,
}

#[derive(Default)]
struct Counters {
    fetches: AtomicU64,
    not_modified: AtomicU64,
    failures: AtomicU64,
    kid_miss_refetches: AtomicU64,
    kid_miss_throttled: AtomicU64,
    issuer_checks: AtomicU64,
}

/// What the cache has done so far (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// JWKS requests sent (including revalidations).
    pub fetches: u64,
    /// Revalidations answered 304 Not Modified.
    pub not_modified: u64,
    /// Fetches that failed (network, status, document).
    pub failures: u64,
    /// Refetches caused by a `kid` not in the set.
    pub kid_miss_refetches: u64,
    /// Unknown `kid`s refused without a refetch (the interval had not
    /// passed).
    pub kid_miss_throttled: u64,
    /// Tokens sent to the issuer's verify endpoint.
    pub issuer_checks: u64,
}

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The issuer is not an absolute http(s) URL.
    #[error("the issuer must be an absolute http(s) URL without query or fragment")]
    Issuer,
    /// An endpoint URL is unusable (or plain http for an https issuer).
    #[error("{0} must be an absolute http(s) URL (https for an https issuer)")]
    Url(&'static str),
    /// The audience does not parse.
    #[error("audience: {0}")]
    Audience(ParseError),
    /// The HTTP client could not be built (TLS roots).
    #[error("the HTTP client could not be built")]
    Http,
}

/// What a route requires of a token beyond the issuer's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    /// Scopes the token must all carry (else 403 `insufficient_scope`).
    pub scope: Scope,
    /// Only single-use tokens are accepted (each works once).
    pub single_use: bool,
}

/// The request a token came with, for request-bound tokens.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The absolute URL the caller used (query and fragment are ignored).
    pub url: &'a str,
}

/// A token that passed every check, with its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    claims: AccessClaims,
    by_issuer: bool,
}

impl Verified {
    /// The token's claims.
    pub fn claims(&self) -> &AccessClaims {
        &self.claims
    }

    /// The claims, owned.
    pub fn into_claims(self) -> AccessClaims {
        self.claims
    }

    /// Whether the issuer confirmed (and, if single-use, consumed) it.
    pub fn checked_by_issuer(&self) -> bool {
        self.by_issuer
    }
}

impl std::ops::Deref for Verified {
    type Target = AccessClaims;
    fn deref(&self) -> &AccessClaims {
        &self.claims
    }
}

/// Why a request was refused, as RFC 6750 §3.1 classifies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token came with the request (401, no error code).
    #[error("a bearer token is required")]
    Missing,
    /// The `Authorization` header is malformed or repeated (400).
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The token is not valid here (401 `invalid_token`). The text is safe
    /// to send: it never repeats the token.
    #[error("{0}")]
    InvalidToken(String),
    /// The token lacks scopes the route requires (403).
    #[error("the token does not carry the scope this request needs")]
    InsufficientScope(Scope),
    /// The issuer (keys or verify endpoint) cannot answer now (503): the
    /// token was not accepted.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        Refusal::InvalidToken(e.to_string())
    }
}

/// Configures a [`Verifier`].
pub struct Builder {
    issuer: String,
    audience: String,
    jwks_uri: Option<String>,
    verify_endpoint: Option<String>,
    credentials: Option<Credentials>,
    origin: Option<String>,
    leeway: u64,
    kid_miss_interval: Duration,
    stale_if_error: Duration,
    min_cache: Duration,
    max_cache: Duration,
    default_cache: Duration,
    timeout: Duration,
    http: Option<reqwest::Client>,
}

impl Builder {
    /// This API's own client credentials at the issuer (`auth-jit client
    /// add ...`). Needed for single-use and request-bound tokens, which only
    /// the issuer can check; without them those tokens are refused.
    pub fn client_credentials(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            id: id.into(),
            secret: secret.into(),
        });
        self
    }

    /// Skips discovery and fetches keys from this URL.
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.jwks_uri = Some(url.into());
        self
    }

    /// The issuer's verify endpoint [default: `ISSUER/api/token/verify`].
    pub fn verify_endpoint(mut self, url: impl Into<String>) -> Self {
        self.verify_endpoint = Some(url.into());
        self
    }

    /// The scheme and authority callers use to reach this API, e.g.
    /// `https://orders.internal`, for request-bound tokens. Without it the
    /// layer uses `http://` and the request's `Host`.
    pub fn public_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into().trim_end_matches('/').to_owned());
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat` [5 s, as the issuer].
    pub fn leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// At most one refetch per this interval for unknown `kid`s [10 s].
    pub fn kid_miss_interval(mut self, interval: Duration) -> Self {
        self.kid_miss_interval = interval;
        self
    }

    /// How long past its freshness the last good key set still verifies
    /// while the issuer cannot be reached [1 h].
    pub fn stale_if_error(mut self, bound: Duration) -> Self {
        self.stale_if_error = bound;
        self
    }

    /// Bounds on the issuer's `max-age` [1 s, 1 day], and the freshness of
    /// a JWKS sent without one [300 s].
    pub fn cache_bounds(mut self, min: Duration, max: Duration, default: Duration) -> Self {
        // Never below a second: revalidating without pause helps no one.
        self.min_cache = min.max(Duration::from_secs(1));
        self.max_cache = max.max(min);
        self.default_cache = default.clamp(self.min_cache, self.max_cache);
        self
    }

    /// Deadline of each request to the issuer [3 s], also with a client
    /// of your own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// An HTTP client of your own (custom roots, proxies). Turn off its
    /// redirects: [`Builder::timeout`] still bounds every request.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Checks the configuration. Nothing is fetched yet: the first request
    /// (or [`Verifier::refresh`]) does.
    pub fn build(self) -> Result<Verifier, BuildError> {
        let issuer_url = Url::parse(&self.issuer).map_err(|_| BuildError::Issuer)?;
        if !matches!(issuer_url.scheme(), "http" | "https")
            || issuer_url.host().is_none()
            || issuer_url.query().is_some()
            || issuer_url.fragment().is_some()
        {
            return Err(BuildError::Issuer);
        }
        let https = issuer_url.scheme() == "https";
        let endpoint = |value: Option<String>, name: &'static str, default: String| {
            let url = Url::parse(value.as_deref().unwrap_or(&default))
                .map_err(|_| BuildError::Url(name))?;
            match url.scheme() {
                "https" => Ok(url),
                "http" if !https => Ok(url),
                _ => Err(BuildError::Url(name)),
            }
        };
        let base = self.issuer.trim_end_matches('/');
        let verify_endpoint = endpoint(
            self.verify_endpoint,
            "the verify endpoint",
            format!("{base}/api/token/verify"),
        )?;
        let jwks_uri = match self.jwks_uri {
            None => None,
            Some(uri) => Some(endpoint(Some(uri), "the JWKS URI", String::new())?),
        };
        let audience = Audience::parse(&self.audience).map_err(BuildError::Audience)?;
        let http = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|_| BuildError::Http)?,
        };
        let now = Instant::now();
        Ok(Verifier {
            inner: Arc::new(Inner {
                rules: Rules {
                    issuer: self.issuer,
                    leeway: self.leeway,
                },
                audience,
                http,
                jwks_uri,
                verify_endpoint,
                credentials: self.credentials,
                origin: self.origin,
                https_issuer: https,
                timeout: self.timeout,
                kid_miss_interval: self.kid_miss_interval,
                stale_if_error: self.stale_if_error,
                min_cache: self.min_cache,
                max_cache: self.max_cache,
                default_cache: self.default_cache,
                endpoints: OnceCell::new(),
                cache: ArcSwap::from_pointee(Snapshot {
                    keys: None,
                    etag: None,
                    fresh_until: now,
                    usable_until: now,
                    generation: 0,
                }),
                fetching: Mutex::new(()),
                revalidating: AtomicBool::new(false),
                last_miss: AtomicU64::new(0),
                epoch: now,
                stats: Counters::default(),
            }),
        })
    }
}

/// Why a fetch from the issuer failed (logged, never sent to callers).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("the issuer could not be reached: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the issuer answered {0}")]
    Status(StatusCode),
    #[error("the issuer's metadata names another issuer or no usable jwks_uri")]
    Metadata,
    #[error("the issuer did not answer in time")]
    Timeout,
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS was refused: {0}")]
    Jwks(#[from] crate::jwks::JwksError),
}

/// Refreshing the key set failed; the verifier keeps the last good one
/// within its stale bound.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RefreshError(String);

impl Verifier {
    /// Starts configuring a verifier of tokens that `issuer` (exactly the
    /// `iss` it writes, i.e. `AUTH_JIT_ISSUER`) addressed to `audience`.
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> Builder {
        Builder {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_uri: None,
            verify_endpoint: None,
            credentials: None,
            origin: None,
            leeway: 5,
            kid_miss_interval: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(3600),
            min_cache: Duration::from_secs(1),
            max_cache: Duration::from_secs(86_400),
            default_cache: Duration::from_secs(300),
            timeout: Duration::from_secs(3),
            http: None,
        }
    }

    /// The audience tokens must be addressed to.
    pub fn audience(&self) -> &Audience {
        &self.inner.audience
    }

    /// The origin set with [`Builder::public_origin`].
    pub fn public_origin(&self) -> Option<&str> {
        self.inner.origin.as_deref()
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Stats {
            fetches: get(&c.fetches),
            not_modified: get(&c.not_modified),
            failures: get(&c.failures),
            kid_miss_refetches: get(&c.kid_miss_refetches),
            kid_miss_throttled: get(&c.kid_miss_throttled),
            issuer_checks: get(&c.issuer_checks),
        }
    }

    /// Fetches (or revalidates) the key set now, e.g. at start so the first
    /// request does not wait.
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let _guard = self.inner.fetching.lock().await;
        self.inner
            .fetch()
            .await
            .map_err(|e| RefreshError(e.to_string()))
    }

    /// The issuer's key set to check a token whose header names `kid`, by
    /// this cache's rules (freshness, one kid-miss refetch per interval,
    /// the stale bound). For tokens of other profiles than auth-jit's own
    /// (an identity provider's, checked by its own rules).
    pub async fn keys(&self, kid: &str) -> Result<Arc<KeySet>, Refusal> {
        self.inner.keys_for(kid).await
    }

    /// Verifies a Transaction Token of this issuer for `trust_domain`,
    /// carrying every scope of `scope` ([`crate::txn::verify_txn`]).
    pub async fn verify_txn(
        &self,
        token: &str,
        trust_domain: &Audience,
        scope: &Scope,
    ) -> Result<TxnClaims, Refusal> {
        let jws = Jws::parse(token, &TXN_TOKEN).map_err(VerifyError::from)?;
        let keys = self
            .inner
            .keys_for(jws.kid.as_deref().unwrap_or_default())
            .await?;
        let expect = TxnExpectation {
            trust_domain: trust_domain.clone(),
            scope: scope.clone(),
        };
        match verify_txn_jws(&jws, keys.as_ref(), &self.inner.rules, &expect, unix_now()) {
            Ok(claims) => Ok(claims),
            Err(VerifyError::MissingScope) => Err(Refusal::InsufficientScope(scope.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Verifies `token` for this verifier's audience and `requirement`.
    /// `target` is the request it came with (for request-bound tokens).
    pub async fn verify(
        &self,
        token: &str,
        requirement: &Requirement,
        target: Option<RequestTarget<'_>>,
    ) -> Result<Verified, Refusal> {
        let jws = Jws::parse(token, &ACCESS_TOKEN).map_err(VerifyError::from)?;
        let kid = jws.kid.as_deref().unwrap_or_default();
        let keys = self.inner.keys_for(kid).await?;
        let expect = Expectation {
            audience: Some(self.inner.audience.clone()),
            scope: requirement.scope.clone(),
            method: target.map(|t| t.method.to_owned()),
            url: target.map(|t| t.url.to_owned()),
            ..Expectation::default()
        };
        let claims = match verify_jws(&jws, keys.as_ref(), &self.inner.rules, &expect, unix_now()) {
            Ok(claims) => claims,
            Err(VerifyError::MissingScope) => {
                return Err(Refusal::InsufficientScope(requirement.scope.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        if requirement.single_use && !claims.is_single_use() {
            return Err(Refusal::InvalidToken(
                "this request takes a single-use token".into(),
            ));
        }
        if claims.is_single_use() || claims.htm.is_some() || claims.htu.is_some() {
            self.inner
                .ask_issuer(token, &claims.jti, &requirement.scope, target)
                .await?;
            return Ok(Verified {
                claims,
                by_issuer: true,
            });
        }
        Ok(Verified {
            claims,
            by_issuer: false,
        })
    }
}

impl Inner {
    /// The key set to check a token whose header names `kid`.
    async fn keys_for(self: &Arc<Self>, kid: &str) -> Result<Arc<KeySet>, Refusal> {
        let keys = self.current_keys().await?;
        if keys.find(kid).is_some() {
            return Ok(keys);
        }
        // An unknown kid: a key published since the last fetch, or a
        // forgery. One refetch per interval answers the first at once and
        // bounds what the second costs the issuer.
        let seen = self.cache.load().generation;
        let now = self.millis();
        let last = self.last_miss.load(Ordering::Acquire);
        let interval = u64::try_from(self.kid_miss_interval.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last - 1) >= interval;
        if !due {
            self.stats
                .kid_miss_throttled
                .fetch_add(1, Ordering::Relaxed);
            return Err(VerifyError::Jws(JwsError::UnknownKey).into());
        }
        match self.fetch_once(seen, Trigger::KidMiss { last, now }).await {
            Outcome::Failed => {
                return Err(Refusal::Unavailable(
                    "the issuer's keys cannot be fetched now",
                ))
            }
            Outcome::Throttled => {
                self.stats
                    .kid_miss_throttled
                    .fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Fetched | Outcome::Newer => {}
        }
        let snapshot = self.cache.load_full();
        match &snapshot.keys {
            Some(keys) if keys.find(kid).is_some() && Instant::now() < snapshot.usable_until => {
                Ok(keys.clone())
            }
            _ => Err(VerifyError::Jws(JwsError::UnknownKey).into()),
        }
    }

    /// The usable key set: fresh, or stale within bounds while it is being
    /// revalidated in the background, or fetched now. Past its stale bound
    /// a set never verifies again, whatever happens to the fetches.
    async fn current_keys(self: &Arc<Self>) -> Result<Arc<KeySet>, Refusal> {
        let unavailable = Refusal::Unavailable("the issuer's keys cannot be fetched now");
        let now = Instant::now();
        let snapshot = self.cache.load_full();
        if let Some(keys) = &snapshot.keys {
            if now < snapshot.usable_until {
                if now >= snapshot.fresh_until {
                    self.revalidate_in_background();
                }
                return Ok(keys.clone());
            }
        }
        if now < snapshot.fresh_until {
            // A fetch failed a moment ago; do not hammer the issuer.
            return Err(unavailable);
        }
        self.fetch_once(snapshot.generation, Trigger::Stale).await;
        let snapshot = self.cache.load();
        match &snapshot.keys {
            Some(keys) if Instant::now() < snapshot.usable_until => Ok(keys.clone()),
            _ => Err(unavailable),
        }
    }

    /// One fetch, in a task of its own so that a caller that is cancelled
    /// (a client gone, a timeout layer) cancels neither the fetch nor the
    /// state it records. Fetches run one at a time; none runs if one
    /// answered since the caller's snapshot `seen`.
    async fn fetch_once(self: &Arc<Self>, seen: u64, trigger: Trigger) -> Outcome {
        let inner = self.clone();
        let task = tokio::spawn(async move {
            let _guard = inner.fetching.lock().await;
            if inner.cache.load().generation != seen {
                return Outcome::Newer;
            }
            if let Trigger::KidMiss { last, now } = trigger {
                if inner
                    .last_miss
                    .compare_exchange(last, now + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return Outcome::Throttled;
                }
                inner
                    .stats
                    .kid_miss_refetches
                    .fetch_add(1, Ordering::Relaxed);
            }
            match inner.fetch().await {
                Ok(()) => Outcome::Fetched,
                Err(e) => {
                    tracing::warn!(error = %e, "fetching the issuer's keys failed");
                    Outcome::Failed
                }
            }
        });
        // The lock is held at most one bounded fetch at a time.
        match tokio::time::timeout(self.timeout * 3, task).await {
            Ok(Ok(outcome)) => outcome,
            _ => Outcome::Failed,
        }
    }

    fn revalidate_in_background(self: &Arc<Self>) {
        if self.revalidating.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends (done, panicked, dropped
        /// with its runtime).
        struct Done(Arc<Inner>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.revalidating.store(false, Ordering::Release);
            }
        }
        let done = Done(self.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let inner = &done.0;
            let _guard = inner.fetching.lock().await;
            if Instant::now() >= inner.cache.load().fresh_until {
                if let Err(e) = inner.fetch().await {
                    tracing::warn!(error = %e, "revalidating the issuer's keys failed; the last good set serves within its stale bound");
                }
            }
        });
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// One fetch of the JWKS (the caller holds `fetching`). Replaces the
    /// snapshot whatever the outcome, so waiters see it happened.
    async fn fetch(&self) -> Result<(), FetchError> {
        let previous = self.cache.load_full();
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.timeout, self.fetch_inner(&previous)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        };
        let now = Instant::now();
        let next = match &result {
            Ok(Fetched::NotModified(fresh)) => {
                self.stats.not_modified.fetch_add(1, Ordering::Relaxed);
                Snapshot {
                    keys: previous.keys.clone(),
                    etag: previous.etag.clone(),
                    fresh_until: now + *fresh,
                    usable_until: now + *fresh + self.stale_if_error,
                    generation: previous.generation + 1,
                }
            }
            Ok(Fetched::New { keys, etag, fresh }) => Snapshot {
                keys: Some(keys.clone()),
                etag: etag.clone(),
                fresh_until: now + *fresh,
                usable_until: now + *fresh + self.stale_if_error,
                generation: previous.generation + 1,
            },
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Snapshot {
                    keys: previous.keys.clone(),
                    etag: previous.etag.clone(),
                    fresh_until: now + RETRY_AFTER_FAILURE,
                    usable_until: previous.usable_until,
                    generation: previous.generation + 1,
                }
            }
        };
        self.cache.store(Arc::new(next));
        result.map(|_| ())
    }

    async fn fetch_inner(&self, previous: &Snapshot) -> Result<Fetched, FetchError> {
        let uri = self.jwks_uri().await?;
        let mut request = self
            .http
            .get(uri.clone())
            .header(ACCEPT, "application/jwk-set+json, application/json");
        if let (Some(etag), Some(_)) = (&previous.etag, &previous.keys) {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = request.send().await?;
        let status = response.status();
        let fresh = self.freshness(response.headers());
        if status == StatusCode::NOT_MODIFIED && previous.keys.is_some() {
            return Ok(Fetched::NotModified(fresh));
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status(status));
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(response).await?;
        let keys = KeySet::from_json(&body)?;
        Ok(Fetched::New {
            keys: Arc::new(keys),
            etag,
            fresh,
        })
    }

    /// The JWKS URI: configured, or from the issuer's metadata (fetched
    /// once; a failure is retried by the next fetch).
    async fn jwks_uri(&self) -> Result<&Url, FetchError> {
        if let Some(uri) = &self.jwks_uri {
            return Ok(uri);
        }
        self.endpoints
            .get_or_try_init(|| async {
                let issuer = &self.rules.issuer;
                let url = metadata_url(issuer).ok_or(FetchError::Metadata)?;
                let response = self
                    .http
                    .get(url)
                    .header(ACCEPT, "application/json")
                    .send()
                    .await?;
                if response.status() != StatusCode::OK {
                    return Err(FetchError::Status(response.status()));
                }
                let body = read_limited(response).await?;
                let doc: Value = serde_json::from_slice(&body).map_err(|_| FetchError::Metadata)?;
                // RFC 8414 §3.3: the metadata must be the configured
                // issuer's, or an attacker's document could name its keys.
                if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err(FetchError::Metadata);
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .and_then(|u| Url::parse(u).ok())
                    .ok_or(FetchError::Metadata)?;
                match uri.scheme() {
                    "https" => Ok(uri),
                    "http" if !self.https_issuer => Ok(uri),
                    _ => Err(FetchError::Metadata),
                }
            })
            .await
    }

    /// How long a response stays fresh: its `max-age` (0 for `no-cache`
    /// or `no-store`) within the configured bounds.
    fn freshness(&self, headers: &HeaderMap) -> Duration {
        let mut max_age = None;
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',').map(str::trim) {
                let lower = directive.to_ascii_lowercase();
                if lower == "no-cache" || lower == "no-store" {
                    max_age = Some(0);
                } else if let Some(secs) = lower.strip_prefix("max-age=") {
                    let digits = secs.trim_matches('"');
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                        // Too large for a u64 is "very long" (RFC 9111 §1.2.2).
                        let secs = digits.parse::<u64>().unwrap_or(u64::MAX);
                        max_age = Some(max_age.map_or(secs, |m: u64| m.min(secs)));
                    }
                }
            }
        }
        max_age
            .map_or(self.default_cache, |secs| {
                Duration::from_secs(secs.min(self.max_cache.as_secs()))
            })
            .clamp(self.min_cache, self.max_cache)
    }

    /// Sends a token only the issuer can judge to its verify endpoint.
    async fn ask_issuer(
        &self,
        token: &str,
        jti: &str,
        scope: &Scope,
        target: Option<RequestTarget<'_>>,
    ) -> Result<(), Refusal> {
        let Some(credentials) = &self.credentials else {
            return Err(Refusal::InvalidToken(
                "single-use and request-bound tokens are checked with the issuer, and this API has no client credentials for it".into(),
            ));
        };
        self.stats.issuer_checks.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"token": token, "audience": self.audience.as_str()});
        if !scope.is_empty() {
            body["scope"] = Value::String(scope.to_string());
        }
        if let Some(target) = target {
            body["method"] = Value::String(target.method.to_owned());
            body["url"] = Value::String(target.url.to_owned());
        }
        let unavailable = Refusal::Unavailable("the issuer cannot check this token now");
        let Ok(payload) = serde_json::to_vec(&body) else {
            return Err(unavailable);
        };
        let request = self
            .http
            .post(self.verify_endpoint.clone())
            .basic_auth(&credentials.id, Some(&credentials.secret))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(payload);
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let body = read_limited(response).await?;
            Ok::<_, FetchError>((status, body))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the issuer's verify endpoint could not be reached");
                return Err(unavailable);
            }
            Err(_) => {
                tracing::warn!("the issuer's verify endpoint did not answer in time");
                return Err(unavailable);
            }
        };
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let field = |name: &str| answer.get(name).and_then(Value::as_str);
        match status {
            // The answer must be about this very token.
            StatusCode::OK
                if answer.get("active") == Some(&Value::Bool(true))
                    && answer.pointer("/claims/jti").and_then(Value::as_str) == Some(jti) =>
            {
                Ok(())
            }
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST
                if field("error") == Some("invalid_token")
                    || field("error") == Some("invalid_request") =>
            {
                let text = field("error_description")
                    .unwrap_or("the issuer refused the token")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                Err(Refusal::InvalidToken(text))
            }
            other => {
                // The API's own credentials refused, rate limits, outages:
                // the token may be fine, but nobody vouches for it.
                tracing::warn!(status = %other, error = field("error").unwrap_or(""), "the issuer did not confirm a token");
                Err(unavailable)
            }
        }
    }
}

/// What a call to [`Inner::fetch_once`] led to.
enum Outcome {
    Fetched,
    /// Another fetch answered while this one waited.
    Newer,
    /// Another kid miss took this interval's refetch.
    Throttled,
    Failed,
}

/// Why a fetch is wanted.
enum Trigger {
    Stale,
    KidMiss { last: u64, now: u64 },
}

enum Fetched {
    NotModified(Duration),
    New {
        keys: Arc<KeySet>,
        etag: Option<String>,
        fresh: Duration,
    },
}

/// RFC 8414 §3.1: the well-known segment goes between the host and the
/// issuer's path.
fn metadata_url(issuer: &str) -> Option<Url> {
    let mut url = Url::parse(issuer).ok()?;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{METADATA_PATH}{path}"));
    Some(url)
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn unix_now() -> u64 {
    // A clock before 1970 makes every token look expired: fails closed.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lives_under_the_well_known_path_of_the_issuer() {
        let url = |i: &str| metadata_url(i).map(String::from);
        assert_eq!(
            url("https://auth.example").as_deref(),
            Some("https://auth.example/.well-known/oauth-authorization-server")
        );
        assert_eq!(
            url("https://auth.example/tenant/").as_deref(),
            Some("https://auth.example/.well-known/oauth-authorization-server/tenant")
        );
    }

    #[test]
    fn freshness_follows_max_age_within_bounds() {
        let verifier = Verifier::builder("http://auth.test", "orders")
            .cache_bounds(
                Duration::from_secs(2),
                Duration::from_secs(600),
                Duration::from_secs(60),
            )
            .build()
            .expect("build");
        let fresh = |value: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(CACHE_CONTROL, v.parse().expect("header"));
            }
            verifier.inner.freshness(&headers).as_secs()
        };
        assert_eq!(fresh(Some("public, max-age=300")), 300);
        assert_eq!(fresh(Some("max-age=100000")), 600);
        assert_eq!(fresh(Some("no-cache")), 2);
        assert_eq!(fresh(Some("max-age=0")), 2);
        assert_eq!(fresh(None), 60);
        assert_eq!(fresh(Some("max-age=banana")), 60);
    }

    #[test]
    fn an_https_issuer_never_uses_plain_http_endpoints() {
        assert!(Verifier::builder("https://auth.test", "orders")
            .jwks_uri("http://auth.test/jwks")
            .build()
            .is_err());
        assert!(Verifier::builder("https://auth.test", "orders")
            .verify_endpoint("http://auth.test/verify")
            .build()
            .is_err());
        assert!(Verifier::builder("ftp://auth.test", "orders")
            .build()
            .is_err());
        assert!(Verifier::builder("https://auth.test", "two words")
            .build()
            .is_err());
    }
}
