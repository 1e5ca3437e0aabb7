//! A key set read from a JWKS document (RFC 7517 §5): the issuer's public
//! keys by `kid`.

use std::collections::HashMap;

use serde_json::Value;

use crate::jws::VerifyingKey;
use crate::rules::KeyLookup;

/// The issuer's signing keys, by `kid`.
///
/// Keys this crate cannot use to check a signature (encryption keys,
/// unknown key types, weak RSA) are left out rather than failing the whole
/// set, as RFC 7517 §5 asks. A `kid` that appears twice is left out too: a
/// token naming it could mean either key.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not a JSON object with a `keys` array")]
    /// Not JSON, or no `keys` array.
    Malformed,
    #[error("the JWKS has no key this verifier can use")]
    /// No key of the set is usable.
    Empty,
}

impl KeySet {
    /// Reads a JWKS document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::Malformed)?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(JwksError::Malformed);
        };
        let mut keys = HashMap::new();
        let mut repeated = Vec::new();
        for entry in entries {
            // Tokens always name their key, so a key without `kid` is
            // never the one a token asks for.
            if !matches!(entry.get("kid"), Some(Value::String(k)) if !k.is_empty()) {
                continue;
            }
            let Ok(key) = VerifyingKey::from_jwk(entry) else {
                continue;
            };
            let kid = key.kid().to_owned();
            if keys.insert(kid.clone(), key).is_some() {
                repeated.push(kid);
            }
        }
        for kid in repeated {
            keys.remove(&kid);
        }
        if keys.is_empty() {
            return Err(JwksError::Empty);
        }
        Ok(Self { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the set, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

impl KeyLookup for KeySet {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testkit::TestKey;

    #[test]
    fn unusable_and_ambiguous_keys_are_left_out() {
        let a = TestKey::generate();
        let b = TestKey::generate();
        let mut twin = b.public().jwk().clone();
        twin.insert("x".into(), a.public().jwk()["x"].clone());
        let doc = json!({"keys": [
            a.public().jwk(),
            b.public().jwk(),
            twin,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "X25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ecdh"},
            {"kty": "OKP", "crv": "Ed25519", "x": a.public().jwk()["x"].clone()},
        ]});
        let set = KeySet::from_json(doc.to_string().as_bytes()).expect("set");
        assert_eq!(set.kids().collect::<Vec<_>>(), vec![a.kid()]);
        assert!(set.find(b.kid()).is_none(), "a repeated kid is ambiguous");
    }

    #[test]
    fn documents_without_usable_keys_are_refused() {
        for doc in ["", "[]", "{}", r#"{"keys": {}}"#, r#"{"keys": []}"#] {
            assert!(KeySet::from_json(doc.as_bytes()).is_err(), "{doc}");
        }
    }
}
