//! THE verification rules of an auth-jit access token: header, key,
//! signature, then every claim. The issuer's verify endpoint and every
//! receiving API that uses this crate run this same code.
//!
//! This is the stateless part. Revocation and single-use consumption need
//! the issuer's store: the issuer applies them after these checks pass, and
//! a receiving API asks the issuer for tokens that need them.

use serde_json::Value;

use crate::binding::{normalize_method, normalize_url};
use crate::claims::{AccessClaims, Actor};
use crate::jws::{Jws, JwsError, VerifyingKey, ACCESS_TOKEN};
use crate::jwt::{check_times, ClaimError, Claims, TimeError};
use crate::types::{Audience, Scope};

/// Finds a verifying key by `kid`.
pub trait KeyLookup {
    /// The key with this `kid`, if the set has it.
    fn find(&self, kid: &str) -> Option<&VerifyingKey>;
}

/// Service-wide rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `iss` must equal this exactly.
    pub issuer: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
}

/// What the verifying party expects of the token.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// The audience the token must be addressed to (`None`: any).
    pub audience: Option<Audience>,
    /// Scopes the token must all carry.
    pub scope: Scope,
    /// The method of the request the token came with (bound tokens).
    pub method: Option<String>,
    /// The URL of the request the token came with (bound tokens).
    pub url: Option<String>,
    /// Leave `htm`/`htu` unchecked (introspection: the caller compares).
    pub skip_binding: bool,
    /// Accept an expired token (revocation by token: signature, issuer and
    /// the other claims must still hold).
    pub ignore_expiry: bool,
}

/// Why a token was refused. Every message is safe to send to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    /// The JWS layer refused it (header, key, signature).
    Jws(#[from] JwsError),
    #[error("the token has expired")]
    /// Expired.
    Expired,
    #[error("the token is not valid yet")]
    /// Not valid yet.
    NotYetValid,
    #[error("the token was issued in the future")]
    /// Issued in the future.
    IssuedInFuture,
    #[error("the token was not issued by this issuer")]
    /// Another `iss`.
    WrongIssuer,
    #[error("the token is not addressed to the expected audience")]
    /// Another `aud`.
    WrongAudience,
    #[error("the token does not carry every required scope")]
    /// A required scope is missing.
    MissingScope,
    #[error("the token is bound to another request method or URL")]
    /// Bound to another method or URL.
    BindingMismatch,
    #[error("the token is bound to a request: give its method and url")]
    /// Bound, and no method and URL were given.
    BindingRequired,
    #[error("the token lacks the `{0}` claim")]
    /// A required claim is absent.
    MissingClaim(&'static str),
    #[error("the `{0}` claim has the wrong type")]
    /// A claim has the wrong JSON type.
    WrongClaimType(&'static str),
    #[error("the token has been revoked")]
    /// Revoked at the issuer.
    Revoked,
    #[error("the single-use token has already been used")]
    /// A single-use token already used.
    AlreadyUsed,
}

/// Verifies `token` at time `now` and returns its claims.
pub fn verify(
    token: &str,
    keys: &impl KeyLookup,
    rules: &Rules,
    expect: &Expectation,
    now: u64,
) -> Result<AccessClaims, VerifyError> {
    let jws = Jws::parse(token, &ACCESS_TOKEN)?;
    verify_jws(&jws, keys, rules, expect, now)
}

/// [`verify`] for a token whose header was already parsed under
/// [`ACCESS_TOKEN`] (a caller that looked at the `kid` first).
pub fn verify_jws(
    jws: &Jws<'_>,
    keys: &impl KeyLookup,
    rules: &Rules,
    expect: &Expectation,
    now: u64,
) -> Result<AccessClaims, VerifyError> {
    let kid = jws.kid.as_deref().unwrap_or_default();
    let key = keys.find(kid).ok_or(JwsError::UnknownKey)?;
    // The key pins the algorithm; the header may only agree with it.
    let map = jws.verify(key)?;
    let claims = read_claims(&Claims(&map))?;
    check_claims(&claims, rules, expect, now)?;
    Ok(claims)
}

fn check_claims(
    claims: &AccessClaims,
    rules: &Rules,
    expect: &Expectation,
    now: u64,
) -> Result<(), VerifyError> {
    if claims.iss != rules.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    let times = check_times(
        claims.exp,
        Some(claims.nbf),
        Some(claims.iat),
        rules.leeway,
        now,
    );
    match times {
        Ok(()) | Err(TimeError::Expired) if expect.ignore_expiry => {}
        result => result?,
    }
    if let Some(aud) = &expect.audience {
        if claims.aud != aud.as_str() {
            return Err(VerifyError::WrongAudience);
        }
    }
    let granted = Scope::parse(claims.scope.as_deref().unwrap_or_default())
        .map_err(|_| VerifyError::WrongClaimType("scope"))?;
    if !expect.scope.is_subset(&granted) {
        return Err(VerifyError::MissingScope);
    }
    match (&claims.htm, &claims.htu) {
        (None, None) => {}
        (Some(_), Some(_)) if expect.skip_binding => {}
        (Some(htm), Some(htu)) => {
            let (Some(method), Some(url)) = (&expect.method, &expect.url) else {
                return Err(VerifyError::BindingRequired);
            };
            let method = normalize_method(method).map_err(|_| VerifyError::BindingMismatch)?;
            let url = normalize_url(url).map_err(|_| VerifyError::BindingMismatch)?;
            if &method != htm || &url != htu {
                return Err(VerifyError::BindingMismatch);
            }
        }
        _ => return Err(VerifyError::MissingClaim("htm/htu")),
    }
    Ok(())
}

impl From<TimeError> for VerifyError {
    fn from(e: TimeError) -> Self {
        match e {
            TimeError::Expired => VerifyError::Expired,
            TimeError::NotYetValid => VerifyError::NotYetValid,
            TimeError::IssuedInFuture => VerifyError::IssuedInFuture,
        }
    }
}

impl From<ClaimError> for VerifyError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Missing(name) => VerifyError::MissingClaim(name),
            ClaimError::WrongType(name) => VerifyError::WrongClaimType(name),
        }
    }
}

/// Reads the claims with their exact JSON types.
fn read_claims(c: &Claims<'_>) -> Result<AccessClaims, VerifyError> {
    let owned = |s: Option<&str>| s.map(str::to_owned);
    Ok(AccessClaims {
        iss: c.str("iss")?.to_owned(),
        sub: c.str("sub")?.to_owned(),
        aud: c.single_audience()?.to_owned(),
        exp: c.number("exp")?,
        iat: c.number("iat")?,
        nbf: c.opt_number("nbf")?.unwrap_or(0),
        jti: c.non_empty_str("jti")?.to_owned(),
        client_id: c.str("client_id")?.to_owned(),
        scope: owned(c.opt_str("scope")?),
        once: c.opt_bool("once")?,
        htm: owned(c.opt_str("htm")?),
        htu: owned(c.opt_str("htu")?),
        act: match c.0.get("act") {
            None => None,
            Some(value) => Some(actor(value, 0)?),
        },
    })
}

/// Reads an `act` chain: objects with a string `sub` and an optional nested
/// `act`, at most 16 deep (the configured cap is far lower; this bound only
/// keeps a hostile token from recursing without end).
fn actor(value: &Value, depth: usize) -> Result<Actor, VerifyError> {
    let Value::Object(map) = value else {
        return Err(VerifyError::WrongClaimType("act"));
    };
    if depth >= 16 {
        return Err(VerifyError::WrongClaimType("act"));
    }
    let Some(Value::String(sub)) = map.get("sub") else {
        return Err(VerifyError::WrongClaimType("act"));
    };
    Ok(Actor {
        sub: sub.clone(),
        act: match map.get("act") {
            None => None,
            Some(inner) => Some(Box::new(actor(inner, depth + 1)?)),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    use super::*;
    use crate::testkit::{Keys, TestKey};

    const ISS: &str = "https://auth.test";
    const T0: u64 = 1_800_000_000;

    struct Fixture {
        key: TestKey,
        keys: Keys,
        clock: AtomicU64,
        rules: Rules,
    }

    fn fixture() -> Fixture {
        let key = TestKey::generate();
        let keys = Keys::of(&key);
        Fixture {
            key,
            keys,
            clock: AtomicU64::new(T0),
            rules: Rules {
                issuer: ISS.into(),
                leeway: 5,
            },
        }
    }

    /// What the issuer grants in these tests: audience `ledger`, scopes
    /// `read write`, `ttl` seconds, optionally bound.
    struct Grant {
        ttl: u64,
        bind: Option<(&'static str, &'static str)>,
    }

    fn grant(ttl: u64) -> Grant {
        Grant { ttl, bind: None }
    }

    fn expect_ledger() -> Expectation {
        Expectation {
            audience: Some(Audience::parse("ledger").expect("aud")),
            ..Expectation::default()
        }
    }

    impl Fixture {
        fn advance(&self, secs: u64) {
            self.clock.fetch_add(secs, Ordering::SeqCst);
        }

        /// Claims as the issuer writes them for client `billing`.
        fn issue(&self, grant: &Grant) -> String {
            let now = self.clock.load(Ordering::SeqCst);
            let mut claims = json!({
                "iss": ISS, "sub": "billing", "aud": "ledger", "exp": now + grant.ttl,
                "iat": now, "nbf": now, "jti": "AAAAAAAAAAAAAAAAAAAAAA", "client_id": "billing",
                "scope": "read write"
            });
            if let Some((htm, htu)) = grant.bind {
                claims["htm"] = htm.into();
                claims["htu"] = htu.into();
            }
            self.key.sign(&claims)
        }

        fn check(&self, token: &str, expect: &Expectation) -> Result<AccessClaims, VerifyError> {
            verify(
                token,
                &self.keys,
                &self.rules,
                expect,
                self.clock.load(Ordering::SeqCst),
            )
        }

        /// Signs arbitrary claims with the real key, as a forger with the
        /// key would; used to probe claim checks behind a valid signature.
        fn sign_raw(&self, claims: Value) -> String {
            self.key.sign(&claims)
        }
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        let f = fixture();
        let token = f.issue(&grant(60));
        let claims = f.check(&token, &expect_ledger()).expect("valid");
        assert_eq!(claims.iss, ISS);
        assert_eq!(claims.sub, "billing");
        assert_eq!(claims.client_id, "billing");
        assert_eq!(claims.aud, "ledger");
        assert_eq!(claims.exp, T0 + 60);
        assert_eq!(claims.iat, T0);
        assert_eq!(claims.nbf, T0);
        assert_eq!(claims.scope.as_deref(), Some("read write"));
    }

    #[test]
    fn expiry_honours_leeway_to_the_second_and_no_more() {
        let f = fixture();
        let token = f.issue(&grant(60));
        f.advance(60 + 4);
        assert!(f.check(&token, &expect_ledger()).is_ok(), "inside leeway");
        f.advance(1);
        assert_eq!(f.check(&token, &expect_ledger()), Err(VerifyError::Expired));
    }

    #[test]
    fn not_before_and_issued_at_honour_leeway() {
        let f = fixture();
        let future = T0 + 10;
        let mut claims = json!({
            "iss": ISS, "sub": "c", "aud": "ledger", "exp": future + 60,
            "iat": T0, "nbf": future, "jti": "j", "client_id": "c"
        });
        let token = f.sign_raw(claims.clone());
        assert_eq!(
            f.check(&token, &expect_ledger()),
            Err(VerifyError::NotYetValid)
        );
        f.advance(5);
        assert!(
            f.check(&token, &expect_ledger()).is_ok(),
            "nbf within leeway"
        );
        claims["nbf"] = T0.into();
        claims["iat"] = (T0 + 100).into();
        let token = f.sign_raw(claims);
        assert_eq!(
            f.check(&token, &expect_ledger()),
            Err(VerifyError::IssuedInFuture)
        );
    }

    #[test]
    fn audience_issuer_and_scope_must_match() {
        let f = fixture();
        let token = f.issue(&grant(60));
        let other = Expectation {
            audience: Some(Audience::parse("payroll").expect("aud")),
            ..Expectation::default()
        };
        assert_eq!(f.check(&token, &other), Err(VerifyError::WrongAudience));
        let wants_admin = Expectation {
            scope: Scope::parse("read admin").expect("scope"),
            ..expect_ledger()
        };
        assert_eq!(
            f.check(&token, &wants_admin),
            Err(VerifyError::MissingScope)
        );
        let wants_read = Expectation {
            scope: Scope::parse("read").expect("scope"),
            ..expect_ledger()
        };
        assert!(f.check(&token, &wants_read).is_ok());
        let strict = Rules {
            issuer: format!("{ISS}/"),
            leeway: 5,
        };
        assert_eq!(
            verify(&token, &f.keys, &strict, &expect_ledger(), T0),
            Err(VerifyError::WrongIssuer)
        );
    }

    #[test]
    fn claims_of_the_wrong_json_type_are_refused() {
        let f = fixture();
        let base = json!({
            "iss": ISS, "sub": "c", "aud": "ledger", "exp": T0 + 60,
            "iat": T0, "nbf": T0, "jti": "j", "client_id": "c"
        });
        for (name, value) in [
            ("exp", Value::from((T0 + 60).to_string())),
            ("nbf", Value::from("0")),
            ("iat", Value::from(-1)),
            ("exp", Value::from(1.5)),
            ("jti", Value::from(7)),
            ("aud", json!(["ledger", "other"])),
            ("once", Value::from("true")),
        ] {
            let mut claims = base.clone();
            claims[name] = value;
            let result = f.check(&f.sign_raw(claims), &expect_ledger());
            assert_eq!(result, Err(VerifyError::WrongClaimType(name)), "{name}");
        }
        for name in ["exp", "iat", "jti", "iss", "aud"] {
            let mut claims = base.clone();
            claims.as_object_mut().expect("object").remove(name);
            let result = f.check(&f.sign_raw(claims), &expect_ledger());
            assert_eq!(result, Err(VerifyError::MissingClaim(name)), "{name}");
        }
    }

    #[test]
    fn the_header_never_chooses_the_algorithm() {
        let f = fixture();
        let token = f.issue(&grant(60));
        let (_, rest) = token.split_once('.').expect("three parts");
        for alg in ["none", "HS256", "RS256", "ES256"] {
            let header = json!({"alg": alg, "typ": "at+jwt", "kid": f.key.kid()});
            let encoded = URL_SAFE_NO_PAD.encode(header.to_string());
            let forged = format!("{encoded}.{rest}");
            assert_eq!(
                f.check(&forged, &expect_ledger()),
                Err(VerifyError::Jws(JwsError::AlgorithmMismatch)),
                "{alg}"
            );
        }
    }

    #[test]
    fn tampered_payload_and_unknown_kid_are_refused() {
        let f = fixture();
        let token = f.issue(&grant(60));
        let parts: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(
            json!({"iss": ISS, "sub": "x", "aud": "ledger", "exp": T0 + 9999,
                "iat": T0, "jti": "j", "client_id": "x"})
            .to_string(),
        );
        let forged = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert_eq!(
            f.check(&forged, &expect_ledger()),
            Err(VerifyError::Jws(JwsError::BadSignature))
        );
        let foreign = TestKey::generate().sign(&json!({"iss": ISS}));
        assert_eq!(
            f.check(&foreign, &expect_ledger()),
            Err(VerifyError::Jws(JwsError::UnknownKey))
        );
    }

    #[test]
    fn bound_tokens_need_the_same_method_and_url() {
        let f = fixture();
        let token = f.issue(&Grant {
            ttl: 60,
            bind: Some(("POST", "https://ledger/pay")),
        });
        let with = |m: Option<&str>, u: Option<&str>| Expectation {
            method: m.map(str::to_owned),
            url: u.map(str::to_owned),
            ..expect_ledger()
        };
        assert!(f
            .check(&token, &with(Some("post"), Some("https://ledger/pay?x=1")))
            .is_ok());
        assert_eq!(
            f.check(&token, &with(Some("GET"), Some("https://ledger/pay"))),
            Err(VerifyError::BindingMismatch)
        );
        assert_eq!(
            f.check(&token, &with(Some("POST"), Some("https://ledger/refund"))),
            Err(VerifyError::BindingMismatch)
        );
        assert_eq!(
            f.check(&token, &with(None, None)),
            Err(VerifyError::BindingRequired)
        );
    }
}
