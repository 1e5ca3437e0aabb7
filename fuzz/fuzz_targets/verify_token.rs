//! Any bytes as an access token: header and claims parsing must refuse or
//! accept, never panic. Half the inputs are re-signed with the real key so
//! the claim readers behind a valid signature are reached too.
#![no_main]

use std::sync::OnceLock;

use auth_jit::token::jws::{SigningAlg, SigningKey, VerifyingKey};
use auth_jit::token::verify::{verify, Expectation, KeyLookup, Rules};
use libfuzzer_sys::fuzz_target;

struct One(VerifyingKey);

impl KeyLookup for One {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        (kid == self.0.kid()).then_some(&self.0)
    }
}

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::generate(SigningAlg::EdDSA, 2048)
            .map(|g| g.key)
            .unwrap_or_else(|_| std::process::abort())
    })
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    let keys = One(key.verifying_key().clone());
    let rules = Rules {
        issuer: "https://auth.test".into(),
        leeway: 5,
    };
    let expect = Expectation::default();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify(text, &keys, &rules, &expect, 1_800_000_000);
    }
    // The same bytes as a claims object behind a real signature.
    if let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(token) = key.sign(&claims) {
            let _ = verify(&token, &keys, &rules, &expect, 1_800_000_000);
        }
    }
});
