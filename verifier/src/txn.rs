//! Transaction Tokens (draft-ietf-oauth-transaction-tokens): what a
//! Txn-Token says, and THE rules that check one. The issuer's verify
//! endpoint (`"token_type": "txn_token"`), its replacement grant and every
//! workload behind the crate's `require_txn` layer run this code.
//!
//! A Txn-Token has its own `typ` (`txntoken+jwt`), its `aud` is the trust
//! domain, and its claims are not an access token's: the two can never
//! stand in for each other.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jws::{Jws, JwsError, TXN_TOKEN};
use crate::jwt::{check_times, Claims};
use crate::rules::{KeyLookup, Rules, VerifyError};
use crate::types::{Audience, Scope};

/// At most this many replacements stand behind one Txn-Token: the chain of
/// earlier requesting workloads (`rctx.req_wl_chain`) is never longer.
pub const MAX_REPLACEMENTS: usize = 8;

/// The `rctx` member that keeps the earlier requesting workloads of a
/// replaced Txn-Token, first requester first (draft -10 keeps `req_wl` a
/// string and leaves the chain to the service).
pub const REQ_WL_CHAIN: &str = "req_wl_chain";

/// The claims of a Txn-Token. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TxnClaims {
    /// The Txn-Token Service (`AUTH_JIT_ISSUER`).
    pub iss: String,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// The trust domain (`AUTH_JIT_TRUST_DOMAIN`).
    pub aud: String,
    /// The transaction: unique, kept by every replacement.
    pub txn: String,
    /// Whom the transaction is for, from the subject token.
    pub sub: String,
    /// Why: space-separated scopes, never wider than the subject token's.
    pub scope: String,
    /// The workload that requested this token.
    pub req_wl: String,
    /// The transaction context (from `request_details`): immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub tctx: Option<Map<String, Value>>,
    /// The request context (from `request_context`, plus what the service
    /// knows, such as how the requester authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub rctx: Option<Map<String, Value>>,
}

impl TxnClaims {
    /// The scope as a set (empty when none was granted).
    pub fn scope_set(&self) -> Scope {
        Scope::parse(&self.scope).unwrap_or_default()
    }

    /// Every workload that requested this transaction's tokens, first
    /// requester first, this token's requester last.
    pub fn workloads(&self) -> Vec<&str> {
        let mut chain: Vec<&str> = self
            .rctx
            .as_ref()
            .and_then(|r| r.get(REQ_WL_CHAIN))
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        chain.push(&self.req_wl);
        chain
    }
}

/// What the verifying workload expects of a Txn-Token.
#[derive(Debug, Clone)]
pub struct TxnExpectation {
    /// The trust domain: `aud` must be exactly this.
    pub trust_domain: Audience,
    /// Scopes the token must all carry.
    pub scope: Scope,
}

/// Verifies a Txn-Token at time `now` and returns its claims.
pub fn verify_txn(
    token: &str,
    keys: &impl KeyLookup,
    rules: &Rules,
    expect: &TxnExpectation,
    now: u64,
) -> Result<TxnClaims, VerifyError> {
    verify_txn_jws(&Jws::parse(token, &TXN_TOKEN)?, keys, rules, expect, now)
}

/// [`verify_txn`] for a token whose header was already parsed under
/// [`TXN_TOKEN`].
pub fn verify_txn_jws(
    jws: &Jws<'_>,
    keys: &impl KeyLookup,
    rules: &Rules,
    expect: &TxnExpectation,
    now: u64,
) -> Result<TxnClaims, VerifyError> {
    let kid = jws.kid.as_deref().unwrap_or_default();
    let key = keys.find(kid).ok_or(JwsError::UnknownKey)?;
    let mut map = jws.verify(key)?;
    let nbf = Claims(&map).opt_number("nbf")?;
    let claims = read_txn_claims(&mut map)?;
    if claims.iss != rules.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    check_times(claims.exp, nbf, Some(claims.iat), rules.leeway, now)?;
    if claims.aud != expect.trust_domain.as_str() {
        return Err(VerifyError::WrongAudience);
    }
    let granted = Scope::parse(&claims.scope).map_err(|_| VerifyError::WrongClaimType("scope"))?;
    if !expect.scope.is_subset(&granted) {
        return Err(VerifyError::MissingScope);
    }
    Ok(claims)
}

/// Reads the claims with their exact JSON types; the context objects are
/// moved out of the payload, not copied.
fn read_txn_claims(map: &mut Map<String, Value>) -> Result<TxnClaims, VerifyError> {
    let mut object = |name: &'static str| match map.remove(name) {
        None => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(VerifyError::WrongClaimType(name)),
    };
    let tctx = object("tctx")?;
    let rctx = object("rctx")?;
    if let Some(chain) = rctx.as_ref().and_then(|r| r.get(REQ_WL_CHAIN)) {
        let ok = chain.as_array().is_some_and(|items| {
            items.len() <= MAX_REPLACEMENTS
                && items
                    .iter()
                    .all(|w| w.as_str().is_some_and(|w| !w.is_empty()))
        });
        if !ok {
            return Err(VerifyError::WrongClaimType("rctx"));
        }
    }
    let c = Claims(map);
    Ok(TxnClaims {
        iss: c.str("iss")?.to_owned(),
        iat: c.number("iat")?,
        exp: c.number("exp")?,
        aud: c.single_audience()?.to_owned(),
        txn: c.non_empty_str("txn")?.to_owned(),
        sub: c.non_empty_str("sub")?.to_owned(),
        // Required by draft -10: a Txn-Token always says why.
        scope: c.str("scope")?.to_owned(),
        req_wl: c.non_empty_str("req_wl")?.to_owned(),
        tctx,
        rctx,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::{verify, Expectation};
    use crate::testkit::{Keys, TestKey};

    const ISS: &str = "https://auth.test";
    const T0: u64 = 1_800_000_000;

    fn setup() -> (TestKey, Keys, Rules, TxnExpectation) {
        let key = TestKey::generate();
        let keys = Keys::of(&key);
        let rules = Rules {
            issuer: ISS.into(),
            leeway: 5,
        };
        let expect = TxnExpectation {
            trust_domain: Audience::parse("trust.example").expect("aud"),
            scope: Scope::default(),
        };
        (key, keys, rules, expect)
    }

    fn claims() -> Value {
        json!({"iss": ISS, "iat": T0, "exp": T0 + 60, "aud": "trust.example",
            "txn": "t-1", "sub": "alice", "scope": "orders:read", "req_wl": "gateway",
            "tctx": {"order": 7}, "rctx": {"authn": "client_secret_basic"}})
    }

    fn txn_header(key: &TestKey) -> Value {
        json!({"alg": "EdDSA", "typ": "txntoken+jwt", "kid": key.kid()})
    }

    #[test]
    fn a_txn_token_verifies_and_never_as_an_access_token() {
        let (key, keys, rules, expect) = setup();
        let token = key.sign_with_header(&txn_header(&key), &claims());
        let got = verify_txn(&token, &keys, &rules, &expect, T0).expect("valid");
        assert_eq!(got.sub, "alice");
        assert_eq!(got.workloads(), vec!["gateway"]);
        assert_eq!(
            got.tctx.as_ref().map(|t| t["order"].clone()),
            Some(json!(7))
        );
        // The same token under the access-token rules: refused by typ.
        assert_eq!(
            verify(&token, &keys, &rules, &Expectation::default(), T0),
            Err(VerifyError::Jws(JwsError::WrongType("at+jwt")))
        );
        // An access token under the Txn-Token rules: refused by typ.
        let access = key.sign(&claims());
        assert_eq!(
            verify_txn(&access, &keys, &rules, &expect, T0),
            Err(VerifyError::Jws(JwsError::WrongType("txntoken+jwt")))
        );
    }

    #[test]
    fn audience_scope_types_and_time_are_checked() {
        let (key, keys, rules, expect) = setup();
        let sign = |c: &Value| key.sign_with_header(&txn_header(&key), c);
        let mut other = claims();
        other["aud"] = json!("elsewhere");
        assert_eq!(
            verify_txn(&sign(&other), &keys, &rules, &expect, T0),
            Err(VerifyError::WrongAudience)
        );
        let wants = TxnExpectation {
            scope: Scope::parse("orders:write").expect("scope"),
            ..expect.clone()
        };
        assert_eq!(
            verify_txn(&sign(&claims()), &keys, &rules, &wants, T0),
            Err(VerifyError::MissingScope)
        );
        assert_eq!(
            verify_txn(&sign(&claims()), &keys, &rules, &expect, T0 + 65),
            Err(VerifyError::Expired)
        );
        for (name, value) in [
            ("txn", json!(7)),
            ("req_wl", json!(["gateway"])),
            ("rctx", json!({"req_wl_chain": ["a", 1]})),
            ("tctx", json!("x")),
            ("exp", json!("soon")),
        ] {
            let mut c = claims();
            c[name] = value;
            assert_eq!(
                verify_txn(&sign(&c), &keys, &rules, &expect, T0),
                Err(VerifyError::WrongClaimType(name)),
                "{name}"
            );
        }
        for name in ["txn", "sub", "req_wl", "exp"] {
            let mut c = claims();
            c.as_object_mut().expect("object").remove(name);
            assert_eq!(
                verify_txn(&sign(&c), &keys, &rules, &expect, T0),
                Err(VerifyError::MissingClaim(name)),
                "{name}"
            );
        }
    }
}
