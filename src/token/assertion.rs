//! Client assertions (RFC 7523 `private_key_jwt`): a client registered with
//! a public key proves its identity with a short-lived JWT it signs itself.
//!
//! The JWS layer (header strictness, the registered key pinning the
//! algorithm) is [`super::jws`]'s, under the client-assertion profile; the
//! claims are read by [`super::jwt`]'s typed readers. Replay (`jti` reuse)
//! needs the store and is checked by the caller.

use serde_json::Value;

use super::jws::{Jws, JwsError, KeyError, SigningAlg, VerifyingKey, CLIENT_ASSERTION};
use super::jwt::{check_times, ClaimError, Claims, TimeError};

/// The longest an assertion may live: stock clients (Authlib) use one hour.
pub const MAX_LIFETIME: u64 = 3600;

/// The algorithms a client key may use (RFC 8414 metadata lists them): all
/// of ours.
pub const CLIENT_ALGS: [SigningAlg; 4] = SigningAlg::ALL;

/// A client's registered public key. Its algorithm is fixed at
/// registration: an assertion must name exactly that one.
#[derive(Debug, Clone)]
pub struct ClientKey {
    key: VerifyingKey,
}

/// Why a key or an assertion was refused. Safe to log; never sent to the
/// caller, who only learns `invalid_client`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("not a usable public key: {0}")]
    BadKey(&'static str),
    #[error("malformed assertion: {0}")]
    Malformed(&'static str),
    #[error("assertion header carries a forbidden or unknown parameter")]
    ForbiddenHeader,
    #[error("assertion algorithm does not match the registered key")]
    AlgorithmMismatch,
    #[error("assertion signature is invalid")]
    BadSignature,
    #[error("assertion iss and sub must both be the client id")]
    WrongSubject,
    #[error("assertion aud is not this server")]
    WrongAudience,
    #[error("assertion has expired")]
    Expired,
    #[error("assertion lives longer than one hour")]
    TooLongLived,
    #[error("assertion is not valid yet")]
    NotYetValid,
    #[error("assertion claim `{0}` is missing or has the wrong type")]
    Claim(&'static str),
}

impl From<JwsError> for AssertionError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Malformed(what) => Self::Malformed(what),
            JwsError::ForbiddenHeader(_) | JwsError::Critical | JwsError::WrongType(_) => {
                Self::ForbiddenHeader
            }
            JwsError::AlgorithmMismatch | JwsError::UnknownKey => Self::AlgorithmMismatch,
            JwsError::BadSignature => Self::BadSignature,
        }
    }
}

impl From<ClaimError> for AssertionError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::Missing(name) | ClaimError::WrongType(name) => Self::Claim(name),
        }
    }
}

impl From<KeyError> for AssertionError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::BadPublicKey(what) => Self::BadKey(what),
            KeyError::Generate(_) | KeyError::Invalid(_) => Self::BadKey("unusable key"),
        }
    }
}

impl ClientKey {
    /// Parses a public JWK (JSON). A private key is refused: the server must
    /// never hold a client's private key.
    pub fn from_jwk_json(text: &str) -> Result<Self, AssertionError> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| AssertionError::BadKey("not JSON"))?;
        Ok(Self {
            key: VerifyingKey::from_jwk(&value)?,
        })
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo): Ed25519, P-256 or
    /// RSA (registered for RS256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, AssertionError> {
        use jsonwebtoken::jwk::Jwk;
        use jsonwebtoken::{Algorithm, DecodingKey};
        let candidates = [
            (DecodingKey::from_ed_pem(pem), Algorithm::EdDSA),
            (DecodingKey::from_ec_pem(pem), Algorithm::ES256),
            (DecodingKey::from_rsa_pem(pem), Algorithm::RS256),
        ];
        for (key, alg) in candidates {
            if let Ok(key) = key {
                let jwk = Jwk::from_decoding_key(&key, Some(alg))
                    .ok()
                    .and_then(|jwk| serde_json::to_value(jwk).ok())
                    .ok_or(AssertionError::BadKey("unsupported key"))?;
                return Ok(Self {
                    key: VerifyingKey::from_jwk(&jwk)?,
                });
            }
        }
        Err(AssertionError::BadKey(
            "expected a PEM public key (Ed25519, P-256 or RSA) or a public JWK",
        ))
    }

    /// The JWK as stored in the clients file.
    pub fn to_json(&self) -> String {
        Value::Object(self.key.jwk().clone()).to_string()
    }

    pub fn alg_name(&self) -> &'static str {
        self.key.alg().as_str()
    }
}

/// A verified assertion: what the replay check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    pub exp: u64,
}

/// Reads the claimed client (`iss`) of an assertion without verifying it,
/// to find the key to verify it with.
pub fn claimed_client(jwt: &str) -> Option<String> {
    match super::jws::unverified_payload(jwt)?.get("iss")? {
        Value::String(iss) => Some(iss.clone()),
        _ => None,
    }
}

/// Verifies an assertion of `client_id`, signed with `key`, addressed to
/// one of `audiences`, at time `now`.
pub fn verify(
    jwt: &str,
    key: &ClientKey,
    client_id: &str,
    audiences: &[String],
    leeway: u64,
    now: u64,
) -> Result<VerifiedAssertion, AssertionError> {
    let map = Jws::parse(jwt, &CLIENT_ASSERTION)?.verify(&key.key)?;
    let claims = Claims(&map);
    let nonempty = |name: &'static str| claims.non_empty_str(name).map_err(AssertionError::from);
    if nonempty("iss")? != client_id || nonempty("sub")? != client_id {
        return Err(AssertionError::WrongSubject);
    }
    if !claims.audience_in(audiences)? {
        return Err(AssertionError::WrongAudience);
    }
    let exp = claims.number("exp")?;
    match check_times(
        exp,
        claims.opt_number("nbf")?,
        claims.opt_number("iat")?,
        leeway,
        now,
    ) {
        Ok(()) => {}
        Err(TimeError::Expired) => return Err(AssertionError::Expired),
        Err(TimeError::NotYetValid | TimeError::IssuedInFuture) => {
            return Err(AssertionError::NotYetValid)
        }
    }
    if exp > now.saturating_add(MAX_LIFETIME).saturating_add(leeway) {
        return Err(AssertionError::TooLongLived);
    }
    let jti = nonempty("jti")?;
    if jti.len() > 256 {
        return Err(AssertionError::Claim("jti"));
    }
    Ok(VerifiedAssertion {
        jti: jti.to_owned(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::jws::{SigningAlg, SigningKey};

    const AUD: &str = "https://auth.test/oauth/token";
    const NOW: u64 = 1_800_000_000;

    /// A client key pair: our own signer stands in for the client's JWT
    /// library; only its public JWK is registered.
    fn client(alg: SigningAlg) -> (SigningKey, ClientKey) {
        let signer = SigningKey::generate(alg, 2048).expect("key").key;
        let jwk = serde_json::to_string(signer.verifying_key().jwk()).expect("jwk");
        (signer, ClientKey::from_jwk_json(&jwk).expect("client key"))
    }

    fn assertion(signer: &SigningKey, claims: Value) -> String {
        signer.sign(&claims).expect("sign")
    }

    fn claims() -> Value {
        serde_json::json!({"iss": "svc", "sub": "svc", "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "j1"})
    }

    fn check(jwt: &str, key: &ClientKey) -> Result<VerifiedAssertion, AssertionError> {
        verify(jwt, key, "svc", &[AUD.to_owned()], 5, NOW)
    }

    #[test]
    fn a_good_assertion_verifies_with_either_algorithm() {
        for alg in SigningAlg::ALL {
            let (signer, key) = client(alg);
            // Our signer writes typ at+jwt; clients write JWT or nothing,
            // so re-sign with a plain header.
            let header = serde_json::json!({"alg": alg.as_str(), "typ": "JWT"});
            let jwt = resign(&signer, &header, &claims());
            let ok = check(&jwt, &key).expect("valid");
            assert_eq!(ok.jti, "j1");
            assert_eq!(claimed_client(&jwt).as_deref(), Some("svc"));
            let strict = assertion(&signer, claims());
            assert_eq!(
                check(&strict, &key),
                Err(AssertionError::ForbiddenHeader),
                "typ at+jwt is not an assertion"
            );
        }
    }

    /// Signs `claims` under an arbitrary header with the signer's key.
    fn resign(signer: &SigningKey, header: &Value, claims: &Value) -> String {
        let header = header.as_object().expect("header object");
        signer.sign_with_header(header, claims).expect("sign")
    }

    #[test]
    fn refusals() {
        let (signer, key) = client(SigningAlg::EdDSA);
        let plain = serde_json::json!({"alg": "EdDSA"});
        let cases: Vec<(Value, AssertionError)> = vec![
            (
                serde_json::json!({"sub": "other"}),
                AssertionError::WrongSubject,
            ),
            (
                serde_json::json!({"aud": "https://elsewhere"}),
                AssertionError::WrongAudience,
            ),
            (
                serde_json::json!({"exp": NOW - 10}),
                AssertionError::Expired,
            ),
            (
                serde_json::json!({"exp": NOW + 3700}),
                AssertionError::TooLongLived,
            ),
            (
                serde_json::json!({"exp": (NOW + 60).to_string()}),
                AssertionError::Claim("exp"),
            ),
            (serde_json::json!({"jti": 5}), AssertionError::Claim("jti")),
            (
                serde_json::json!({"nbf": NOW + 60}),
                AssertionError::NotYetValid,
            ),
        ];
        for (patch, expected) in cases {
            let mut c = claims();
            for (k, v) in patch.as_object().expect("object") {
                c[k] = v.clone();
            }
            assert_eq!(
                check(&resign(&signer, &plain, &c), &key),
                Err(expected.clone()),
                "{patch}"
            );
        }
        let (other, _) = client(SigningAlg::EdDSA);
        assert_eq!(
            check(&resign(&other, &plain, &claims()), &key),
            Err(AssertionError::BadSignature)
        );
        let (es, _) = client(SigningAlg::ES256);
        let es_header = serde_json::json!({"alg": "ES256"});
        assert_eq!(
            check(&resign(&es, &es_header, &claims()), &key),
            Err(AssertionError::AlgorithmMismatch)
        );
    }

    #[test]
    fn private_keys_and_odd_keys_are_refused() {
        assert!(ClientKey::from_jwk_json(r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#).is_err());
        assert!(ClientKey::from_jwk_json(r#"{"kty":"oct","k":"c2VjcmV0"}"#).is_err());
        assert!(ClientKey::from_jwk_json("not json").is_err());
        assert!(ClientKey::from_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }
}
