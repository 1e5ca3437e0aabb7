//! The OAuth 2.0 surface driven by a stock client library (Authlib,
//! unmodified, from the venv `make test` prepares), plus our own tests of
//! every refusal.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{add_client, interop, payload, Server};
use serde_json::{json, Value};

struct Setup {
    _dir: tempfile::TempDir,
    s: Server,
    billing: String,
    ledger: String,
    audit: String,
}

/// billing -> ledger (read write); ledger may exchange towards audit (read);
/// audit receives audit.
fn setup(env: &[(&'static str, String)]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let billing = add_client(
        dir.path(),
        env,
        "billing",
        &["--audience", "ledger", "--scope", "read", "write"],
    );
    let ledger = add_client(
        dir.path(),
        env,
        "ledger",
        &["--audience", "audit", "--scope", "read", "--exchange"],
    );
    let audit = add_client(
        dir.path(),
        env,
        "audit",
        &["--audience", "archive", "--scope", "read", "--exchange"],
    );
    let s = Server::start(dir.path(), env);
    Setup {
        _dir: dir,
        s,
        billing,
        ledger,
        audit,
    }
}

async fn form(
    s: &Server,
    path: &str,
    auth: Option<(&str, &str)>,
    fields: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = s.http.post(s.url(path)).form(fields);
    if let Some((id, secret)) = auth {
        req = req.basic_auth(id, Some(secret));
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn pyjwt_verifies(s: &Server, token: &str, aud: &str) {
    let (ok, out) = interop(
        "verify_pyjwt.py",
        &[&s.url("/.well-known/jwks.json"), &s.base, aud, token],
    );
    assert!(ok, "PyJWT refused the token: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_gets_tokens_with_every_client_authentication_method() {
    let t = setup(&[]);
    let token_url = t.s.url("/oauth/token");
    for method in ["client_secret_basic", "client_secret_post"] {
        let (ok, out) = interop(
            "oauth_authlib.py",
            &[
                "client-credentials",
                "--token-url",
                &token_url,
                "--client-id",
                "billing",
                "--secret",
                &t.billing,
                "--method",
                method,
                "--audience",
                "ledger",
                "--scope",
                "read",
            ],
        );
        assert!(ok, "{method}: {out}");
        assert_eq!(out["token_type"], "Bearer");
        assert_eq!(out["scope"], "read");
        let token = out["access_token"].as_str().expect("token");
        pyjwt_verifies(&t.s, token, "ledger");
        assert_eq!(
            t.s.verify("ledger", &t.ledger, token, "ledger").await.0,
            200,
            "{method}"
        );
    }
    for alg in ["EdDSA", "ES256", "RS256"] {
        let private = t.s.dir.join(format!("{alg}.key"));
        let public = t.s.dir.join(format!("{alg}.pub"));
        let (ok, out) = interop(
            "oauth_authlib.py",
            &[
                "gen-key",
                "--alg",
                alg,
                "--private",
                &private.display().to_string(),
                "--public",
                &public.display().to_string(),
            ],
        );
        assert!(ok, "{out}");
        let id = format!("keyed-{}", alg.to_lowercase());
        let printed =
            common::add_key_client(&t.s.dir, &t.s.env, &id, &["--scope", "read"], &public);
        assert!(
            printed.status.success(),
            "{}",
            String::from_utf8_lossy(&printed.stderr)
        );
        assert!(
            printed.stdout.is_empty(),
            "a key client has no secret to print"
        );
        let mut fetched = (false, Value::Null);
        // The running server picks the new client up from the file.
        for _ in 0..100 {
            fetched = interop(
                "oauth_authlib.py",
                &[
                    "client-credentials",
                    "--token-url",
                    &token_url,
                    "--client-id",
                    &id,
                    "--private-key",
                    &private.display().to_string(),
                    "--alg",
                    alg,
                    "--audience",
                    "ledger",
                ],
            );
            if fetched.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (ok, out) = fetched;
        assert!(ok, "private_key_jwt with {alg}: {out}");
        let token = out["access_token"].as_str().expect("token");
        assert_eq!(payload(token)["client_id"], id.as_str());
        pyjwt_verifies(&t.s, token, "ledger");

        // The same assertion twice: the second is a replay.
        let (ok, out) = interop(
            "oauth_authlib.py",
            &[
                "replay",
                "--token-url",
                &token_url,
                "--client-id",
                &id,
                "--private-key",
                &private.display().to_string(),
                "--alg",
                alg,
                "--audience",
                "ledger",
            ],
        );
        assert!(ok, "{out}");
        assert_eq!(
            (out["first"].as_u64(), out["second"].as_u64()),
            (Some(200), Some(401)),
            "{alg}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_exchanges_introspects_and_revokes() {
    let t = setup(&[]);
    let original =
        t.s.issue(
            "billing",
            &t.billing,
            json!({"audience": "ledger", "scope": "read write", "ttl": 300}),
        )
        .await;
    let (ok, out) = interop(
        "oauth_authlib.py",
        &[
            "exchange",
            "--token-url",
            &t.s.url("/oauth/token"),
            "--client-id",
            "ledger",
            "--secret",
            &t.ledger,
            "--subject-token",
            &original,
            "--audience",
            "audit",
            "--scope",
            "read",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        out["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let exchanged = out["access_token"].as_str().expect("token").to_owned();
    let (before, after) = (payload(&original), payload(&exchanged));
    assert_eq!(after["sub"], "billing", "the subject is kept");
    assert_eq!(after["client_id"], "ledger");
    assert_eq!(after["aud"], "audit");
    assert_eq!(after["scope"], "read");
    assert_eq!(after["act"], json!({"sub": "ledger"}));
    assert!(
        after["exp"].as_u64() <= before["exp"].as_u64(),
        "outlives the subject token"
    );
    pyjwt_verifies(&t.s, &exchanged, "audit");

    let introspect = |id: &'static str, secret: String, token: String| {
        let url = t.s.url("/oauth/introspect");
        async move {
            interop(
                "oauth_authlib.py",
                &[
                    "introspect",
                    "--url",
                    &url,
                    "--client-id",
                    id,
                    "--secret",
                    &secret,
                    "--token",
                    &token,
                ],
            )
        }
    };
    let (ok, out) = introspect("audit", t.audit.clone(), exchanged.clone()).await;
    assert!(ok, "{out}");
    assert_eq!(out["active"], true);
    assert_eq!(out["sub"], "billing");
    assert_eq!(out["act"]["sub"], "ledger");
    assert_eq!(out["token_type"], "Bearer");
    // Not addressed to the caller: inactive and nothing more.
    let (_, out) = introspect("audit", t.audit.clone(), original.clone()).await;
    assert_eq!(out, json!({"active": false}));

    let (ok, out) = interop(
        "oauth_authlib.py",
        &[
            "revoke",
            "--url",
            &t.s.url("/oauth/revoke"),
            "--client-id",
            "ledger",
            "--secret",
            &t.ledger,
            "--token",
            &exchanged,
        ],
    );
    assert!(ok, "{out}");
    let (_, out) = introspect("audit", t.audit.clone(), exchanged.clone()).await;
    assert_eq!(out, json!({"active": false}), "revoked");
    // The original is untouched by revoking the exchanged token.
    assert_eq!(
        t.s.verify("ledger", &t.ledger, &original, "ledger").await.0,
        200
    );
}

#[tokio::test]
async fn token_endpoint_refusals() {
    let t = setup(&[]);
    let basic = Some(("billing", t.billing.as_str()));
    let cc = [("grant_type", "client_credentials"), ("audience", "ledger")];
    type Case<'a> = (
        Option<(&'a str, &'a str)>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        // Two authentication methods at once.
        (
            basic,
            vec![
                ("grant_type", "client_credentials"),
                ("audience", "ledger"),
                ("client_id", "billing"),
                ("client_secret", &t.billing),
            ],
            400,
            "invalid_request",
        ),
        // A repeated parameter.
        (
            basic,
            vec![
                ("grant_type", "client_credentials"),
                ("audience", "ledger"),
                ("scope", "read"),
                ("scope", "write"),
            ],
            400,
            "invalid_request",
        ),
        (
            basic,
            vec![("grant_type", "password"), ("audience", "ledger")],
            400,
            "unsupported_grant_type",
        ),
        (
            basic,
            vec![("grant_type", "client_credentials")],
            400,
            "invalid_target",
        ),
        (
            basic,
            vec![
                ("grant_type", "client_credentials"),
                ("audience", "payroll"),
            ],
            400,
            "invalid_target",
        ),
        (
            basic,
            vec![
                ("grant_type", "client_credentials"),
                ("audience", "ledger"),
                ("resource", "other"),
            ],
            400,
            "invalid_target",
        ),
        (
            basic,
            vec![
                ("grant_type", "client_credentials"),
                ("audience", "ledger"),
                ("scope", "admin"),
            ],
            400,
            "invalid_scope",
        ),
        (
            Some(("billing", "wrong")),
            cc.to_vec(),
            401,
            "invalid_client",
        ),
        (None, cc.to_vec(), 401, "invalid_client"),
        (
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("audience", "ledger"),
                ("client_id", "billing"),
                ("client_secret", "wrong"),
            ],
            401,
            "invalid_client",
        ),
    ];
    for (auth, fields, status, code) in cases {
        let (got, body) = form(&t.s, "/oauth/token", auth, &fields).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{fields:?}: {body}"
        );
    }
    // client_secret_post works on its own; `resource` names the audience too.
    let (status, body) = form(
        &t.s,
        "/oauth/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("resource", "ledger"),
            ("client_id", "billing"),
            ("client_secret", &t.billing),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // JSON is not a form: 415, still in the OAuth error shape.
    let resp =
        t.s.http
            .post(t.s.url("/oauth/token"))
            .basic_auth("billing", Some(&t.billing))
            .json(&json!({"grant_type": "client_credentials", "audience": "ledger"}))
            .send()
            .await
            .expect("send");
    assert_eq!(resp.status().as_u16(), 415);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
}

/// A client assertion signed by our test's own Ed25519 key (a forger's or
/// the client's, as each case needs).
fn assertion(key: &jsonwebtoken::EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        key,
    )
    .expect("sign")
}

#[tokio::test]
async fn private_key_jwt_refusals() {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let t = setup(&[]);
    let pair = Ed25519KeyPair::generate().expect("key");
    let der = pair.to_pkcs8v1().expect("pkcs8");
    let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_ref());
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
    let jwk_file = t.s.dir.join("svc.jwk.json");
    std::fs::write(&jwk_file, jwk.to_string()).expect("write jwk");
    let out = common::add_key_client(&t.s.dir, &t.s.env, "svc", &[], &jwk_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let private = json!({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "d": URL_SAFE_NO_PAD.encode([1u8; 32])});
    std::fs::write(&jwk_file, private.to_string()).expect("write");
    let refused = common::add_key_client(&t.s.dir, &t.s.env, "leaky", &[], &jwk_file);
    assert!(!refused.status.success(), "a private JWK must be refused");

    let token_url = t.s.url("/oauth/token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let good = |jti: &str| json!({"iss": "svc", "sub": "svc", "aud": token_url, "exp": now + 60, "iat": now, "jti": jti});
    let post = |jwt: String| {
        let s = &t.s;
        async move {
            form(
                s,
                "/oauth/token",
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("audience", "ledger"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &jwt),
                ],
            )
            .await
        }
    };
    // Wait for the running server to read the new client.
    let mut first = (0, Value::Null);
    for i in 0..100 {
        first = post(assertion(&key, good(&format!("warm-{i}")))).await;
        if first.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(first.0, 200, "{}", first.1);

    let mut cases = Vec::new();
    let mut patch = |name: &str, value: Value, jti: &str| {
        let mut c = good(jti);
        c[name] = value;
        cases.push((name.to_owned(), c));
    };
    patch("aud", json!("https://elsewhere/oauth/token"), "a");
    patch("exp", json!(now + 7200), "b");
    patch("exp", json!(now - 120), "c");
    patch("sub", json!("billing"), "d");
    patch("exp", json!((now + 60).to_string()), "e");
    for (name, claims) in cases {
        let (status, body) = post(assertion(&key, claims)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{name}: {body}"
        );
    }
    // Replay of a good assertion.
    let once = assertion(&key, good("replayed"));
    assert_eq!(post(once.clone()).await.0, 200);
    assert_eq!(post(once).await.0, 401);
    // Signed by another key.
    let other = Ed25519KeyPair::generate()
        .expect("key")
        .to_pkcs8v1()
        .expect("pkcs8");
    let forged = assertion(
        &jsonwebtoken::EncodingKey::from_ed_der(other.as_ref()),
        good("forged"),
    );
    assert_eq!(post(forged).await.0, 401);
    // A secret client cannot authenticate by assertion, nor a key client by secret.
    let (status, _) = form(
        &t.s,
        "/oauth/token",
        Some(("svc", "anything")),
        &[("grant_type", "client_credentials"), ("audience", "ledger")],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn token_exchange_refusals() {
    let t = setup(&[("AUTH_JIT_MAX_DELEGATION_DEPTH", "1".to_string())]);
    let original =
        t.s.issue(
            "billing",
            &t.billing,
            json!({"audience": "ledger", "scope": "read"}),
        )
        .await;
    let exchange = |id: &'static str,
                    secret: &str,
                    subject: &str,
                    aud: &'static str,
                    scope: Option<&'static str>| {
        let mut fields = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token", subject.to_owned()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
            ("audience", aud.to_owned()),
        ];
        if let Some(scope) = scope {
            fields.push(("scope", scope.to_owned()));
        }
        let secret = secret.to_owned();
        let s = &t.s;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            form(s, "/oauth/token", Some((id, &secret)), &fields).await
        }
    };
    // Widening scope.
    let (status, body) =
        exchange("ledger", &t.ledger, &original, "audit", Some("read write")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    // Not addressed to the caller.
    let (status, body) = exchange("audit", &t.audit, &original, "archive", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // Not allowed to exchange.
    let (status, body) = exchange("billing", &t.billing, &original, "ledger", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );
    // A target the exchanger may not have.
    let (status, body) = exchange("ledger", &t.ledger, &original, "payroll", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    // Garbage subject token.
    let (status, body) = exchange("ledger", &t.ledger, "not.a.token", "audit", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // One hop is allowed, a second is over the cap of 1.
    let (status, body) = exchange("ledger", &t.ledger, &original, "audit", None).await;
    assert_eq!(status, 200, "{body}");
    let hop = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = exchange("audit", &t.audit, &hop, "archive", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(body["error_description"]
        .as_str()
        .expect("desc")
        .contains("too deep"));
}

#[tokio::test]
async fn introspection_and_revocation_edges() {
    let t = setup(&[]);
    let token =
        t.s.issue("billing", &t.billing, json!({"audience": "ledger"}))
            .await;
    let once =
        t.s.issue(
            "billing",
            &t.billing,
            json!({"audience": "ledger", "once": true}),
        )
        .await;
    let ledger = Some(("ledger", t.ledger.as_str()));
    let (status, body) = form(&t.s, "/oauth/introspect", ledger, &[("token", &token)]).await;
    assert_eq!(
        (status, body["active"].clone()),
        (200, json!(true)),
        "{body}"
    );
    for junk in ["garbage", "a.b.c", ""] {
        let (status, body) = form(&t.s, "/oauth/introspect", ledger, &[("token", junk)]).await;
        if junk.is_empty() {
            assert_eq!(status, 400, "missing token");
        } else {
            assert_eq!((status, body), (200, json!({"active": false})));
        }
    }
    // Introspection consumes a single-use token, as verification does:
    // RFC 7662 clients do not know `once`.
    let (_, body) = form(&t.s, "/oauth/introspect", ledger, &[("token", &once)]).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["once"], true);
    let (_, body) = form(&t.s, "/oauth/introspect", ledger, &[("token", &once)]).await;
    assert_eq!(
        body,
        json!({"active": false}),
        "used by the first introspection"
    );
    assert_eq!(
        t.s.verify("ledger", &t.ledger, &once, "ledger").await.0,
        401
    );
    // Unauthenticated introspection is refused.
    let (status, _) = form(&t.s, "/oauth/introspect", None, &[("token", &token)]).await;
    assert_eq!(status, 401);
    // RFC 7009: a stranger's revocation answers 200 and changes nothing;
    // the receiver's revocation takes effect.
    let (status, _) = form(
        &t.s,
        "/oauth/revoke",
        Some(("audit", &t.audit)),
        &[("token", &token)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        t.s.verify("ledger", &t.ledger, &token, "ledger").await.0,
        200
    );
    let (status, _) = form(
        &t.s,
        "/oauth/revoke",
        ledger,
        &[("token", &token), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = form(&t.s, "/oauth/introspect", ledger, &[("token", &token)]).await;
    assert_eq!(body, json!({"active": false}));
    let (status, _) = form(&t.s, "/oauth/revoke", ledger, &[("token", "garbage")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metadata_tells_the_truth() {
    let t = setup(&[]);
    let (status, _, text) = t.s.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(status, 200);
    let m: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(m["issuer"], t.s.base);
    for (field, path) in [
        ("token_endpoint", "/oauth/token"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(m[field], t.s.url(path), "{field}");
    }
    let (status, _, _) = t.s.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(
        m["grant_types_supported"],
        json!([
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt"
        ])
    );
    assert_eq!(
        m["access_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    let (_, _, doc) = t.s.get("/api/openapi.json").await;
    let doc: Value = serde_json::from_str(&doc).expect("json");
    for path in [
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/.well-known/oauth-authorization-server",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
}
