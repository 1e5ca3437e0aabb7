//! The Txn-Token Service (draft-ietf-oauth-transaction-tokens): a gateway
//! or workload of the trust domain exchanges a subject token for a
//! short-lived Transaction Token, or replaces one.
//!
//! - From an access token of ours (`...:access_token`), fully verified,
//!   revocation included, addressed to an audience the caller receives; a
//!   single-use subject is consumed by the exchange.
//! - From a trusted issuer's JWT (`...:jwt`, [`crate::services::trusted`]).
//! - Replacing a Txn-Token (`...:txn_token`): same `txn`, `sub`, `aud` and
//!   `tctx`; scope only narrows; never later than the token replaced;
//!   never an expired one; the chain of earlier requesting workloads goes
//!   to `rctx.req_wl_chain`, at most [`MAX_REPLACEMENTS`] long.
//!
//! The scope never widens: an unknown subject scope grants nothing. The
//! token never carries the subject token.

use serde_json::{Map, Value};

use super::{granted_scope, TokenError, TokenService};
use crate::services::clients::Client;
use crate::services::trusted::ExternalError;
use crate::token::claims::AccessClaims;
use crate::token::issue::new_jti;
use crate::token::jws::MAX_TOKEN_LEN;
use crate::token::policy;
use crate::token::types::{Audience, Scope};
use auth_jit_verifier::txn::{
    verify_txn, TxnClaims, TxnExpectation, MAX_REPLACEMENTS, REQ_WL_CHAIN,
};

/// The `rctx` member naming the issuer that vouches for `sub`.
pub const SUB_ISS: &str = "sub_iss";

/// What a subject token is (RFC 8693 token type URNs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    AccessToken,
    Jwt,
    TxnToken,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::Jwt => "jwt",
            Self::TxnToken => "txn_token",
        }
    }
}

/// A Txn-Token request, parsed. Its `Debug` leaves the subject token out.
pub struct TxnRequest<'a> {
    pub subject_token: &'a str,
    pub subject_type: SubjectType,
    pub audience: Audience,
    /// Required unless replacing (then the replaced token's scope).
    pub scope: Option<Scope>,
    /// The request context: becomes `rctx`, with what the service knows.
    pub request_context: Option<Map<String, Value>>,
    /// The transaction's details: becomes `tctx`, immutable after.
    pub request_details: Option<Map<String, Value>>,
    /// How the requesting workload authenticated (its OAuth method).
    pub authn: &'static str,
}

impl std::fmt::Debug for TxnRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnRequest")
            .field("subject_type", &self.subject_type)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A signed Txn-Token and what it says.
pub type IssuedTxn = crate::token::issue::Issued<TxnClaims>;

/// What the subject token gives the new Txn-Token.
struct Basis {
    sub: String,
    granted: Scope,
    /// The new token never outlives this.
    exp_cap: u64,
    /// Replacement only: the transaction, its context, the chain so far.
    txn: Option<String>,
    tctx: Option<Map<String, Value>>,
    chain: Vec<String>,
    /// Who vouches for `sub`: our issuer, or the trusted issuer of the
    /// subject JWT (a `sub` is unique only within its issuer).
    sub_iss: String,
    /// A single-use access token, consumed once nothing else can refuse.
    consume: Option<AccessClaims>,
}

impl TokenService {
    /// Issues (or replaces) a Txn-Token for `caller`.
    #[tracing::instrument(name = "token.txn", level = "debug", skip_all, fields(client_id = %caller.id, subject = request.subject_type.as_str()))]
    pub async fn txn_token(
        &self,
        caller: &Client,
        request: TxnRequest<'_>,
    ) -> Result<IssuedTxn, TokenError> {
        let domain = self.trust_domain.as_ref().ok_or(TokenError::TxnOff)?;
        if !caller.policy.txn_token {
            return Err(TokenError::TxnNotAllowed);
        }
        if request.audience != *domain {
            return Err(TokenError::NotTrustDomain);
        }
        let now = self.clock.now();
        let basis = match request.subject_type {
            SubjectType::AccessToken => {
                self.basis_from_access_token(caller, request.subject_token, now)
                    .await?
            }
            SubjectType::Jwt => {
                self.basis_from_jwt(caller, request.subject_token, now)
                    .await?
            }
            SubjectType::TxnToken => self.basis_from_txn_token(&request, domain, now)?,
        };
        let replacing = basis.txn.is_some();
        let scope = match (&request.scope, replacing) {
            (Some(scope), _) => scope.clone(),
            (None, true) => basis.granted.clone(),
            (None, false) => {
                return Err(TokenError::InvalidGrant(
                    "a Txn-Token request names its scope".into(),
                ))
            }
        };
        if scope.is_empty() {
            return Err(TokenError::InvalidGrant(
                "a Txn-Token carries at least one scope".into(),
            ));
        }
        if let Some(extra) = scope.iter().find(|s| !basis.granted.contains(s)) {
            return Err(TokenError::ScopeWidening(extra.to_string()));
        }
        if replacing && request.request_details.is_some() && request.request_details != basis.tctx {
            return Err(TokenError::InvalidGrant(
                "tctx is immutable: a replacement cannot change request_details".into(),
            ));
        }
        // Short: the default lifetime within the client's and the global
        // ceiling, never past the subject.
        let ttl = self
            .limits
            .default_ttl
            .min(policy::effective_max_ttl(&caller.policy, self.limits))
            .min(basis.exp_cap.saturating_sub(now));
        if ttl == 0 {
            return Err(TokenError::InvalidGrant("subject_token has expired".into()));
        }
        let txn = match basis.txn {
            Some(txn) => txn,
            None => {
                new_jti(self.random.as_ref()).map_err(|_| TokenError::Internal("no randomness"))?
            }
        };
        let mut rctx = request.request_context.unwrap_or_default();
        // What the service knows wins over what the requester says.
        rctx.insert("authn".into(), Value::String(request.authn.into()));
        rctx.insert(SUB_ISS.into(), Value::String(basis.sub_iss));
        rctx.remove(REQ_WL_CHAIN);
        if !basis.chain.is_empty() {
            rctx.insert(
                REQ_WL_CHAIN.into(),
                Value::Array(basis.chain.into_iter().map(Value::String).collect()),
            );
        }
        let claims = TxnClaims {
            iss: self.rules.issuer.clone(),
            iat: now,
            exp: now + ttl,
            aud: domain.to_string(),
            txn,
            sub: basis.sub,
            scope: scope.to_string(),
            req_wl: caller.id.to_string(),
            tctx: if replacing {
                basis.tctx
            } else {
                request.request_details
            },
            rctx: Some(rctx),
        };
        let keys = self.keys();
        let token = self
            .signing_key(&keys, domain.as_str())?
            .sign_txn(&claims)
            .map_err(|_| TokenError::Internal("signing failed"))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::InvalidGrant(
                "request_context and request_details make the Txn-Token too large".into(),
            ));
        }
        // A single-use subject is consumed last, once the token exists and
        // nothing else can refuse: the exchange is its one use.
        if let Some(subject) = &basis.consume {
            self.subject_state(subject, true).await?;
        }
        Ok(IssuedTxn { token, claims })
    }

    /// Verifies a Txn-Token of this trust domain (`POST /api/token/verify`
    /// with `"token_type": "txn_token"`).
    pub fn verify_txn(
        &self,
        token: &str,
        audience: &Audience,
        scope: &Scope,
    ) -> Result<TxnClaims, TokenError> {
        let domain = self.trust_domain.as_ref().ok_or(TokenError::TxnOff)?;
        if audience != domain {
            return Err(crate::token::verify::VerifyError::WrongAudience.into());
        }
        let expect = TxnExpectation {
            trust_domain: domain.clone(),
            scope: scope.clone(),
        };
        Ok(verify_txn(
            token,
            self.keys().as_ref(),
            &self.rules,
            &expect,
            self.clock.now(),
        )?)
    }

    async fn basis_from_access_token(
        &self,
        caller: &Client,
        token: &str,
        now: u64,
    ) -> Result<Basis, TokenError> {
        let subject = self.exchange_subject(caller, token, now)?;
        // Revocation now; a single-use subject is consumed at the end.
        if !subject.is_single_use() {
            self.subject_state(&subject, false).await?;
        }
        Ok(Basis {
            sub: subject.sub.clone(),
            granted: granted_scope(&subject)?,
            exp_cap: subject.exp,
            txn: None,
            tctx: None,
            chain: Vec::new(),
            sub_iss: self.rules.issuer.clone(),
            consume: subject.is_single_use().then_some(subject),
        })
    }

    async fn basis_from_jwt(
        &self,
        caller: &Client,
        token: &str,
        now: u64,
    ) -> Result<Basis, TokenError> {
        let external = self
            .trusted
            .verify(token, self.rules.leeway, now)
            .await
            .map_err(|e| match e {
                ExternalError::Unavailable => TokenError::UpstreamUnavailable,
                e => TokenError::InvalidGrant(e.to_string()),
            })?;
        // As with our own tokens: the identity provider addressed it to an
        // audience this workload receives (the gateway).
        super::subject_in_reach(caller, &external.audience, external.exp, now)?;
        Ok(Basis {
            sub_iss: external.iss,
            sub: external.sub,
            granted: external.scope,
            exp_cap: external.exp,
            txn: None,
            tctx: None,
            chain: Vec::new(),
            consume: None,
        })
    }

    fn basis_from_txn_token(
        &self,
        request: &TxnRequest<'_>,
        domain: &Audience,
        now: u64,
    ) -> Result<Basis, TokenError> {
        let subject = self
            .verify_txn(request.subject_token, domain, &Scope::default())
            .map_err(|e| match e {
                TokenError::Invalid(e) => TokenError::InvalidGrant(format!("subject_token: {e}")),
                e => e,
            })?;
        // Never an expired one, not even within the leeway.
        if subject.exp <= now {
            return Err(TokenError::InvalidGrant(
                "an expired Txn-Token is never replaced".into(),
            ));
        }
        let chain: Vec<String> = subject.workloads().into_iter().map(str::to_owned).collect();
        // Kept from the token replaced; ours when it never said.
        let sub_iss = subject
            .rctx
            .as_ref()
            .and_then(|r| r.get(SUB_ISS))
            .and_then(Value::as_str)
            .map_or_else(|| self.rules.issuer.clone(), str::to_owned);
        if chain.len() > MAX_REPLACEMENTS {
            return Err(TokenError::InvalidGrant(format!(
                "a Txn-Token is replaced at most {MAX_REPLACEMENTS} times"
            )));
        }
        Ok(Basis {
            granted: subject.scope_set(),
            sub: subject.sub,
            exp_cap: subject.exp,
            txn: Some(subject.txn),
            tctx: subject.tctx,
            chain,
            sub_iss,
            consume: None,
        })
    }
}
