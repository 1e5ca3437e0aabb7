//! The JWS layer (RFC 7515) of every JWT auth-jit signs or checks: its
//! access tokens (RFC 9068) and the client assertions of `private_key_jwt`
//! (RFC 7523). The issuer and this crate share it, so every header rule
//! exists once.
//!
//! Checking parses the protected header strictly (an allow-list of
//! parameters, `crit` refused, `typ` per profile) before any signature
//! work; the key, never the header, fixes the algorithm; the payload is
//! decoded only once the signature holds.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The JOSE `typ` of every access token we issue (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";

/// Tokens longer than this are refused before any parsing: ours are < 2 KiB
/// (an RS4096 signature is 683 characters).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The smallest RSA modulus the issuer signs with and anyone accepts.
pub const MIN_RSA_BITS: usize = 2048;

/// The signature algorithms we sign with and accept. The header of a token
/// never chooses: the key it names does. HS256 is never offered: a shared
/// secret would let every verifier mint tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SigningAlg {
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
}

impl SigningAlg {
    /// Every algorithm, in preference order.
    pub const ALL: [SigningAlg; 4] = [Self::EdDSA, Self::ES256, Self::RS256, Self::PS256];

    /// The JOSE name (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
        }
    }

    /// The algorithm of a JOSE name; `None` for any other (`none`, `HS256`, …).
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }

    /// Whether the key is RSA (RS256 and PS256 share key material).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::RS256 | Self::PS256)
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with a key. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a {0} key")]
    /// The system could not generate a key.
    Generate(SigningAlg),
    #[error("the {0} private key is not a valid PKCS#8 document")]
    /// A stored private key does not parse.
    Invalid(SigningAlg),
    #[error("not a usable public key: {0}")]
    /// A public key (JWK) is unusable, and why.
    BadPublicKey(&'static str),
}

/// A public key that checks signatures of one algorithm: one entry of our
/// JWKS, or a client's registered key.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    alg: SigningAlg,
    parsed: Arc<ParsedPublicKey>,
    /// The public JWK (RFC 7517) with `kid`, `alg` and `use: sig`.
    jwk: Map<String, Value>,
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
    /// Parses a public JWK (Ed25519 OKP, P-256 EC or RSA of at least 2048
    /// bits). Its `alg`, when present, must fit the key; for RSA it chooses
    /// RS256 (the default) or PS256. A private key (`d`, `p`, …) is refused.
    /// The `kid` is the JWK's own, or its RFC 7638 thumbprint.
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        Self::from_jwk_value(jwk, None, false)
    }

    /// The public half of one of the issuer's own keys: `alg` is fixed and
    /// the `kid` is always the RFC 7638 thumbprint.
    pub fn for_signing(jwk: &Value, alg: SigningAlg) -> Result<Self, KeyError> {
        Self::from_jwk_value(jwk, Some(alg), true)
    }

    fn from_jwk_value(
        jwk: &Value,
        want: Option<SigningAlg>,
        thumbprint_kid: bool,
    ) -> Result<Self, KeyError> {
        let Value::Object(map) = jwk else {
            return Err(KeyError::BadPublicKey("not a JSON object"));
        };
        // A key meant for something else than verifying signatures.
        if map.get("use").is_some_and(|u| u != "sig") {
            return Err(KeyError::BadPublicKey("use must be sig"));
        }
        if let Some(ops) = map.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o == "verify"));
            if !verifies {
                return Err(KeyError::BadPublicKey("key_ops must include verify"));
            }
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            if map.contains_key(private) {
                return Err(KeyError::BadPublicKey(
                    "this is a private or symmetric key; register the public key",
                ));
            }
        }
        let text = |name: &'static str| match map.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            _ => Err(KeyError::BadPublicKey("a required JWK member is missing")),
        };
        let bytes = |name: &'static str| {
            text(name).and_then(|s| {
                URL_SAFE_NO_PAD
                    .decode(s)
                    .map_err(|_| KeyError::BadPublicKey("a JWK member is not base64url"))
            })
        };
        let stated = match map.get("alg") {
            None => None,
            Some(Value::String(a)) => Some(SigningAlg::parse(a).ok_or(KeyError::BadPublicKey(
                "alg must be EdDSA, ES256, RS256 or PS256",
            ))?),
            Some(_) => return Err(KeyError::BadPublicKey("alg must be a string")),
        };
        let (inferred, parsed, thumb_input) = match text("kty")? {
            "OKP" => {
                if text("crv")? != "Ed25519" {
                    return Err(KeyError::BadPublicKey("the only OKP curve is Ed25519"));
                }
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err(KeyError::BadPublicKey("an Ed25519 key has 32 bytes"));
                }
                let parsed = ParsedPublicKey::new(&sig::ED25519, &x)
                    .map_err(|_| KeyError::BadPublicKey("not an Ed25519 public key"))?;
                let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, text("x")?);
                (SigningAlg::EdDSA, parsed, thumb)
            }
            "EC" => {
                if text("crv")? != "P-256" {
                    return Err(KeyError::BadPublicKey("the only EC curve is P-256"));
                }
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::BadPublicKey("P-256 coordinates have 32 bytes"));
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let parsed = ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &point)
                    .map_err(|_| KeyError::BadPublicKey("not a point on P-256"))?;
                let thumb = format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    text("x")?,
                    text("y")?
                );
                (SigningAlg::ES256, parsed, thumb)
            }
            "RSA" => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                let first = n.iter().position(|b| *b != 0).unwrap_or(n.len());
                let n = &n[first..];
                let bits = n
                    .first()
                    .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
                if bits < MIN_RSA_BITS {
                    return Err(KeyError::BadPublicKey("RSA keys need at least 2048 bits"));
                }
                let alg = match stated.or(want) {
                    Some(SigningAlg::PS256) => SigningAlg::PS256,
                    _ => SigningAlg::RS256,
                };
                let params: &'static sig::RsaParameters = match alg {
                    SigningAlg::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    _ => &sig::RSA_PKCS1_2048_8192_SHA256,
                };
                let parsed = RsaPublicKeyComponents { n, e: e.as_slice() }
                    .to_parsed_public_key(params)
                    .map_err(|_| KeyError::BadPublicKey("not an RSA public key"))?;
                let thumb = format!(
                    r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                    text("e")?,
                    text("n")?
                );
                (alg, parsed, thumb)
            }
            _ => {
                return Err(KeyError::BadPublicKey(
                    "supported keys: Ed25519, P-256, RSA",
                ))
            }
        };
        let alg = stated.unwrap_or(inferred);
        if alg != inferred && !(alg.is_rsa() && inferred.is_rsa()) {
            return Err(KeyError::BadPublicKey("alg does not fit the key"));
        }
        if want.is_some_and(|w| w != alg) {
            return Err(KeyError::BadPublicKey("alg does not fit the key"));
        }
        let thumbprint = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            thumb_input.as_bytes(),
        ));
        let kid = match map.get("kid") {
            Some(Value::String(k)) if !thumbprint_kid && !k.is_empty() => k.clone(),
            _ => thumbprint,
        };
        let mut public: Map<String, Value> = ["kty", "crv", "x", "y", "n", "e"]
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), map.get(*name)?.clone())))
            .collect();
        public.insert("kid".into(), Value::String(kid.clone()));
        public.insert("alg".into(), Value::String(alg.as_str().into()));
        public.insert("use".into(), Value::String("sig".into()));
        Ok(Self {
            kid,
            alg,
            parsed: Arc::new(parsed),
            jwk: public,
        })
    }

    /// The key id: the JWK's `kid`, or its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key checks.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public JWK (RFC 7517), with `kid`, `alg` and `use: sig`.
    pub fn jwk(&self) -> &Map<String, Value> {
        &self.jwk
    }
}

/// Why a token failed at the JWS layer. Messages are safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed token: {0}")]
    /// Not a compact JWS, or not JSON where JSON belongs.
    Malformed(&'static str),
    #[error("the token header carries `{0}`, which this issuer never uses and never trusts")]
    /// A header parameter outside `alg`, `typ`, `kid`.
    ForbiddenHeader(String),
    #[error("the token header marks `crit` extensions, none of which this issuer understands")]
    /// The header has `crit`.
    Critical,
    #[error("the token type must be {0}")]
    /// The `typ` is not the profile's.
    WrongType(&'static str),
    #[error("the token was not signed by a key of this issuer")]
    /// No key has the `kid`.
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    /// The header's `alg` is not the key's.
    AlgorithmMismatch,
    #[error("the token signature is invalid")]
    /// The signature does not check out.
    BadSignature,
}

/// The header rules of one JWT profile.
#[derive(Debug)]
pub struct Profile {
    /// Accepted `typ` values, lower case (compared case-insensitively).
    pub typ: &'static [&'static str],
    /// Named in errors: the `typ` a token of this profile carries.
    pub typ_name: &'static str,
    /// Whether `typ` must be present.
    pub typ_required: bool,
    /// Whether `kid` must be present.
    pub kid_required: bool,
}

/// Our access tokens: exactly `alg`, `typ: at+jwt` and `kid`.
pub const ACCESS_TOKEN: Profile = Profile {
    typ: &[TOKEN_TYPE, "application/at+jwt"],
    typ_name: TOKEN_TYPE,
    typ_required: true,
    kid_required: true,
};

/// Client assertions (RFC 7523): `typ` absent or `JWT`, `kid` optional.
/// `at+jwt` is refused, so none of our access tokens can pass as one.
pub const CLIENT_ASSERTION: Profile = Profile {
    typ: &["jwt"],
    typ_name: "JWT",
    typ_required: false,
    kid_required: false,
};

/// The JOSE `typ` of a Transaction Token (draft-ietf-oauth-transaction-tokens).
pub const TXN_TOKEN_TYPE: &str = "txntoken+jwt";

/// Transaction Tokens: exactly `alg`, `typ: txntoken+jwt` and `kid`. Our
/// access tokens (`at+jwt`) are refused here, and Txn-Tokens under
/// [`ACCESS_TOKEN`]: neither kind can stand in for the other.
pub const TXN_TOKEN: Profile = Profile {
    typ: &[TXN_TOKEN_TYPE, "application/txntoken+jwt"],
    typ_name: TXN_TOKEN_TYPE,
    typ_required: true,
    kid_required: true,
};

/// Tokens of a trusted external issuer (a company's identity provider):
/// `typ` absent, `JWT` or `at+jwt`, and `kid` required, since the key set
/// is remote. Txn-Tokens are refused.
pub const EXTERNAL_JWT: Profile = Profile {
    typ: &["jwt", "at+jwt", "application/at+jwt"],
    typ_name: "JWT",
    typ_required: false,
    kid_required: true,
};

/// A compact JWS whose header passed its profile; nothing is trusted yet.
/// Its `Debug` shows the header's `alg` and `kid` only: the rest is the
/// token, a credential.
pub struct Jws<'a> {
    /// `None` when the header names an algorithm we never use (`none`,
    /// `HS256`, …): no key matches it.
    pub alg: Option<SigningAlg>,
    /// The `kid` the header names.
    pub kid: Option<String>,
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl fmt::Debug for Jws<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jws")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl<'a> Jws<'a> {
    /// Splits `token` and checks its protected header against `profile`:
    /// only `alg`, `typ` and `kid`, `crit` refused, string types.
    pub fn parse(token: &'a str, profile: &Profile) -> Result<Self, JwsError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwsError::Malformed("token too long"));
        }
        let mut parts = token.splitn(4, '.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("a JWS compact token has three parts"));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwsError::Malformed("the header is not base64url"))?;
        let map = json_object(&bytes).map_err(|e| match e {
            ObjectError::Duplicate => JwsError::Malformed("a header parameter is repeated"),
            ObjectError::Invalid => JwsError::Malformed("the header is not a JSON object"),
        })?;
        for name in map.keys() {
            match name.as_str() {
                "alg" | "typ" | "kid" => {}
                "crit" => return Err(JwsError::Critical),
                other => return Err(JwsError::ForbiddenHeader(sanitize(other))),
            }
        }
        match map.get("typ") {
            None if !profile.typ_required => {}
            Some(Value::String(typ)) if profile.typ.iter().any(|t| t.eq_ignore_ascii_case(typ)) => {
            }
            _ => return Err(JwsError::WrongType(profile.typ_name)),
        }
        let Some(Value::String(alg)) = map.get("alg") else {
            return Err(JwsError::Malformed("the header needs a string `alg`"));
        };
        let kid = match map.get("kid") {
            Some(Value::String(kid)) => Some(kid.clone()),
            None if !profile.kid_required => None,
            _ => return Err(JwsError::Malformed("the header needs a string `kid`")),
        };
        Ok(Self {
            alg: SigningAlg::parse(alg),
            kid,
            signing_input: &token[..header.len() + 1 + payload.len()],
            payload,
            signature,
        })
    }

    /// Checks the signature with `key` (whose algorithm the header must
    /// name) and returns the payload as a JSON object. Claims are checked
    /// by the caller.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Map<String, Value>, JwsError> {
        if self.alg != Some(key.alg) {
            return Err(JwsError::AlgorithmMismatch);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| JwsError::BadSignature)?;
        key.parsed
            .verify_sig(self.signing_input.as_bytes(), &signature)
            .map_err(|_| JwsError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| JwsError::Malformed("the payload is not base64url"))?;
        json_object(&payload).map_err(|e| match e {
            ObjectError::Duplicate => JwsError::Malformed("a claim is repeated"),
            ObjectError::Invalid => JwsError::Malformed("the payload is not a JSON object"),
        })
    }
}

enum ObjectError {
    Duplicate,
    Invalid,
}

/// A JSON object whose member names are unique. serde_json keeps the last
/// of two equal names; another parser may keep the first, so a repeated
/// name could mean different things to us and to a verifier downstream.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = Option<Map<String, Value>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut access: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map = Map::new();
            while let Some((name, value)) = access.next_entry::<String, Value>()? {
                if map.insert(name, value).is_some() {
                    return Ok(None);
                }
            }
            Ok(Some(map))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed =
        serde::Deserializer::deserialize_map(&mut de, Unique).map_err(|_| ObjectError::Invalid)?;
    de.end().map_err(|_| ObjectError::Invalid)?;
    parsed.ok_or(ObjectError::Duplicate)
}

/// Reads the payload of a JWS without checking anything: only to find the
/// key that will check it (a client assertion's `iss`).
pub fn unverified_payload(token: &str) -> Option<Map<String, Value>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
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
    use serde_json::json;

    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn with_header(h: Value) -> String {
        format!("{}.{}.sig", b64(&h), b64(&json!({})))
    }

    fn parse(token: &str) -> Result<Jws<'_>, JwsError> {
        Jws::parse(token, &ACCESS_TOKEN)
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1: the example RSA key and its thumbprint.
        let jwk = json!({"kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB"});
        let key = VerifyingKey::from_jwk(&jwk).expect("rsa jwk");
        assert_eq!(key.kid(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(key.alg(), SigningAlg::RS256);
    }

    #[test]
    fn header_must_be_exactly_alg_typ_kid() {
        let ok = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        assert!(parse(&with_header(ok)).is_ok());
        for name in ["jku", "x5u", "x5c", "jwk", "x5t", "cty"] {
            let h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k", name: "x"});
            assert_eq!(
                parse(&with_header(h)).map(|_| ()),
                Err(JwsError::ForbiddenHeader(name.to_owned()))
            );
        }
        let crit = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k", "crit": ["exp"]});
        assert_eq!(
            parse(&with_header(crit)).map(|_| ()),
            Err(JwsError::Critical)
        );
        for typ in [Value::from("JWT"), Value::Null, Value::from(1)] {
            let h = json!({"alg": "EdDSA", "typ": typ, "kid": "k"});
            assert_eq!(
                parse(&with_header(h)).map(|_| ()),
                Err(JwsError::WrongType(TOKEN_TYPE))
            );
        }
        let no_typ = json!({"alg": "EdDSA", "kid": "k"});
        assert_eq!(
            parse(&with_header(no_typ)).map(|_| ()),
            Err(JwsError::WrongType(TOKEN_TYPE))
        );
        let no_kid = json!({"alg": "EdDSA", "typ": "at+jwt"});
        assert!(matches!(
            parse(&with_header(no_kid)),
            Err(JwsError::Malformed(_))
        ));
        // The assertion profile: typ JWT or none, kid optional, at+jwt refused.
        let plain = json!({"alg": "EdDSA"});
        assert!(Jws::parse(&with_header(plain), &CLIENT_ASSERTION).is_ok());
        let at = json!({"alg": "EdDSA", "typ": "at+jwt"});
        assert_eq!(
            Jws::parse(&with_header(at), &CLIENT_ASSERTION).map(|_| ()),
            Err(JwsError::WrongType("JWT"))
        );
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
            assert!(matches!(parse(t), Err(JwsError::Malformed(_))), "{t:?}");
        }
    }

    #[test]
    fn private_symmetric_and_weak_keys_are_refused() {
        for jwk in [
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}),
            json!({"kty":"oct","k":"c2VjcmV0"}),
            json!({"kty":"RSA","n":"AQAB","e":"AQAB"}),
            json!({"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"ES256"}),
            json!("not an object"),
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"enc"}),
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","key_ops":["encrypt"]}),
        ] {
            assert!(VerifyingKey::from_jwk(&jwk).is_err(), "{jwk}");
        }
    }
}
