//! A signer for this crate's unit tests: an Ed25519 key that signs claims
//! under the issuer's header (`alg`, `typ: at+jwt`, `kid`).

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use std::collections::HashMap;

use crate::jws::{SigningAlg, VerifyingKey};
use crate::rules::KeyLookup;

/// A key set of test keys, by `kid`.
pub struct Keys(HashMap<String, VerifyingKey>);

impl Keys {
    pub fn of(key: &TestKey) -> Self {
        Self(HashMap::from([(key.kid().to_owned(), key.public())]))
    }
}

impl KeyLookup for Keys {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.0.get(kid)
    }
}

pub struct TestKey {
    pair: Ed25519KeyPair,
    public: VerifyingKey,
}

impl TestKey {
    pub fn generate() -> Self {
        let pair = Ed25519KeyPair::generate().expect("generate");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
        let public = VerifyingKey::for_signing(&jwk, SigningAlg::EdDSA).expect("public key");
        Self { pair, public }
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    pub fn public(&self) -> VerifyingKey {
        self.public.clone()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid()});
        self.sign_with_header(&header, claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.pair.sign(input.as_bytes()).as_ref());
        format!("{input}.{signature}")
    }
}
