//! The receiving side: the `auth-jit-verifier` crate against the real
//! auth-jit binary, mostly through its example API (`verifier/examples/
//! protected-api`, built by `cargo test --workspace`), which is what a user
//! runs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use auth_jit_verifier::{Requirement, Scope, Verifier};
use common::example::Api;
use common::forgeries::{forgeries, issuer_key};
use common::{add_client, eventually, header, Server};
use serde_json::{json, Value};

/// An issuer with a caller (`shop`, which may ask for `orders` tokens) and
/// the API's own client (`orders`, which receives them).
struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    shop: String,
    orders: String,
}

fn setup(env: &[(&'static str, String)]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let shop = add_client(
        dir.path(),
        env,
        "shop",
        &[
            "--audience",
            "orders",
            "--audience",
            "billing",
            "--scope",
            "orders:read",
        ],
    );
    let orders = add_client(dir.path(), env, "orders", &["--audience", "billing"]);
    let server = Server::start(dir.path(), env);
    Setup {
        _dir: dir,
        server,
        shop,
        orders,
    }
}

impl Setup {
    async fn token(&self, body: Value) -> String {
        self.server.issue("shop", &self.shop, body).await
    }

    /// Sum of the issuer's request counts on its JWKS route.
    async fn jwks_fetches(&self) -> u64 {
        let (_, _, text) = self.server.get("/metrics").await;
        text.lines()
            .filter(|l| {
                l.starts_with("auth_jit_http_request_duration_seconds_count")
                    && l.contains(r#"route="/.well-known/jwks.json""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

#[tokio::test]
async fn the_example_api_accepts_our_tokens_and_refuses_every_forgery() {
    let s = setup(&[]);
    let api = Api::start(&s.server, Some(("orders", &s.orders))).await;

    assert_eq!(api.call("GET", "/health", None).await.0, 200);
    // RFC 6750 §3.1: no token, no error code.
    let (status, challenge, _) = api.call("GET", "/orders", None).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"));

    let good = s
        .token(json!({"audience": "orders", "scope": "orders:read"}))
        .await;
    let (status, _, body) = api.call("GET", "/orders", Some(&good)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], "shop");

    let unscoped = s.token(json!({"audience": "orders"})).await;
    let (status, challenge, body) = api.call("GET", "/orders", Some(&unscoped)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        challenge,
        r#"Bearer error="insufficient_scope", scope="orders:read""#
    );
    assert_eq!(body["error"], "insufficient_scope");

    let elsewhere = s
        .token(json!({"audience": "billing", "scope": "orders:read"}))
        .await;
    let (status, challenge, _) = api.call("GET", "/orders", Some(&elsewhere)).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#));

    // The same table the issuer's verify endpoint refuses (tests/api.rs).
    let key = issuer_key(&s.server.dir.join("data"));
    let table = forgeries(&good, &key);
    for forgery in &table {
        let (status, challenge, body) = api.call("GET", "/orders", Some(&forgery.token)).await;
        assert_eq!(status, 401, "{}: {body}", forgery.class);
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{}: {challenge}",
            forgery.class
        );
        assert_eq!(body["error"], "invalid_token", "{}", forgery.class);
    }
    let (status, _, _) = api.call("GET", "/orders", Some(&good)).await;
    assert_eq!(status, 200, "the genuine token still passes");
}

#[tokio::test]
async fn single_use_and_bound_tokens_are_settled_by_the_issuer_once() {
    let s = setup(&[]);
    let api = Api::start(&s.server, Some(("orders", &s.orders))).await;

    let once = s.token(json!({"audience": "orders", "once": true})).await;
    let (status, _, body) = api.call("POST", "/pay", Some(&once)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paid"], true);
    let (status, challenge, body) = api.call("POST", "/pay", Some(&once)).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.starts_with(r#"Bearer error="invalid_token""#));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("already been used"),
        "{body}"
    );
    // /pay takes single-use tokens only.
    let reusable = s.token(json!({"audience": "orders"})).await;
    let (status, _, body) = api.call("POST", "/pay", Some(&reusable)).await;
    assert_eq!(status, 401, "{body}");

    // 20 concurrent payments with one token: exactly one goes through.
    let once = s.token(json!({"audience": "orders", "once": true})).await;
    let statuses = concurrently(&api, "POST", "/pay", vec![once; 20]).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );

    // A token bound to GET /orders on this API, and one bound elsewhere.
    let bound = |url: String| {
        s.token(json!({"audience": "orders", "scope": "orders:read",
            "bind": {"method": "GET", "url": url}}))
    };
    let here = bound(format!("{}/orders", api.base)).await;
    let (status, _, body) = api.call("GET", "/orders", Some(&here)).await;
    assert_eq!(status, 200, "{body}");
    let there = bound("http://elsewhere.example/orders".into()).await;
    let (status, _, body) = api.call("GET", "/orders", Some(&there)).await;
    assert_eq!(status, 401, "{body}");

    // Without its own credentials the API cannot ask the issuer: refused.
    let blind = Api::start(&s.server, None).await;
    let once = s.token(json!({"audience": "orders", "once": true})).await;
    let (status, _, body) = blind.call("POST", "/pay", Some(&once)).await;
    assert_eq!(status, 401, "{body}");
    // ... and the token was not consumed by that refusal.
    let (status, _, body) = api.call("POST", "/pay", Some(&once)).await;
    assert_eq!(status, 200, "{body}");
}

/// Sends `tokens` concurrently, one request each; their statuses.
async fn concurrently(
    api: &Api,
    method: &'static str,
    path: &'static str,
    tokens: Vec<String>,
) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let (http, base) = (api.http.clone(), api.base.clone());
        tasks.spawn(async move {
            let url = format!("{base}{path}");
            let request = if method == "POST" {
                http.post(url)
            } else {
                http.get(url)
            };
            request
                .bearer_auth(token)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn a_rotation_is_followed_without_a_failed_request() {
    let env: Vec<(&'static str, String)> = common::FAST_ROTATION
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    let s = setup(&env);
    let api = Api::start(&s.server, Some(("orders", &s.orders))).await;
    let started = Instant::now();
    let mut kids = std::collections::BTreeSet::new();
    let mut requests = 0;
    let mut urgent = false;
    while started.elapsed() < Duration::from_secs(12) {
        if !urgent && started.elapsed() > Duration::from_secs(7) {
            // An urgent rotation: the new key signs at once, before any
            // cache could know it; the kid miss refetches.
            let out = common::command(&s.server.dir, &s.server.env)
                .args(["keys", "rotate", "--now"])
                .output()
                .expect("keys rotate");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            urgent = true;
        }
        let token = s
            .token(json!({"audience": "orders", "scope": "orders:read"}))
            .await;
        kids.insert(
            header(&token)["kid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let (status, _, body) = api.call("GET", "/orders", Some(&token)).await;
        assert_eq!(status, 200, "request {requests} failed: {body}");
        requests += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(requests > 100, "{requests} requests");
    assert!(kids.len() >= 3, "tokens of {} keys: {kids:?}", kids.len());
}

#[tokio::test]
async fn forged_kids_cost_the_issuer_at_most_one_fetch_per_interval() {
    let s = setup(&[]);
    let api = Api::start(&s.server, Some(("orders", &s.orders))).await;
    let good = s
        .token(json!({"audience": "orders", "scope": "orders:read"}))
        .await;
    assert_eq!(api.call("GET", "/orders", Some(&good)).await.0, 200);
    let before = s.jwks_fetches().await;
    // 200 tokens, each naming a kid the issuer never had.
    let key = issuer_key(&s.server.dir.join("data"));
    let claims = common::payload(&good);
    let forged: Vec<String> = (0..200)
        .map(|i| {
            let mut h = serde_json::Map::new();
            h.insert("alg".into(), json!("EdDSA"));
            h.insert("typ".into(), json!("at+jwt"));
            h.insert("kid".into(), json!(format!("forged-{i}")));
            key.sign_with_header(&h, &claims).expect("sign")
        })
        .collect();
    let statuses = concurrently(&api, "GET", "/orders", forged).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let after = s.jwks_fetches().await;
    assert!(
        after - before <= 1,
        "200 forged kids caused {} JWKS fetches",
        after - before
    );
    // The genuine token is unaffected.
    assert_eq!(api.call("GET", "/orders", Some(&good)).await.0, 200);
}

#[tokio::test]
async fn with_the_issuer_down_cached_keys_verify_and_single_use_is_refused() {
    let s = setup(&[]);
    let api = Api::start(&s.server, Some(("orders", &s.orders))).await;
    let ordinary = s
        .token(json!({"audience": "orders", "scope": "orders:read", "ttl": 120}))
        .await;
    let once = s
        .token(json!({"audience": "orders", "once": true, "ttl": 120}))
        .await;
    assert_eq!(api.call("GET", "/orders", Some(&ordinary)).await.0, 200);
    let Setup { server, _dir, .. } = s;
    assert_eq!(server.terminate(), Some(0));
    let (status, _, body) = api.call("GET", "/orders", Some(&ordinary)).await;
    assert_eq!(status, 200, "cached keys still verify: {body}");
    let (status, _, body) = api.call("POST", "/pay", Some(&once)).await;
    assert_eq!(status, 503, "only the issuer can consume it: {body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    drop(_dir);
}

/// The crate used directly: the JWKS is cached for the issuer's max-age and
/// revalidated with its ETag (a 304, no new download).
#[tokio::test]
async fn the_key_cache_honours_max_age_and_revalidates_by_etag() {
    let env = vec![
        ("AUTH_JIT_JWKS_MAX_AGE_SECS", "1".to_owned()),
        ("AUTH_JIT_KEY_PUBLISH_SECS", "2".to_owned()),
    ];
    let s = setup(&env);
    let verifier = Verifier::builder(s.server.base.clone(), "orders")
        .build()
        .expect("verifier");
    let token = s
        .token(json!({"audience": "orders", "scope": "orders:read"}))
        .await;
    let need = Requirement {
        scope: Scope::parse("orders:read").expect("scope"),
        single_use: false,
    };
    for _ in 0..20 {
        verifier.verify(&token, &need, None).await.expect("valid");
    }
    let stats = verifier.stats();
    assert_eq!((stats.fetches, stats.not_modified), (1, 0), "{stats:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    verifier.verify(&token, &need, None).await.expect("valid");
    // Revalidation runs in the background while the stale set serves.
    let revalidated = eventually(Duration::from_secs(5), || async {
        verifier.stats().not_modified >= 1
    })
    .await;
    assert!(revalidated, "{:?}", verifier.stats());
    assert_eq!(verifier.stats().failures, 0);
}

/// Past its stale bound a key set never verifies again while the issuer
/// stays away: not between retries, not ever.
#[tokio::test]
async fn past_the_stale_bound_nothing_verifies() {
    let env = vec![
        ("AUTH_JIT_JWKS_MAX_AGE_SECS", "1".to_owned()),
        ("AUTH_JIT_KEY_PUBLISH_SECS", "2".to_owned()),
    ];
    let s = setup(&env);
    let verifier = Verifier::builder(s.server.base.clone(), "orders")
        .stale_if_error(Duration::from_secs(1))
        .timeout(Duration::from_millis(500))
        .build()
        .expect("verifier");
    let token = s.token(json!({"audience": "orders", "ttl": 120})).await;
    let need = Requirement::default();
    verifier.verify(&token, &need, None).await.expect("valid");
    let Setup { server, _dir, .. } = s;
    assert_eq!(server.terminate(), Some(0));
    // Fresh for 1 s, then stale but usable for 1 s more.
    verifier
        .verify(&token, &need, None)
        .await
        .expect("within the stale bound");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut refusals = 0;
    while Instant::now() < deadline {
        match verifier.verify(&token, &need, None).await {
            Err(auth_jit_verifier::Refusal::Unavailable(_)) => refusals += 1,
            other => panic!("a set past its stale bound answered {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refusals > 20, "{refusals}");
    assert!(verifier.stats().failures >= 1, "{:?}", verifier.stats());
    drop(_dir);
}
