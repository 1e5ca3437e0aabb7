//! Any bytes as a `private_key_jwt` client assertion, and as a client's
//! registered JWK: refuse or accept, never panic.
#![no_main]

use std::sync::OnceLock;

use auth_jit::token::assertion::{claimed_client, verify, ClientKey};
use auth_jit::token::jws::{SigningAlg, SigningKey};
use libfuzzer_sys::fuzz_target;

fn client_key() -> &'static ClientKey {
    static KEY: OnceLock<ClientKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let signer = SigningKey::generate(SigningAlg::ES256, 2048)
            .map(|g| g.key)
            .unwrap_or_else(|_| std::process::abort());
        let jwk = serde_json::Value::Object(signer.verifying_key().jwk().clone()).to_string();
        ClientKey::from_jwk_json(&jwk).unwrap_or_else(|_| std::process::abort())
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = claimed_client(text);
        let audiences = ["https://auth.test/oauth/token".to_owned()];
        let _ = verify(text, client_key(), "svc", &audiences, 5, 1_800_000_000);
        let _ = ClientKey::from_jwk_json(text);
    }
    let _ = ClientKey::from_pem(data);
});
