//! Client assertions (RFC 7523 `private_key_jwt`): a client registered with
//! a public key proves its identity with a short-lived JWT it signs itself.
//!
//! As with our own tokens, the header is read strictly before any signature
//! work, the registered key pins the algorithm, and every claim is checked
//! with its JSON type. Replay (`jti` reuse) needs the store and is checked
//! by the caller.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The longest an assertion may live: stock clients (Authlib) use one hour.
pub const MAX_LIFETIME: u64 = 3600;

/// The algorithms a client key may use.
pub const CLIENT_ALGS: [&str; 3] = ["EdDSA", "ES256", "RS256"];

/// A client's registered public key.
#[derive(Clone)]
pub struct ClientKey {
    alg: Algorithm,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
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

impl ClientKey {
    /// Parses a public JWK (JSON). A private key is refused: the server must
    /// never hold a client's private key.
    pub fn from_jwk_json(text: &str) -> Result<Self, AssertionError> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| AssertionError::BadKey("not JSON"))?;
        if value.get("d").is_some() || value.get("p").is_some() {
            return Err(AssertionError::BadKey(
                "this is a private key; register the public key",
            ));
        }
        let jwk: Jwk =
            serde_json::from_value(value).map_err(|_| AssertionError::BadKey("not a JWK"))?;
        Self::from_jwk(jwk)
    }

    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of any supported type.
    pub fn from_pem(pem: &[u8]) -> Result<Self, AssertionError> {
        let candidates = [
            (DecodingKey::from_ed_pem(pem), Algorithm::EdDSA),
            (DecodingKey::from_ec_pem(pem), Algorithm::ES256),
            (DecodingKey::from_rsa_pem(pem), Algorithm::RS256),
        ];
        for (key, alg) in candidates {
            if let Ok(key) = key {
                let jwk = Jwk::from_decoding_key(&key, Some(alg))
                    .map_err(|_| AssertionError::BadKey("unsupported key"))?;
                return Self::from_jwk(jwk);
            }
        }
        Err(AssertionError::BadKey(
            "expected a PEM public key (Ed25519, P-256 or RSA) or a public JWK",
        ))
    }

    fn from_jwk(mut jwk: Jwk) -> Result<Self, AssertionError> {
        let inferred = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            _ => {
                return Err(AssertionError::BadKey(
                    "supported keys: Ed25519, P-256, RSA",
                ))
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => inferred,
            Some(KeyAlgorithm::EdDSA) if inferred == Algorithm::EdDSA => Algorithm::EdDSA,
            Some(KeyAlgorithm::ES256) if inferred == Algorithm::ES256 => Algorithm::ES256,
            Some(KeyAlgorithm::RS256) if inferred == Algorithm::RS256 => Algorithm::RS256,
            Some(_) => {
                return Err(AssertionError::BadKey(
                    "alg must be EdDSA, ES256 or RS256 and fit the key",
                ))
            }
        };
        if let AlgorithmParameters::RSA(p) = &jwk.algorithm {
            let bits = URL_SAFE_NO_PAD
                .decode(&p.n)
                .ok()
                .and_then(|n| {
                    let first = n.iter().position(|b| *b != 0)?;
                    Some((n.len() - first) * 8 - n[first].leading_zeros() as usize)
                })
                .unwrap_or(0);
            if bits < 2048 {
                return Err(AssertionError::BadKey("RSA keys need at least 2048 bits"));
            }
        }
        jwk.common.key_algorithm = Some(match alg {
            Algorithm::EdDSA => KeyAlgorithm::EdDSA,
            Algorithm::ES256 => KeyAlgorithm::ES256,
            _ => KeyAlgorithm::RS256,
        });
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|_| AssertionError::BadKey("unusable key"))?;
        Ok(Self { alg, decoding, jwk })
    }

    /// The JWK as stored in the clients file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.jwk).unwrap_or_default()
    }

    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            _ => "RS256",
        }
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
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let map: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    map.get("iss")?.as_str().map(str::to_owned)
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
    if jwt.len() > super::jws::MAX_TOKEN_LEN {
        return Err(AssertionError::Malformed("too long"));
    }
    let header = jwt.split('.').next().unwrap_or_default();
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AssertionError::Malformed("header"))?;
    for (name, value) in &header {
        match name.as_str() {
            "alg" | "kid" => {}
            "typ"
                if value
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case("JWT")) => {}
            _ => return Err(AssertionError::ForbiddenHeader),
        }
    }
    let expected_alg = serde_json::to_value(key.alg).ok();
    if header.get("alg") != expected_alg.as_ref() {
        return Err(AssertionError::AlgorithmMismatch);
    }
    let mut validation = Validation::new(key.alg);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key.decoding, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AssertionError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AssertionError::AlgorithmMismatch,
            _ => AssertionError::Malformed("payload"),
        })?
        .claims;
    let text = |name: &'static str| match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(AssertionError::Claim(name)),
    };
    let number = |name: &'static str| match claims.get(name) {
        Some(Value::Number(n)) => n.as_u64().ok_or(AssertionError::Claim(name)),
        _ => Err(AssertionError::Claim(name)),
    };
    if text("iss")? != client_id || text("sub")? != client_id {
        return Err(AssertionError::WrongSubject);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(items)) => items
            .iter()
            .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => return Err(AssertionError::Claim("aud")),
    };
    if !aud_ok {
        return Err(AssertionError::WrongAudience);
    }
    let exp = number("exp")?;
    if now >= exp.saturating_add(leeway) {
        return Err(AssertionError::Expired);
    }
    if exp > now.saturating_add(MAX_LIFETIME).saturating_add(leeway) {
        return Err(AssertionError::TooLongLived);
    }
    if claims.contains_key("nbf") && number("nbf")? > now.saturating_add(leeway) {
        return Err(AssertionError::NotYetValid);
    }
    if claims.contains_key("iat") && number("iat")? > now.saturating_add(leeway) {
        return Err(AssertionError::NotYetValid);
    }
    let jti = text("jti")?;
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
        let (signer, _) = SigningKey::generate(alg).expect("key");
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
        for alg in [SigningAlg::EdDSA, SigningAlg::ES256] {
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

    /// Signs `claims` under an arbitrary header with the signer's key, by
    /// signing the exact bytes through jsonwebtoken's header API.
    fn resign(signer: &SigningKey, header: &Value, claims: &Value) -> String {
        let mut h: jsonwebtoken::Header = serde_json::from_value(header.clone()).expect("header");
        h.kid = None;
        signer.sign_with_header(&h, claims).expect("sign")
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
