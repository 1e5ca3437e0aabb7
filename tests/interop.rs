//! Our tokens verified by an independent implementation: PyJWT, fetching
//! our JWKS over HTTP. `make test` installs it in `.venv-test`.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{register_pair, Server};
use serde_json::{json, Value};

fn pyjwt(server: &Server, audience: &str, token: &str) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/verify_pyjwt.py");
    let issuer = server.base.clone();
    let jwks = server.url("/.well-known/jwks.json");
    // PyJWT blocks on HTTP; run it off the async runtime's threads.
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            Command::new(common::python())
                .args([script, &jwks, &issuer, audience, token])
                .output()
                .expect("run python")
        })
        .join()
        .expect("thread")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_our_eddsa_and_es256_tokens_through_the_jwks() {
    for alg in ["EdDSA", "ES256"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Server::start(dir.path(), &[("AUTH_JIT_SIGNING_ALG", alg.to_string())]);
        let c = register_pair(&s);
        let token = s
            .issue(
                "billing",
                &c.billing,
                json!({"audience": "ledger", "scope": "read write"}),
            )
            .await;
        let (ok, out) = pyjwt(&s, "ledger", &token);
        assert!(ok, "{alg}: PyJWT refused our token: {out}");
        let claims: Value = serde_json::from_str(out.trim()).expect("claims json");
        assert_eq!(claims["aud"], "ledger");
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["client_id"], "billing");

        // And it refuses what it should: another audience, a tampered token.
        let (ok, out) = pyjwt(&s, "payroll", &token);
        assert!(!ok && out.contains("InvalidAudience"), "{alg}: {out}");
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = s
            .issue("billing", &c.billing, json!({"audience": "ledger"}))
            .await;
        let other_payload = other.split('.').nth(1).expect("payload").to_owned();
        parts[1] = &other_payload;
        let (ok, out) = pyjwt(&s, "ledger", &parts.join("."));
        assert!(!ok, "{alg}: spliced token accepted: {out}");
    }
}
