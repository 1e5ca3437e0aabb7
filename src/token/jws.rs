//! Signing and checking the JWS layer of our tokens (RFC 7515, RFC 9068).
//!
//! `jsonwebtoken` does the cryptography. It does not check `typ`, it ignores
//! `crit`, and it would happily accept header parameters we never emit, so
//! the header is parsed here first, strictly, before any signature work.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The JOSE `typ` of every token we issue (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

/// Tokens longer than this are refused before any parsing: ours are < 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The signature algorithms we sign with. The header of a token never
/// chooses: the key it names does.
///
/// RS256/PS256 are not offered yet: `jsonwebtoken`'s aws-lc backend wants
/// PKCS#1 RSA keys while aws-lc-rs only writes PKCS#8. ES256 serves the
/// verifiers that lack EdDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    EdDSA,
    ES256,
}

impl SigningAlg {
    pub const ALL: [SigningAlg; 2] = [Self::EdDSA, Self::ES256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with a key. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a {0} key")]
    Generate(SigningAlg),
    #[error("the {0} private key is not a valid PKCS#8 document")]
    Invalid(SigningAlg),
}

/// A private signing key with its public half and `kid`.
pub struct SigningKey {
    alg: SigningAlg,
    encoding: EncodingKey,
    header: Header,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key and returns it with its PKCS#8 v1 DER encoding,
    /// which is what the caller persists.
    pub fn generate(alg: SigningAlg) -> Result<(Self, Vec<u8>), KeyError> {
        use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let err = |_| KeyError::Generate(alg);
        let der = match alg {
            SigningAlg::EdDSA => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map_err(err)?
                .as_ref()
                .to_vec(),
            SigningAlg::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map_err(err)?
                .as_ref()
                .to_vec(),
        };
        let key = Self::from_pkcs8(alg, &der)?;
        Ok((key, der))
    }

    /// Loads a key from its PKCS#8 DER encoding.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<Self, KeyError> {
        let encoding = match alg {
            SigningAlg::EdDSA => EncodingKey::from_ed_der(der),
            SigningAlg::ES256 => EncodingKey::from_ec_der(der),
        };
        let mut jwk =
            Jwk::from_encoding_key(&encoding, alg.jwt()).map_err(|_| KeyError::Invalid(alg))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| KeyError::Invalid(alg))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::Invalid(alg))?;
        let mut header = Header::new(alg.jwt());
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(kid.clone());
        let key = Self {
            alg,
            encoding,
            header,
            public: VerifyingKey {
                kid,
                alg,
                decoding,
                jwk,
            },
        };
        // Prove the pair works before anyone relies on it.
        let probe = key
            .sign(&serde_json::json!({"probe": true}))
            .map_err(|_| KeyError::Invalid(alg))?;
        key.public
            .verify_signature(&probe)
            .map_err(|_| KeyError::Invalid(alg))?;
        Ok(key)
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Signs `claims` under a caller-chosen header (tests of other JWT
    /// profiles, such as client assertions).
    #[cfg(test)]
    pub fn sign_with_header<T: Serialize>(
        &self,
        header: &Header,
        claims: &T,
    ) -> Result<String, SignError> {
        jsonwebtoken::encode(header, claims, &self.encoding).map_err(|_| SignError)
    }

    /// Signs `claims` as a compact JWS with `typ: at+jwt` and our `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        jsonwebtoken::encode(&self.header, claims, &self.encoding).map_err(|_| SignError)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

/// A public key that checks signatures; one entry of our JWKS.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    alg: SigningAlg,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public JWK (RFC 7517), with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Checks the signature with this key's algorithm and nothing else, and
    /// returns the payload as a JSON object. Claims are checked by the caller.
    pub fn verify_signature(&self, token: &str) -> Result<Map<String, Value>, JwsError> {
        let mut validation = Validation::new(self.alg.jwt());
        validation.algorithms = vec![self.alg.jwt()];
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwsError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => JwsError::AlgorithmMismatch,
                _ => JwsError::Malformed("the payload is not a JSON object"),
            })
    }
}

/// Why a token failed at the JWS layer. Messages are safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("the token header carries `{0}`, which this issuer never uses and never trusts")]
    ForbiddenHeader(String),
    #[error("the token header marks `crit` extensions, none of which this issuer understands")]
    Critical,
    #[error("the token type must be at+jwt")]
    WrongType,
    #[error("the token was not signed by a key of this issuer")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("the token signature is invalid")]
    BadSignature,
}

/// The header fields we accept, read before any signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: String,
    pub kid: String,
}

/// Parses the protected header strictly: exactly `alg`, `typ` and `kid`.
pub fn parse_header(token: &str) -> Result<TokenHeader, JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed("a JWS compact token has three parts"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwsError::Malformed("the header is not base64url"))?;
    let map: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| JwsError::Malformed("the header is not a JSON object"))?;
    for name in map.keys() {
        match name.as_str() {
            "alg" | "typ" | "kid" => {}
            "crit" => return Err(JwsError::Critical),
            other => return Err(JwsError::ForbiddenHeader(sanitize(other))),
        }
    }
    let typ = map.get("typ").and_then(Value::as_str).unwrap_or_default();
    let typ = typ.to_ascii_lowercase();
    if typ != TOKEN_TYPE && typ != "application/at+jwt" {
        return Err(JwsError::WrongType);
    }
    let (Some(Value::String(alg)), Some(Value::String(kid))) = (map.get("alg"), map.get("kid"))
    else {
        return Err(JwsError::Malformed(
            "the header needs string `alg` and `kid`",
        ));
    };
    Ok(TokenHeader {
        alg: alg.clone(),
        kid: kid.clone(),
    })
}

/// Header names come from the caller; echo only a short, printable form.
fn sanitize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn with_header(h: Value) -> String {
        format!("{}.{}.sig", b64(&h), b64(&serde_json::json!({})))
    }

    #[test]
    fn every_algorithm_signs_and_verifies_and_kid_is_a_thumbprint() {
        for alg in SigningAlg::ALL {
            let (key, der) = SigningKey::generate(alg).expect("generate");
            let token = key.sign(&serde_json::json!({"a": 1})).expect("sign");
            let header = parse_header(&token).expect("header");
            assert_eq!(header.alg, alg.as_str());
            assert_eq!(header.kid, key.kid());
            // RFC 7638 SHA-256 thumbprint, base64url: 43 characters.
            assert_eq!(key.kid().len(), 43);
            let claims = key
                .verifying_key()
                .verify_signature(&token)
                .expect("verify");
            assert_eq!(claims["a"], 1);
            let again = SigningKey::from_pkcs8(alg, &der).expect("reload");
            assert_eq!(again.kid(), key.kid());
        }
    }

    #[test]
    fn a_key_refuses_tokens_of_another_algorithm_or_key() {
        let (ed, _) = SigningKey::generate(SigningAlg::EdDSA).expect("generate");
        let (ed2, _) = SigningKey::generate(SigningAlg::EdDSA).expect("generate");
        let (es, _) = SigningKey::generate(SigningAlg::ES256).expect("generate");
        let token = es.sign(&serde_json::json!({})).expect("sign");
        assert_eq!(
            ed.verifying_key().verify_signature(&token),
            Err(JwsError::AlgorithmMismatch)
        );
        let token = ed2.sign(&serde_json::json!({})).expect("sign");
        assert_eq!(
            ed.verifying_key().verify_signature(&token),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn header_must_be_exactly_alg_typ_kid() {
        let ok = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        assert!(parse_header(&with_header(ok)).is_ok());
        for name in ["jku", "x5u", "x5c", "jwk", "x5t", "cty"] {
            let h = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k", name: "x"});
            assert_eq!(
                parse_header(&with_header(h)),
                Err(JwsError::ForbiddenHeader(name.to_owned()))
            );
        }
        let crit =
            serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k", "crit": ["exp"]});
        assert_eq!(parse_header(&with_header(crit)), Err(JwsError::Critical));
        for typ in [Value::from("JWT"), Value::Null, Value::from(1)] {
            let h = serde_json::json!({"alg": "EdDSA", "typ": typ, "kid": "k"});
            assert_eq!(parse_header(&with_header(h)), Err(JwsError::WrongType));
        }
        let no_typ = serde_json::json!({"alg": "EdDSA", "kid": "k"});
        assert_eq!(parse_header(&with_header(no_typ)), Err(JwsError::WrongType));
        let no_kid = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt"});
        assert!(matches!(
            parse_header(&with_header(no_kid)),
            Err(JwsError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for t in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            &"a".repeat(9000),
        ] {
            assert!(
                matches!(parse_header(t), Err(JwsError::Malformed(_))),
                "{t:?}"
            );
        }
    }
}
