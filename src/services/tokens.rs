//! The token service: the pure domain plus the things it cannot do alone —
//! the key set, the store and the clock. Handlers of every API (ours and
//! OAuth) call this, so rules live in one place.

use std::sync::Arc;

mod txn;
pub use txn::{IssuedTxn, SubjectType, TxnRequest};

use crate::services::clients::{Client, Clients};
use crate::services::keys::KeySet;
use crate::services::store::{Party, StoreError, StoreHandle, TokenRef, TokenState};
use crate::services::trusted::TrustedIssuers;
use crate::token::claims::{AccessClaims, Actor};
use crate::token::clock::{Clock, Random};
use crate::token::issue::{self, IssuedToken};
use crate::token::jws::SigningKey;
use crate::token::policy::{self, Grant, PolicyError, TokenRequest, TtlLimits};
use crate::token::types::{Audience, Scope, Ttl};
use crate::token::verify::{self, Expectation, Rules, VerifyError};

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The store could not answer: whatever depends on it fails closed.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
    /// The caller may not verify tokens for this audience.
    #[error("this client does not receive tokens for that audience")]
    NotReceiver,
    /// The client is not registered for token exchange.
    #[error("this client may not use token exchange")]
    ExchangeNotAllowed,
    /// The subject token of an exchange is unusable.
    #[error("{0}")]
    InvalidGrant(String),
    /// An exchange asked for scopes the subject token does not carry.
    #[error("token exchange can only narrow scope: `{0}` is not in the subject token")]
    ScopeWidening(String),
    /// No key signs yet: the shared ring was unreadable at start, or an
    /// audience's new algorithm gets its first key within a second.
    #[error("no signing key is loaded yet")]
    NoSigningKey,
    /// Txn-Tokens were asked for, and no trust domain is configured.
    #[error("Transaction Tokens are off: AUTH_JIT_TRUST_DOMAIN is not set")]
    TxnOff,
    /// The client is not registered for Txn-Tokens.
    #[error("this client may not request Transaction Tokens")]
    TxnNotAllowed,
    /// A Txn-Token's audience is the trust domain, and nothing else.
    #[error("the audience of a Transaction Token is the trust domain")]
    NotTrustDomain,
    /// A trusted issuer's keys could not be fetched: fail closed.
    #[error("the trusted issuer cannot be reached")]
    UpstreamUnavailable,
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Seconds that store entries outlive the last instant a token could verify.
const KEEP_MARGIN: u64 = 60;

/// What to revoke.
#[derive(Debug)]
pub enum RevokeTarget<'a> {
    Token(&'a str),
    Jti(&'a str),
}

pub struct TokenService {
    /// Swapped whole when the keys directory changes (rotation).
    keys: std::sync::RwLock<Arc<KeySet>>,
    clients: Clients,
    store: StoreHandle,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    rules: Rules,
    limits: TtlLimits,
    max_delegation_depth: usize,
    trust_domain: Option<Audience>,
    trusted: TrustedIssuers,
}

/// The service-wide rules a [`TokenService`] applies.
#[derive(Debug, Clone)]
pub struct ServiceRules {
    pub verify: Rules,
    pub ttl: TtlLimits,
    /// Most token exchanges behind one token (0: exchange off).
    pub max_delegation_depth: usize,
    /// The `aud` of Transaction Tokens (`None`: they are off).
    pub trust_domain: Option<Audience>,
}

impl TokenService {
    pub fn new(
        keys: Arc<KeySet>,
        clients: Clients,
        store: StoreHandle,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        rules: ServiceRules,
    ) -> Self {
        Self {
            keys: std::sync::RwLock::new(keys),
            clients,
            store,
            clock,
            random,
            rules: rules.verify,
            limits: rules.ttl,
            max_delegation_depth: rules.max_delegation_depth,
            trust_domain: rules.trust_domain,
            trusted: TrustedIssuers::default(),
        }
    }

    /// The external issuers whose JWTs may be exchanged for Txn-Tokens.
    pub fn with_trusted_issuers(mut self, trusted: TrustedIssuers) -> Self {
        self.trusted = trusted;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.rules.issuer
    }

    pub fn leeway(&self) -> u64 {
        self.rules.leeway
    }

    /// The current key set (cheap: a reference count).
    pub fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => Arc::clone(&keys),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Installs a re-read key set; returns the previous one.
    pub fn replace_keys(&self, keys: KeySet) -> Arc<KeySet> {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => std::mem::replace(&mut current, keys),
            Err(poisoned) => std::mem::replace(&mut poisoned.into_inner(), keys),
        }
    }

    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Entries about a token may go once it cannot verify any more.
    ///
    /// Redis expires entries by its own clock, and instances' clocks may be
    /// up to the leeway apart: keep them for twice the leeway plus a margin.
    fn keep_until(&self, exp: u64) -> u64 {
        exp.saturating_add(self.rules.leeway.saturating_mul(2))
            .saturating_add(KEEP_MARGIN)
    }

    /// Applies the client's policy and signs a token.
    #[tracing::instrument(name = "token.issue", level = "debug", skip_all, fields(client_id = %client.id, aud = %request.audience))]
    pub async fn issue(
        &self,
        client: &Client,
        request: TokenRequest,
    ) -> Result<IssuedToken, TokenError> {
        let grant = policy::authorize(&client.policy, self.limits, request)?;
        if grant.once {
            // A single-use token is only worth issuing if it can be consumed:
            // with the store down, refuse rather than hand out a token that
            // no verifier could honour.
            self.store.ping().await?;
        }
        let claims = issue::claims_for(
            &self.rules.issuer,
            &client.id,
            &grant,
            self.clock.as_ref(),
            self.random.as_ref(),
        )
        .map_err(|_| TokenError::Internal("no randomness"))?;
        self.sign(claims)
    }

    /// Signs claims with the active key of the algorithm their audience is
    /// signed with (its own, or `AUTH_JIT_SIGNING_ALG`).
    fn sign(&self, claims: AccessClaims) -> Result<IssuedToken, TokenError> {
        let _sign = tracing::debug_span!("token.sign").entered();
        let keys = self.keys();
        let key = self.signing_key(&keys, &claims.aud)?;
        issue::sign(key, claims).map_err(|_| TokenError::Internal("signing failed"))
    }

    /// The active key of the algorithm `audience` is signed with (its own,
    /// or `AUTH_JIT_SIGNING_ALG`).
    fn signing_key<'k>(
        &self,
        keys: &'k KeySet,
        audience: &str,
    ) -> Result<&'k SigningKey, TokenError> {
        match self.clients.signing_alg_for(audience) {
            None => keys.active(),
            Some(alg) => keys.active_for(alg),
        }
        .ok_or(TokenError::NoSigningKey)
    }

    /// The stateless checks of a token (header, key, signature, claims) with
    /// the current key set and clock: every operation goes through here.
    fn check(&self, token: &str, expect: &Expectation) -> Result<AccessClaims, VerifyError> {
        let _span = tracing::debug_span!("token.check_signature").entered();
        verify::verify(
            token,
            self.keys().as_ref(),
            &self.rules,
            expect,
            self.clock.now(),
        )
    }

    /// Verifies a token for `caller`, which must receive its audience, then
    /// checks revocation and, with `consume`, uses up a single-use token.
    #[tracing::instrument(name = "token.verify", level = "debug", skip_all, fields(client_id = %caller.id))]
    pub async fn verify(
        &self,
        caller: &Client,
        token: &str,
        expect: &Expectation,
        consume: bool,
    ) -> Result<AccessClaims, TokenError> {
        if let Some(aud) = &expect.audience {
            if !caller.receives(aud.as_str()) {
                return Err(TokenError::NotReceiver);
            }
        }
        let claims = self.check(token, expect)?;
        // Deny by default: a token outlives neither its client's removal nor
        // an operator's `client revoke-tokens`.
        let state = self.check_state(&claims, consume).await?;
        match state {
            TokenState::Active => Ok(claims),
            TokenState::Revoked => Err(VerifyError::Revoked.into()),
            TokenState::AlreadyUsed => Err(VerifyError::AlreadyUsed.into()),
        }
    }

    /// Revokes a token for `caller` (RFC 7009 semantics: unknown, invalid
    /// or foreign tokens are ignored, not reported). Only its client or a
    /// receiver of its audience can revoke it.
    #[tracing::instrument(name = "token.revoke", level = "debug", skip_all, fields(client_id = %caller.id))]
    pub async fn revoke(
        &self,
        caller: &Client,
        target: RevokeTarget<'_>,
    ) -> Result<bool, TokenError> {
        match target {
            RevokeTarget::Token(token) => {
                // Signature and issuer must hold; expiry does not matter (an
                // expired token needs no revocation, but is not an error).
                // A bound token is revocable without its request.
                let expect = Expectation {
                    skip_binding: true,
                    ignore_expiry: true,
                    ..Expectation::default()
                };
                let claims = match self.check(token, &expect) {
                    Ok(claims) => claims,
                    Err(_) => return Ok(false),
                };
                if claims.client_id != caller.id.as_str() && !caller.receives(&claims.aud) {
                    return Ok(false);
                }
                if self.clock.now() >= self.keep_until(claims.exp) {
                    return Ok(false);
                }
                self.store
                    .revoke(&claims.jti, Party::Proven, self.keep_until(claims.exp))
                    .await?;
                Ok(true)
            }
            RevokeTarget::Jti(jti) => {
                // Without the token we cannot tell whose it is: record it in
                // the caller's name for every role the caller has. It lasts
                // as long as any token can, even one issued under a higher
                // AUTH_JIT_MAX_TTL before a restart.
                let keep_until = self.keep_until(
                    self.clock
                        .now()
                        .saturating_add(crate::settings::MAX_TTL_CEILING),
                );
                self.store
                    .revoke(jti, Party::Client(caller.id.as_str()), keep_until)
                    .await?;
                for aud in &caller.receives {
                    self.store
                        .revoke(jti, Party::Audience(aud), keep_until)
                        .await?;
                }
                Ok(true)
            }
        }
    }

    /// Checks a token as RFC 7662 introspection does: `None` for anything
    /// that is not an active token addressed to an audience `caller`
    /// receives. A single-use token is consumed, as by verification.
    #[tracing::instrument(name = "token.introspect", level = "debug", skip_all, fields(client_id = %caller.id))]
    pub async fn introspect(
        &self,
        caller: &Client,
        token: &str,
    ) -> Result<Option<AccessClaims>, TokenError> {
        // Introspection has no request to compare a bound token with: it
        // reports `htm`/`htu` and the resource server compares them.
        let expect = Expectation {
            skip_binding: true,
            ..Expectation::default()
        };
        let Ok(claims) = self.check(token, &expect) else {
            return Ok(None);
        };
        if !caller.receives(&claims.aud) {
            return Ok(None);
        }
        // A single-use token is consumed by introspection as by verify:
        // RFC 7662 clients do not know the `once` claim, so reporting it
        // active again and again would let it be replayed.
        match self.check_state(&claims, true).await? {
            TokenState::Active => Ok(Some(claims)),
            TokenState::Revoked | TokenState::AlreadyUsed => Ok(None),
        }
    }

    /// Registry and store checks shared by verify, introspect and exchange.
    async fn check_state(
        &self,
        claims: &AccessClaims,
        consume: bool,
    ) -> Result<TokenState, TokenError> {
        // The client that obtained the token and, for exchanged tokens, the
        // client it was originally issued to (`sub`): removing either, or
        // `client revoke-tokens` on either, ends the token.
        let original =
            (claims.act.is_some() && claims.sub != claims.client_id).then_some(claims.sub.as_str());
        for owner in std::iter::once(claims.client_id.as_str()).chain(original) {
            match self.clients.get(owner) {
                None => return Ok(TokenState::Revoked),
                Some(c) if c.tokens_revoked_before.is_some_and(|t| claims.iat <= t) => {
                    return Ok(TokenState::Revoked)
                }
                Some(_) => {}
            }
        }
        Ok(self
            .store
            .check(
                TokenRef {
                    jti: &claims.jti,
                    client_id: &claims.client_id,
                    aud: &claims.aud,
                    iat: claims.iat,
                    keep_until: self.keep_until(claims.exp),
                    single_use: claims.is_single_use(),
                },
                consume,
            )
            .await?)
    }

    /// Token exchange (RFC 8693): `caller`, holding `subject_token`
    /// addressed to it, gets a token for `audience` on behalf of the same
    /// subject. Scope can only narrow, lifetime cannot outlast the subject
    /// token, and the delegation chain (`act`) is capped.
    #[tracing::instrument(name = "token.exchange", level = "debug", skip_all, fields(client_id = %caller.id, aud = %audience))]
    pub async fn exchange(
        &self,
        caller: &Client,
        subject_token: &str,
        audience: Audience,
        scope: Option<Scope>,
    ) -> Result<IssuedToken, TokenError> {
        if !caller.policy.exchange || self.max_delegation_depth == 0 {
            return Err(TokenError::ExchangeNotAllowed);
        }
        let now = self.clock.now();
        // Checked before anything is consumed: an exchange that cannot
        // produce a token must not use up a single-use subject token.
        let subject = self.exchange_subject(caller, subject_token, now)?;
        let remaining = subject.exp.saturating_sub(now);
        let depth = subject.delegation_depth() + 1;
        if depth > self.max_delegation_depth {
            return Err(TokenError::InvalidGrant(format!(
                "delegation chain too deep: at most {} exchanges",
                self.max_delegation_depth
            )));
        }
        let granted = granted_scope(&subject)?;
        let scope = scope.unwrap_or_else(|| granted.clone());
        if let Some(extra) = scope.iter().find(|s| !granted.contains(s)) {
            return Err(TokenError::ScopeWidening(extra.to_string()));
        }
        let grant = policy::authorize(
            &caller.policy,
            self.limits,
            TokenRequest {
                audience,
                scope,
                ttl: None,
                once: false,
                bind: None,
            },
        )?;
        // Consume a single-use subject token: the exchange is its one use.
        self.subject_state(&subject, true).await?;
        let ttl = Ttl::new(grant.ttl.seconds().min(remaining))
            .map_err(|_| TokenError::InvalidGrant("subject_token has expired".into()))?;
        let grant = Grant { ttl, ..grant };
        let mut claims = issue::claims_for(
            &self.rules.issuer,
            &caller.id,
            &grant,
            self.clock.as_ref(),
            self.random.as_ref(),
        )
        .map_err(|_| TokenError::Internal("no randomness"))?;
        claims.sub = subject.sub.clone();
        claims.act = Some(Actor {
            sub: caller.id.to_string(),
            act: subject.act.clone().map(Box::new),
        });
        self.sign(claims)
    }

    /// The subject token of an exchange (RFC 8693 or a Txn-Token request):
    /// one of our access tokens, fully verified, not expired (not even
    /// within the leeway), addressed to an audience `caller` receives.
    /// Every refusal is `invalid_grant`. Its store state is checked apart
    /// ([`Self::subject_state`]), once nothing else can refuse.
    fn exchange_subject(
        &self,
        caller: &Client,
        token: &str,
        now: u64,
    ) -> Result<AccessClaims, TokenError> {
        let subject = self
            .check(token, &Expectation::default())
            .map_err(|e| match e {
                VerifyError::BindingRequired => TokenError::InvalidGrant(
                    "subject_token is bound to one request and cannot be exchanged".into(),
                ),
                e => TokenError::InvalidGrant(format!("subject_token: {e}")),
            })?;
        subject_in_reach(caller, &subject.aud, subject.exp, now)?;
        Ok(subject)
    }

    /// Revocation of a subject token, and with `consume` its one use.
    async fn subject_state(&self, subject: &AccessClaims, consume: bool) -> Result<(), TokenError> {
        match self.check_state(subject, consume).await? {
            TokenState::Active => Ok(()),
            TokenState::Revoked => Err(TokenError::InvalidGrant(
                "subject_token has been revoked".into(),
            )),
            TokenState::AlreadyUsed => Err(TokenError::InvalidGrant(
                "subject_token has already been used".into(),
            )),
        }
    }
}

/// The scope a subject token carries; what an exchange may narrow.
fn granted_scope(subject: &AccessClaims) -> Result<Scope, TokenError> {
    Scope::parse(subject.scope.as_deref().unwrap_or_default())
        .map_err(|_| TokenError::InvalidGrant("subject_token: bad scope".into()))
}

/// What every exchange subject must meet, whoever issued it: not expired
/// (not even within the leeway) and addressed to an audience `caller`
/// receives, not to anyone.
fn subject_in_reach(caller: &Client, aud: &str, exp: u64, now: u64) -> Result<(), TokenError> {
    if exp <= now {
        return Err(TokenError::InvalidGrant("subject_token has expired".into()));
    }
    if !caller.receives(aud) {
        return Err(TokenError::InvalidGrant(
            "subject_token is not addressed to this client".into(),
        ));
    }
    Ok(())
}
