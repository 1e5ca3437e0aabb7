//! Signing: the issuer's half of the JWS layer. The checking half (header
//! rules, public keys, signature checks) is `auth_jit_verifier::jws`, which
//! receiving APIs use too; it is re-exported here so the token domain reads
//! as one module.
//!
//! Signing holds parsed aws-lc-rs key pairs and a pre-encoded header, so a
//! token costs one JSON serialization and one signature: the key is never
//! re-parsed.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};

pub use auth_jit_verifier::jws::{
    unverified_payload, Jws, JwsError, KeyError, Profile, SigningAlg, VerifyingKey, ACCESS_TOKEN,
    CLIENT_ASSERTION, EXTERNAL_JWT, MAX_TOKEN_LEN, MIN_RSA_BITS, TOKEN_TYPE, TXN_TOKEN,
    TXN_TOKEN_TYPE,
};

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key, parsed once, with its public half and `kid`.
pub struct SigningKey {
    alg: SigningAlg,
    pair: Pair,
    /// base64url of `{"alg":…,"typ":"at+jwt","kid":…}`: constant per key.
    header: String,
    /// The same with `"typ":"txntoken+jwt"`, for Transaction Tokens.
    txn_header: String,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.public.kid())
            .finish_non_exhaustive()
    }
}

/// A fresh key with the PKCS#8 v1 DER document the caller persists
/// (encrypted where it leaves the process).
pub struct GeneratedKey {
    pub key: SigningKey,
    pub pkcs8: Vec<u8>,
}

impl SigningKey {
    /// Generates a key; `rsa_bits` (2048, 3072 or 4096) matters for RSA only.
    pub fn generate(alg: SigningAlg, rsa_bits: usize) -> Result<GeneratedKey, KeyError> {
        let err = |_| KeyError::Generate(alg);
        let pkcs8 = match alg {
            SigningAlg::EdDSA => Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map_err(err)?
                .as_ref()
                .to_vec(),
            SigningAlg::ES256 => EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map_err(err)?
                .as_ref()
                .to_vec(),
            SigningAlg::RS256 | SigningAlg::PS256 => {
                let size = match rsa_bits {
                    2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                    _ => return Err(KeyError::Generate(alg)),
                };
                RsaKeyPair::generate(size)
                    .and_then(|k| k.as_der())
                    .map_err(err)?
                    .as_ref()
                    .to_vec()
            }
        };
        let key = Self::from_pkcs8(alg, &pkcs8)?;
        Ok(GeneratedKey { key, pkcs8 })
    }

    /// Loads a key from its PKCS#8 DER document and proves the pair works
    /// (one signature, checked with the public half) before anyone relies
    /// on it.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<Self, KeyError> {
        let bad = |_| KeyError::Invalid(alg);
        let (pair, jwk) = match alg {
            SigningAlg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(der).map_err(bad)?;
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                (
                    Pair::Ed(pair),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                )
            }
            SigningAlg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(bad)?;
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(KeyError::Invalid(alg));
                }
                let jwk = json!({"kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
                (Pair::Ec(pair), jwk)
            }
            SigningAlg::RS256 | SigningAlg::PS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(bad)?;
                if pair.public_modulus_len() * 8 < MIN_RSA_BITS {
                    return Err(KeyError::Invalid(alg));
                }
                let public = pair.public_key();
                let jwk = json!({"kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero())});
                (Pair::Rsa(pair), jwk)
            }
        };
        let public = VerifyingKey::for_signing(&jwk, alg).map_err(|_| KeyError::Invalid(alg))?;
        let header = |typ: &str| {
            URL_SAFE_NO_PAD
                .encode(json!({"alg": alg.as_str(), "typ": typ, "kid": public.kid()}).to_string())
        };
        let key = Self {
            alg,
            pair,
            header: header(TOKEN_TYPE),
            txn_header: header(TXN_TOKEN_TYPE),
            public,
        };
        let probe = key
            .sign(&json!({"probe": true}))
            .map_err(|_| KeyError::Invalid(alg))?;
        Jws::parse(&probe, &ACCESS_TOKEN)
            .and_then(|jws| jws.verify(&key.public))
            .map_err(|_| KeyError::Invalid(alg))?;
        Ok(key)
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Signs `claims` as a compact JWS with `typ: at+jwt` and our `kid`.
    pub fn sign<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, SignError> {
        self.sign_encoded(&self.header, claims)
    }

    /// Signs `claims` as a Transaction Token: `typ: txntoken+jwt`, our `kid`.
    pub fn sign_txn<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, SignError> {
        self.sign_encoded(&self.txn_header, claims)
    }

    /// Signs `claims` under a caller-chosen protected header (other JWT
    /// profiles, and tests that forge headers with a real key).
    pub fn sign_with_header<T: Serialize + ?Sized>(
        &self,
        header: &Map<String, Value>,
        claims: &T,
    ) -> Result<String, SignError> {
        let header = serde_json::to_vec(header).map_err(|_| SignError)?;
        self.sign_encoded(&URL_SAFE_NO_PAD.encode(header), claims)
    }

    fn sign_encoded<T: Serialize + ?Sized>(
        &self,
        header_b64: &str,
        claims: &T,
    ) -> Result<String, SignError> {
        let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
        let mut out = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 700);
        out.push_str(header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let rng = SystemRandom::new();
        let signature: Vec<u8> = match &self.pair {
            Pair::Ed(pair) => pair.sign(out.as_bytes()).as_ref().to_vec(),
            Pair::Ec(pair) => pair
                .sign(&rng, out.as_bytes())
                .map_err(|_| SignError)?
                .as_ref()
                .to_vec(),
            Pair::Rsa(pair) => {
                let padding: &'static dyn sig::RsaEncoding = match self.alg {
                    SigningAlg::PS256 => &sig::RSA_PSS_SHA256,
                    _ => &sig::RSA_PKCS1_SHA256,
                };
                let mut buf = vec![0u8; pair.public_modulus_len()];
                pair.sign(padding, &rng, out.as_bytes(), &mut buf)
                    .map_err(|_| SignError)?;
                buf
            }
        };
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut out);
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn parse(token: &str) -> Result<Jws<'_>, JwsError> {
        Jws::parse(token, &ACCESS_TOKEN)
    }

    #[test]
    fn every_algorithm_signs_and_verifies_and_kid_is_a_thumbprint() {
        for alg in SigningAlg::ALL {
            let generated = SigningKey::generate(alg, 2048).expect("generate");
            let key = &generated.key;
            let token = key.sign(&json!({"a": 1})).expect("sign");
            let jws = parse(&token).expect("header");
            assert_eq!(jws.alg, Some(alg));
            assert_eq!(jws.kid.as_deref(), Some(key.kid()));
            // RFC 7638 SHA-256 thumbprint, base64url: 43 characters.
            assert_eq!(key.kid().len(), 43);
            let claims = jws.verify(key.verifying_key()).expect("verify");
            assert_eq!(claims["a"], 1);
            let again = SigningKey::from_pkcs8(alg, &generated.pkcs8).expect("reload");
            assert_eq!(again.kid(), key.kid());
            // The published JWK round-trips to the same key and kid.
            let jwk = Value::Object(key.verifying_key().jwk().clone());
            let public = VerifyingKey::from_jwk(&jwk).expect("jwk");
            assert_eq!(public.kid(), key.kid());
            assert_eq!(public.alg(), alg);
            assert!(jws.verify(&public).is_ok());
        }
    }

    #[test]
    fn a_key_refuses_tokens_of_another_algorithm_or_key() {
        let ed = SigningKey::generate(SigningAlg::EdDSA, 2048)
            .expect("generate")
            .key;
        let ed2 = SigningKey::generate(SigningAlg::EdDSA, 2048)
            .expect("generate")
            .key;
        let es = SigningKey::generate(SigningAlg::ES256, 2048)
            .expect("generate")
            .key;
        let token = es.sign(&json!({})).expect("sign");
        assert_eq!(
            parse(&token).and_then(|j| j.verify(ed.verifying_key())),
            Err(JwsError::AlgorithmMismatch)
        );
        let token = ed2.sign(&json!({})).expect("sign");
        assert_eq!(
            parse(&token).and_then(|j| j.verify(ed.verifying_key())),
            Err(JwsError::BadSignature)
        );
        // RS256 and PS256 share a key type, never a key.
        let rs = SigningKey::generate(SigningAlg::RS256, 2048)
            .expect("generate")
            .key;
        let mut jwk = rs.verifying_key().jwk().clone();
        jwk.insert("alg".into(), "PS256".into());
        let as_pss = VerifyingKey::from_jwk(&Value::Object(jwk)).expect("pss view");
        let token = rs.sign(&json!({})).expect("sign");
        assert_eq!(
            parse(&token).and_then(|j| j.verify(&as_pss)),
            Err(JwsError::AlgorithmMismatch)
        );
    }

    #[test]
    fn repeated_names_are_refused_in_header_and_payload() {
        let key = SigningKey::generate(SigningAlg::EdDSA, 2048)
            .expect("key")
            .key;
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"x","kid":"{}"}}"#,
            key.kid()
        );
        let token = format!("{}.{}.sig", URL_SAFE_NO_PAD.encode(header), b64(&json!({})));
        assert_eq!(
            parse(&token).map(|_| ()),
            Err(JwsError::Malformed("a header parameter is repeated"))
        );
        // A payload with `sub` twice, signed with the real key.
        let good = key.sign(&json!({})).expect("sign");
        let head = good.split('.').next().expect("header");
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"a","sub":"b"}"#);
        let input = format!("{head}.{payload}");
        let forged_sig = match &key.pair {
            Pair::Ed(pair) => URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref()),
            _ => unreachable!(),
        };
        let token = format!("{input}.{forged_sig}");
        assert_eq!(
            parse(&token).and_then(|j| j.verify(key.verifying_key())),
            Err(JwsError::Malformed("a claim is repeated"))
        );
    }
}
