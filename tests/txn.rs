//! Transaction Tokens (draft-ietf-oauth-transaction-tokens) end to end: the
//! real binary as the Txn-Token Service of trust domain `trust.example`, a
//! trusted identity provider that the test serves itself (its own key, its
//! JWKS over HTTP), PyJWT as an independent verifier, and two example
//! services passing one Txn-Token down a chain.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use auth_jit::token::jws::{SigningAlg, SigningKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::example::Api;
use common::{header, interop, payload, Server};
use serde_json::{json, Map, Value};

const DOMAIN: &str = "trust.example";
const TXN: &str = "urn:ietf:params:oauth:token-type:txn_token";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The company's identity provider: its own key, its JWKS on a loopback
/// port the test picks, served by a small axum app.
struct Idp {
    issuer: String,
    key: SigningKey,
    _task: tokio::task::JoinHandle<()>,
}

impl Idp {
    async fn start() -> Idp {
        let key = SigningKey::generate(SigningAlg::EdDSA, 2048)
            .expect("key")
            .key;
        let jwks = json!({"keys": [key.verifying_key().jwk()]}).to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("cache-control", "max-age=60"),
                        ],
                        jwks,
                    )
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Idp {
            issuer,
            key,
            _task: task,
        }
    }

    /// A token of this provider, signed by `key` (its own, or a forger's).
    fn token_signed_by(&self, key: &SigningKey, claims: Value) -> String {
        let mut h = Map::new();
        h.insert("alg".into(), json!("EdDSA"));
        h.insert("typ".into(), json!("JWT"));
        h.insert("kid".into(), json!(key.kid()));
        key.sign_with_header(&h, &claims).expect("sign")
    }

    fn token(&self, changes: Value) -> String {
        let now = now();
        let mut claims = json!({"iss": self.issuer, "sub": "alice", "aud": "gateway",
            "iat": now, "exp": now + 300, "scope": "orders:read orders:write"});
        if let (Value::Object(c), Value::Object(changes)) = (&mut claims, changes) {
            for (k, v) in changes {
                if v.is_null() {
                    c.remove(&k);
                } else {
                    c.insert(k, v);
                }
            }
        }
        self.token_signed_by(&self.key, claims)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The service of trust domain `trust.example`, with a gateway (may ask for
/// Txn-Tokens, receives tokens for `gateway`), a caller `shop`, a workload
/// `orders` (may replace Txn-Tokens), and `plain` (may not).
struct Domain {
    _dir: tempfile::TempDir,
    server: Server,
    gateway: String,
    shop: String,
    orders: String,
    plain: String,
    edge: String,
    idp: Idp,
}

async fn domain() -> Domain {
    let idp = Idp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let issuers = dir.path().join("trusted-issuers.toml");
    std::fs::write(
        &issuers,
        format!(
            "[[issuer]]\nissuer = \"{}\"\njwks_uri = \"{}/jwks.json\"\naudience = \"gateway\"\n",
            idp.issuer, idp.issuer
        ),
    )
    .expect("issuers file");
    let env = vec![
        ("AUTH_JIT_TRUST_DOMAIN", DOMAIN.to_owned()),
        (
            "AUTH_JIT_TRUSTED_ISSUERS_FILE",
            issuers.display().to_string(),
        ),
    ];
    let add = |id: &str, args: &[&str]| common::add_client(dir.path(), &env, id, args);
    let gateway = add("gateway", &["--audience", "orders", "--txn-token"]);
    let shop = add(
        "shop",
        &[
            "--audience",
            "gateway",
            "--scope",
            "orders:read",
            "orders:write",
        ],
    );
    let orders = add("orders", &["--audience", "inventory", "--txn-token"]);
    let plain = add("plain", &["--audience", "billing", "--receives", "gateway"]);
    // A gateway whose Txn-Tokens live one second.
    let edge = add(
        "edge",
        &[
            "--audience",
            "orders",
            "--txn-token",
            "--receives",
            "gateway",
            "--max-ttl",
            "1",
        ],
    );
    let server = Server::start(dir.path(), &env);
    Domain {
        _dir: dir,
        server,
        gateway,
        shop,
        orders,
        plain,
        edge,
        idp,
    }
}

impl Domain {
    fn secret(&self, id: &str) -> &str {
        match id {
            "gateway" => &self.gateway,
            "shop" => &self.shop,
            "orders" => &self.orders,
            "edge" => &self.edge,
            _ => &self.plain,
        }
    }

    /// POST /oauth/token as `id`: status, headers, JSON.
    async fn token(
        &self,
        id: &str,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .server
            .http
            .post(self.server.url("/oauth/token"))
            .basic_auth(id, Some(self.secret(id)))
            .form(form)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// A Txn-Token request as `id` for `subject`.
    async fn txn(
        &self,
        id: &str,
        subject: &str,
        subject_type: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", EXCHANGE),
            ("requested_token_type", TXN),
            ("audience", DOMAIN),
            ("subject_token", subject),
            ("subject_token_type", subject_type),
        ];
        form.extend_from_slice(extra);
        let (status, _, body) = self.token(id, &form).await;
        (status, body)
    }

    async fn access_token(&self, scope: &str, ttl: u64) -> String {
        self.server
            .issue(
                "shop",
                &self.shop,
                json!({"audience": "gateway", "scope": scope, "ttl": ttl}),
            )
            .await
    }

    /// POST /api/token/verify as `plain`, with an optional token_type.
    async fn verify(&self, token: &str, audience: &str, token_type: Option<&str>) -> (u16, Value) {
        let mut body = json!({"token": token, "audience": audience});
        if let Some(t) = token_type {
            body["token_type"] = json!(t);
        }
        let (status, _, json) = self
            .server
            .post("/api/token/verify", Some(("plain", &self.plain)), &body)
            .await;
        (status, json)
    }
}

fn assert_oauth_error(status: u16, body: &Value, code: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], code, "{body}");
}

#[tokio::test]
async fn txn_tokens_from_each_subject_type_verify_with_pyjwt() {
    let d = domain().await;
    let subject = d.access_token("orders:read orders:write", 120).await;
    let (status, headers, body) = d
        .token(
            "gateway",
            &[
                ("grant_type", EXCHANGE),
                ("requested_token_type", TXN),
                ("audience", DOMAIN),
                ("scope", "orders:read"),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS),
                ("request_details", r#"{"action":"list","order":"o-17"}"#),
                (
                    "request_context",
                    r#"{"req_ip":"203.0.113.7","authn":"forged"}"#,
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["issued_token_type"], TXN);
    assert!(body.get("refresh_token").is_none());
    assert!(
        body["expires_in"]
            .as_u64()
            .is_some_and(|e| e > 0 && e <= 60),
        "{body}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    let txn = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(header(&txn)["typ"], "txntoken+jwt");
    assert!(header(&txn)["kid"].is_string());
    let claims = payload(&txn);
    assert_eq!(claims["aud"], DOMAIN);
    assert_eq!(claims["sub"], "shop");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["req_wl"], "gateway");
    assert_eq!(claims["tctx"], json!({"action": "list", "order": "o-17"}));
    assert_eq!(claims["rctx"]["req_ip"], "203.0.113.7");
    assert_eq!(
        claims["rctx"]["sub_iss"], d.server.base,
        "our issuer vouches for sub"
    );
    assert_eq!(
        claims["rctx"]["authn"], "client_secret_basic",
        "the service's own knowledge wins"
    );
    assert!(claims["txn"].as_str().is_some_and(|t| t.len() >= 22));
    // The subject token is nowhere in the Txn-Token.
    let decoded = String::from_utf8(
        URL_SAFE_NO_PAD
            .decode(txn.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(!decoded.contains(subject.split('.').nth(2).unwrap()));

    // PyJWT, through the JWKS, with the trust domain as audience and the typ checked.
    let jwks = d.server.url("/.well-known/jwks.json");
    let (ok, verified) = interop(
        "verify_pyjwt.py",
        &[&jwks, &d.server.base, DOMAIN, &txn, "txntoken+jwt"],
    );
    assert!(ok, "{verified}");
    assert_eq!(verified["txn"], claims["txn"]);
    // ... and PyJWT refuses it as an access token (typ).
    let (ok, _) = interop("verify_pyjwt.py", &[&jwks, &d.server.base, DOMAIN, &txn]);
    assert!(!ok);

    // From the identity provider's JWT.
    let idp_token = d.idp.token(json!({}));
    let (status, body) = d
        .txn("gateway", &idp_token, JWT, &[("scope", "orders:write")])
        .await;
    assert_eq!(status, 200, "{body}");
    let from_idp = payload(body["access_token"].as_str().unwrap());
    assert_eq!(from_idp["sub"], "alice");
    assert_eq!(from_idp["rctx"]["sub_iss"], d.idp.issuer.as_str());
    assert_eq!(from_idp["scope"], "orders:write");
    let (ok, verified) = interop(
        "verify_pyjwt.py",
        &[
            &jwks,
            &d.server.base,
            DOMAIN,
            body["access_token"].as_str().unwrap(),
            "txntoken+jwt",
        ],
    );
    assert!(ok, "{verified}");

    // Replacement by the next workload: same txn, sub, aud and tctx; the
    // chain of requesters kept.
    let (status, body) = d.txn("orders", &txn, TXN, &[]).await;
    assert_eq!(status, 200, "{body}");
    let replaced = payload(body["access_token"].as_str().unwrap());
    for name in ["txn", "sub", "aud", "tctx", "scope"] {
        assert_eq!(replaced[name], claims[name], "{name}");
    }
    assert_eq!(replaced["req_wl"], "orders");
    assert_eq!(replaced["rctx"]["sub_iss"], claims["rctx"]["sub_iss"]);
    assert_eq!(replaced["rctx"]["req_wl_chain"], json!(["gateway"]));
    assert!(
        replaced["exp"].as_u64() <= claims["exp"].as_u64(),
        "never later than the replaced token"
    );
}

#[tokio::test]
async fn txn_token_requests_that_must_fail_do() {
    let d = domain().await;
    let subject = d.access_token("orders:read", 120).await;
    let ask = |id: &'static str, scope: &'static str| {
        let subject = subject.clone();
        let d = &d;
        async move { d.txn(id, &subject, ACCESS, &[("scope", scope)]).await }
    };

    let (status, body) = ask("gateway", "orders:read orders:write").await;
    assert_oauth_error(status, &body, "invalid_scope");
    let (status, body) = ask("plain", "orders:read").await;
    assert_oauth_error(status, &body, "unauthorized_client");
    let (status, _, body) = d
        .token(
            "gateway",
            &[
                ("grant_type", EXCHANGE),
                ("requested_token_type", TXN),
                ("audience", "elsewhere.example"),
                ("scope", "orders:read"),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS),
            ],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_target");
    let (status, body) = d.txn("gateway", &subject, ACCESS, &[]).await;
    assert_oauth_error(status, &body, "invalid_request");
    let (status, body) = d
        .txn(
            "gateway",
            &subject,
            ACCESS,
            &[("scope", "orders:read"), ("request_details", "[1,2]")],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_request");
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(3000));
    let (status, body) = d
        .txn(
            "gateway",
            &subject,
            ACCESS,
            &[("scope", "orders:read"), ("request_context", &big)],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_request");

    // An expired subject.
    let short = d.access_token("orders:read", 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = d
        .txn("gateway", &short, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_oauth_error(status, &body, "invalid_grant");

    // Identity-provider tokens: expired, an unknown issuer, a forger's key
    // under the trusted issuer's name, another audience, no scope at all.
    let forger = SigningKey::generate(SigningAlg::EdDSA, 2048)
        .expect("key")
        .key;
    let t = now();
    let cases = [
        (
            "expired",
            d.idp.token(json!({"iat": t - 600, "exp": t - 300})),
        ),
        (
            "untrusted issuer",
            d.idp.token(json!({"iss": "https://idp.evil.example"})),
        ),
        (
            "foreign key, trusted name",
            d.idp.token_signed_by(
                &forger,
                json!({"iss": d.idp.issuer, "sub": "mallory", "aud": "gateway",
                    "iat": t, "exp": t + 300, "scope": "orders:read"}),
            ),
        ),
        ("another audience", d.idp.token(json!({"aud": "billing"}))),
        ("no scope", d.idp.token(json!({"scope": null}))),
        (
            "exp as a string",
            d.idp.token(json!({"exp": (t + 300).to_string()})),
        ),
    ];
    for (case, token) in &cases {
        let (status, body) = d
            .txn("gateway", token, JWT, &[("scope", "orders:read")])
            .await;
        assert_eq!(status, 400, "{case}: {body}");
        assert!(
            body["error"] == "invalid_grant" || body["error"] == "invalid_scope",
            "{case}: {body}"
        );
    }

    // Replacement: widening, a changed tctx, and an access token posing as
    // a Txn-Token (and the other way round).
    let (status, body) = d
        .txn(
            "gateway",
            &subject,
            ACCESS,
            &[
                ("scope", "orders:read"),
                ("request_details", r#"{"order":"o-1"}"#),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let txn = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = d
        .txn(
            "orders",
            &txn,
            TXN,
            &[("scope", "orders:read orders:write")],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_scope");
    let (status, body) = d
        .txn(
            "orders",
            &txn,
            TXN,
            &[("request_details", r#"{"order":"o-2"}"#)],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_grant");
    let (status, body) = d.txn("orders", &subject, TXN, &[]).await;
    assert_oauth_error(status, &body, "invalid_grant");
    let (status, body) = d
        .txn("gateway", &txn, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_oauth_error(status, &body, "invalid_grant");
    // A workload without --txn-token cannot replace either.
    let (status, body) = d.txn("plain", &txn, TXN, &[]).await;
    assert_oauth_error(status, &body, "unauthorized_client");
}

#[tokio::test]
async fn txn_tokens_and_access_tokens_never_stand_in_for_each_other() {
    let d = domain().await;
    let access = d.access_token("orders:read", 120).await;
    let (status, body) = d
        .txn("gateway", &access, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_eq!(status, 200, "{body}");
    let txn = body["access_token"].as_str().unwrap().to_owned();

    let (status, body) = d.verify(&txn, DOMAIN, Some("txn_token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["claims"]["sub"], "shop");
    // A Txn-Token without token_type: refused, by its typ where the
    // caller receives the audience, by the audience rule elsewhere.
    let (status, body) = d.verify(&txn, "gateway", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("at+jwt"),
        "{body}"
    );
    let (status, body) = d.verify(&txn, DOMAIN, None).await;
    assert!(status == 401 || status == 403, "{status}: {body}");
    // An access token with token_type txn_token: refused.
    let (status, body) = d.verify(&access, "gateway", Some("txn_token")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = d.verify(&access, DOMAIN, Some("txn_token")).await;
    assert_eq!(status, 401, "{body}");
    // A Txn-Token for another audience than the trust domain: refused.
    let (status, body) = d.verify(&txn, "gateway", Some("txn_token")).await;
    assert_eq!(status, 401, "{body}");
    // The access token itself still verifies as one.
    let (status, _, body) = d
        .server
        .post(
            "/api/token/verify",
            Some(("gateway", &d.gateway)),
            &json!({"token": access, "audience": "gateway"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn one_txn_token_passes_through_a_chain_of_two_services() {
    let d = domain().await;
    let trust = [("PROTECTED_API_TRUST_DOMAIN", DOMAIN.to_owned())];
    let inventory = Api::start_with(&d.server, None, &trust).await;
    let mut front_env = trust.to_vec();
    front_env.push(("PROTECTED_API_DOWNSTREAM", inventory.base.clone()));
    let front = Api::start_with(&d.server, None, &front_env).await;

    let idp_token = d.idp.token(json!({}));
    let (status, body) = d
        .txn("gateway", &idp_token, JWT, &[("scope", "orders:read")])
        .await;
    assert_eq!(status, 200, "{body}");
    let txn = body["access_token"].as_str().unwrap().to_owned();
    let claims = payload(&txn);

    let (status, body) = front.get_with("/txn", &[("txn-token", &txn)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["txn"], claims["txn"]);
    assert_eq!(body["sub"], "alice");
    let below = &body["downstream"];
    assert_eq!(
        below["txn"], claims["txn"],
        "the same transaction, checked again below"
    );
    assert_eq!(
        below["service"],
        inventory.base.trim_start_matches("http://")
    );

    // No Txn-Token, two of them, or an access token in its place.
    assert_eq!(front.get_with("/txn", &[]).await.0, 401);
    assert_eq!(
        front
            .get_with("/txn", &[("txn-token", &txn), ("txn-token", &txn)])
            .await
            .0,
        400
    );
    let access = d.access_token("orders:read", 60).await;
    let (status, body) = front.get_with("/txn", &[("txn-token", &access)]).await;
    assert_eq!(status, 401, "{body}");
    // A Txn-Token in the Authorization header is not a bearer token there.
    let (status, _, _) = front.call("GET", "/orders", Some(&txn)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn single_use_subjects_limits_and_what_the_requester_cannot_say() {
    let d = domain().await;
    // A single-use subject: refused requests leave it unused, the first
    // good one uses it, the next is refused.
    let once = d
        .server
        .issue(
            "shop",
            &d.shop,
            json!({"audience": "gateway", "scope": "orders:read", "once": true}),
        )
        .await;
    let (status, body) = d
        .txn("gateway", &once, ACCESS, &[("scope", "orders:write")])
        .await;
    assert_oauth_error(status, &body, "invalid_scope");
    // Under 2048 bytes as sent, far over once written again.
    let growing = format!("{{\"n\":[{}1e15]}}", "1e15,".repeat(390));
    assert!(growing.len() < 2048);
    let (status, body) = d
        .txn(
            "gateway",
            &once,
            ACCESS,
            &[("scope", "orders:read"), ("request_context", &growing)],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_request");
    let (status, body) = d
        .txn("gateway", &once, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_eq!(status, 200, "the refusals did not use it up: {body}");
    let (status, body) = d
        .txn("gateway", &once, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_oauth_error(status, &body, "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("already been used"));

    // A revoked subject.
    let revoked = d.access_token("orders:read", 120).await;
    assert_eq!(
        d.server
            .revoke("shop", &d.shop, json!({"token": revoked}))
            .await,
        200
    );
    let (status, body) = d
        .txn("gateway", &revoked, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_oauth_error(status, &body, "invalid_grant");

    // The identity provider addressed its token to the gateway: another
    // workload of the domain cannot use it.
    let (status, body) = d
        .txn(
            "orders",
            &d.idp.token(json!({})),
            JWT,
            &[("scope", "orders:read")],
        )
        .await;
    assert_oauth_error(status, &body, "invalid_grant");

    // The requester cannot write the service's own rctx members.
    let subject = d.access_token("orders:read", 120).await;
    let (status, body) = d
        .txn(
            "gateway",
            &subject,
            ACCESS,
            &[
                ("scope", "orders:read"),
                (
                    "request_context",
                    r#"{"req_wl_chain":["forged"],"authn":"none","sub_iss":"https://forged"}"#,
                ),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let txn = body["access_token"].as_str().unwrap().to_owned();
    let claims = payload(&txn);
    assert!(claims["rctx"].get("req_wl_chain").is_none(), "{claims}");
    assert_eq!(claims["rctx"]["authn"], "client_secret_basic");
    assert_eq!(claims["rctx"]["sub_iss"], d.server.base);

    // Introspection never reports a Txn-Token active.
    let response = d
        .server
        .http
        .post(d.server.url("/oauth/introspect"))
        .basic_auth("plain", Some(&d.plain))
        .form(&[("token", txn.as_str())])
        .send()
        .await
        .expect("introspect");
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"active": false})
    );

    // Eight replacements, and no ninth.
    let mut current = txn;
    for round in 1..=8 {
        let (status, body) = d.txn("orders", &current, TXN, &[]).await;
        assert_eq!(status, 200, "replacement {round}: {body}");
        current = body["access_token"].as_str().unwrap().to_owned();
    }
    let chain = payload(&current)["rctx"]["req_wl_chain"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(chain, 8);
    let (status, body) = d.txn("orders", &current, TXN, &[]).await;
    assert_oauth_error(status, &body, "invalid_grant");

    // An expired Txn-Token is never replaced.
    let (status, body) = d
        .txn("edge", &subject, ACCESS, &[("scope", "orders:read")])
        .await;
    assert_eq!(status, 200, "{body}");
    let short = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(body["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = d.txn("orders", &short, TXN, &[]).await;
    assert_oauth_error(status, &body, "invalid_grant");
}
