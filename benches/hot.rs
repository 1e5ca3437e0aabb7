//! Micro-benchmarks of the hot pieces of issuing and verifying a token:
//! signing, verification, client authentication, policy, claim
//! serialization and the store check. `cargo bench --bench hot`.
//!
//! These say where the time goes inside one request; what a request costs
//! end to end is `make bench`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use auth_jit::services::clients::{ClientEntry, Clients, ClientsFile};
use auth_jit::services::store::{EmbeddedStore, StoreHandle, TokenRef};
use auth_jit::token::claims::AccessClaims;
use auth_jit::token::clock::SystemRandom;
use auth_jit::token::jws::{SigningAlg, SigningKey, VerifyingKey};
use auth_jit::token::policy::{self, ClientPolicy, TokenRequest, TtlLimits};
use auth_jit::token::types::{Audience, ClientId, Scope, ScopeToken};
use auth_jit::token::verify::{self, Expectation, KeyLookup, Rules};
use criterion::{criterion_group, criterion_main, Criterion};

const ISS: &str = "https://auth.bench";
const NOW: u64 = 1_800_000_000;

struct One(VerifyingKey);

impl KeyLookup for One {
    fn find(&self, kid: &str) -> Option<&VerifyingKey> {
        (kid == self.0.kid()).then_some(&self.0)
    }
}

fn claims(jti: &str) -> AccessClaims {
    AccessClaims {
        iss: ISS.into(),
        sub: "billing".into(),
        aud: "ledger".into(),
        exp: NOW + 60,
        iat: NOW,
        nbf: NOW,
        jti: jti.into(),
        client_id: "billing".into(),
        scope: Some("read write".into()),
        once: None,
        htm: None,
        htu: None,
        act: None,
    }
}

fn key(alg: SigningAlg) -> SigningKey {
    match SigningKey::generate(alg, 2048) {
        Ok(generated) => generated.key,
        Err(e) => panic!("key generation: {e}"),
    }
}

fn signing(c: &mut Criterion) {
    let claims = claims("AAAAAAAAAAAAAAAAAAAAAA");
    for alg in [SigningAlg::EdDSA, SigningAlg::ES256, SigningAlg::RS256] {
        let key = key(alg);
        c.bench_function(&format!("sign {alg}"), |b| {
            b.iter(|| key.sign(black_box(&claims)))
        });
    }
    c.bench_function("serialize claims", |b| {
        b.iter(|| serde_json::to_vec(black_box(&claims)))
    });
}

fn verification(c: &mut Criterion) {
    let key = key(SigningAlg::EdDSA);
    let token = match key.sign(&claims("AAAAAAAAAAAAAAAAAAAAAA")) {
        Ok(token) => token,
        Err(e) => panic!("sign: {e}"),
    };
    let keys = One(key.verifying_key().clone());
    let rules = Rules {
        issuer: ISS.into(),
        leeway: 5,
    };
    let expect = Expectation {
        audience: Audience::parse("ledger").ok(),
        ..Expectation::default()
    };
    c.bench_function("verify EdDSA (header, signature, claims)", |b| {
        b.iter(|| verify::verify(black_box(&token), &keys, &rules, &expect, NOW))
    });
}

fn authentication_and_policy(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("clients.toml");
    let mut file = ClientsFile::default();
    let entry = ClientEntry {
        id: ClientId::parse("billing").unwrap_or_else(|e| panic!("{e}")),
        secret_sha256: None,
        public_jwk: None,
        audiences: [Audience::parse("ledger").unwrap_or_else(|e| panic!("{e}"))].into(),
        scopes: ["read", "write"]
            .iter()
            .filter_map(|s| ScopeToken::parse(s).ok())
            .collect(),
        max_ttl: None,
        exchange: false,
        txn_token: false,
        rate_limit: None,
        receives: BTreeSet::new(),
        tokens_revoked_before: None,
    };
    let secret = file
        .add(entry, &SystemRandom::new())
        .unwrap_or_else(|e| panic!("{e}"));
    file.write(&path).unwrap_or_else(|e| panic!("{e}"));
    let clients = Clients::open(&path).unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("authenticate a client secret", |b| {
        b.iter(|| clients.authenticate(black_box("billing"), black_box(&secret)))
    });
    let policy = ClientPolicy {
        audiences: [Audience::parse("ledger").unwrap_or_else(|e| panic!("{e}"))].into(),
        scopes: Scope::parse("read write").unwrap_or_else(|e| panic!("{e}")),
        max_ttl: None,
        exchange: false,
        txn_token: false,
    };
    let limits = TtlLimits {
        default_ttl: 60,
        max_ttl: 3600,
    };
    c.bench_function("policy: authorize a request", |b| {
        b.iter(|| {
            let request = TokenRequest {
                audience: Audience::parse("ledger").unwrap_or_else(|e| panic!("{e}")),
                scope: Scope::parse("read").unwrap_or_else(|e| panic!("{e}")),
                ttl: None,
                once: false,
                bind: None,
            };
            policy::authorize(&policy, limits, black_box(request))
        })
    });
}

fn store_check(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let store =
        EmbeddedStore::open(&dir.path().join("state.redb")).unwrap_or_else(|e| panic!("{e}"));
    let handle = StoreHandle::new(Arc::new(store), Duration::from_secs(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let token = TokenRef {
        jti: "AAAAAAAAAAAAAAAAAAAAAA",
        client_id: "billing",
        aud: "ledger",
        iat: NOW,
        keep_until: NOW + 600,
        single_use: false,
    };
    c.bench_function("store check (embedded, not consuming)", |b| {
        b.iter(|| runtime.block_on(handle.check(black_box(token), false)))
    });
}

criterion_group!(
    hot,
    signing,
    verification,
    authentication_and_policy,
    store_check
);
criterion_main!(hot);
