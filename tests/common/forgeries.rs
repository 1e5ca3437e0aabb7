//! Forged-token classes: ONE table that the issuer's verify endpoint
//! (tests/api.rs) and the verifier crate behind the example API
//! (tests/verifier.rs) must both refuse, so the two can never drift apart.
//!
//! Forgeries that only a claim or header rule can catch are signed with the
//! issuer's real key (read from its keys directory), so the signature holds
//! and the rule alone decides.

use std::path::Path;

use auth_jit::token::jws::{SigningAlg, SigningKey};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};

/// One forged token and what makes it one.
pub struct Forgery {
    pub class: &'static str,
    pub token: String,
}

/// The issuer's signing key, from `DATA_DIR/keys` of an embedded-store
/// server (its only key).
pub fn issuer_key(data_dir: &Path) -> SigningKey {
    let keys = data_dir.join("keys");
    let path = std::fs::read_dir(&keys)
        .expect("keys directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "p8"))
        .expect("a key file");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let alg = name
        .split('-')
        .nth(1)
        .and_then(SigningAlg::parse)
        .expect("algorithm in the key file name");
    SigningKey::from_pkcs8(alg, &std::fs::read(&path).expect("key")).expect("pkcs8")
}

fn b64(value: &impl ToString) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A payload with `sub` twice: serde_json keeps one, another parser the
/// other.
struct TwoSubjects(Map<String, Value>);

impl Serialize for TwoSubjects {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("sub", "admin")?;
        map.end()
    }
}

/// Every class of forgery, built from a genuine token of the issuer and its
/// key.
pub fn forgeries(genuine: &str, key: &SigningKey) -> Vec<Forgery> {
    let parts: Vec<&str> = genuine.split('.').collect();
    let claims: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("payload")).expect("json");
    let now = claims["iat"].as_u64().expect("iat");
    let kid = key.kid().to_owned();
    let header = |extra: Value| {
        let mut h = json!({"alg": key.alg().as_str(), "typ": "at+jwt", "kid": kid});
        if let (Value::Object(h), Value::Object(extra)) = (&mut h, extra) {
            for (k, v) in extra {
                if v.is_null() {
                    h.remove(&k);
                } else {
                    h.insert(k, v);
                }
            }
        }
        match h {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    };
    let signed = |extra_header: Value, claims: &Map<String, Value>| {
        key.sign_with_header(&header(extra_header), claims)
            .expect("sign")
    };
    let with = |changes: Value| {
        let mut c = claims.clone();
        if let Value::Object(changes) = changes {
            for (k, v) in changes {
                if v.is_null() {
                    c.remove(&k);
                } else {
                    c.insert(k, v);
                }
            }
        }
        signed(json!({}), &c)
    };
    let foreign = SigningKey::generate(SigningAlg::EdDSA, 2048)
        .expect("foreign key")
        .key;
    let mut widened = claims.clone();
    widened.insert("scope".into(), json!("orders:read orders:write admin"));
    let hs_header = b64(&json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}));
    let hs_input = format!("{hs_header}.{}", parts[1]);
    let secret = Value::Object(key.verifying_key().jwk().clone()).to_string();
    let hs_tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        hs_input.as_bytes(),
    );
    let mut foreign_header = header(json!({}));
    foreign_header.insert("kid".into(), json!(foreign.kid()));
    let other_alg = if key.alg() == SigningAlg::ES256 {
        "EdDSA"
    } else {
        "ES256"
    };
    vec![
        Forgery {
            class: "payload changed after signing",
            token: format!("{}.{}.{}", parts[0], b64(&Value::Object(widened)), parts[2]),
        },
        Forgery {
            class: "alg none, no signature",
            token: format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
                parts[1]
            ),
        },
        Forgery {
            class: "alg HS256 keyed with the public key",
            token: format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(hs_tag.as_ref())),
        },
        Forgery {
            class: "alg of another family than the key",
            token: signed(json!({"alg": other_alg}), &claims),
        },
        Forgery {
            class: "jku header",
            token: signed(json!({"jku": "https://evil.example/jwks.json"}), &claims),
        },
        Forgery {
            class: "x5u header",
            token: signed(json!({"x5u": "https://evil.example/cert.pem"}), &claims),
        },
        Forgery {
            class: "embedded jwk header",
            token: signed(json!({"jwk": foreign.verifying_key().jwk()}), &claims),
        },
        Forgery {
            class: "x5c header",
            token: signed(json!({"x5c": ["MIIB"]}), &claims),
        },
        Forgery {
            class: "crit header",
            token: signed(json!({"crit": ["exp"]}), &claims),
        },
        Forgery {
            class: "typ JWT",
            token: signed(json!({"typ": "JWT"}), &claims),
        },
        Forgery {
            class: "no typ",
            token: signed(json!({"typ": null}), &claims),
        },
        Forgery {
            class: "no kid",
            token: signed(json!({"kid": null}), &claims),
        },
        Forgery {
            class: "a key the issuer never had",
            token: foreign
                .sign_with_header(&foreign_header, &claims)
                .expect("sign"),
        },
        Forgery {
            class: "the issuer's kid, another key's signature",
            token: foreign
                .sign_with_header(&header(json!({})), &claims)
                .expect("sign"),
        },
        Forgery {
            class: "expired beyond the leeway",
            token: with(json!({"exp": now - 60, "iat": now - 120, "nbf": now - 120})),
        },
        Forgery {
            class: "not valid yet",
            token: with(json!({"nbf": now + 600})),
        },
        Forgery {
            class: "issued in the future",
            token: with(json!({"iat": now + 600, "nbf": now})),
        },
        Forgery {
            class: "another issuer",
            token: with(
                json!({"iss": format!("{}/evil", claims["iss"].as_str().unwrap_or_default())}),
            ),
        },
        Forgery {
            class: "another audience",
            token: with(json!({"aud": "billing"})),
        },
        Forgery {
            class: "two audiences",
            token: with(json!({"aud": [claims["aud"].clone(), "billing"]})),
        },
        Forgery {
            class: "exp as a string",
            token: with(json!({"exp": (now + 60).to_string()})),
        },
        Forgery {
            class: "no exp",
            token: with(json!({"exp": null})),
        },
        Forgery {
            class: "no jti",
            token: with(json!({"jti": null})),
        },
        Forgery {
            class: "empty jti",
            token: with(json!({"jti": ""})),
        },
        Forgery {
            class: "once as a string",
            token: with(json!({"once": "true"})),
        },
        Forgery {
            class: "a claim named twice",
            token: key
                .sign_with_header(&header(json!({})), &TwoSubjects(claims.clone()))
                .expect("sign"),
        },
        Forgery {
            class: "not a JWS",
            token: "garbage".into(),
        },
        Forgery {
            class: "far too long",
            token: format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]),
        },
    ]
}
