//! End-to-end tests of the HTTP API against the real binary on port 0.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{eventually, header, payload, register_pair, Server};
use serde_json::{json, Value};

fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    (dir, server)
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "body: {body}");
    assert!(body["error_description"].is_string(), "body: {body}");
}

#[tokio::test]
async fn issue_then_verify() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let (status, headers, body) = s
        .post(
            "/api/token",
            Some(("billing", &c.billing)),
            &json!({"audience": "ledger", "scope": "read", "ttl": 120}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120);
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().expect("token");

    let h = header(token);
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "EdDSA");
    let (_, _, jwks) = s.get("/.well-known/jwks.json").await;
    let jwks: Value = serde_json::from_str(&jwks).expect("jwks json");
    assert_eq!(jwks["keys"][0]["kid"], h["kid"]);
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "private key material in JWKS"
    );

    let p = payload(token);
    for claim in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
    ] {
        assert!(p.get(claim).is_some(), "missing {claim}: {p}");
    }
    assert_eq!(p["iss"], s.base);
    assert_eq!(p["aud"], "ledger");
    assert_eq!(p["sub"], "billing");
    assert_eq!(
        p["exp"].as_u64().expect("exp") - p["iat"].as_u64().expect("iat"),
        120
    );

    let (status, body) = s.verify("ledger", &c.ledger, token, "ledger").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["claims"]["jti"], p["jti"]);

    // Scopes asked at verify must all be in the token.
    let (status, _, body) = s
        .post(
            "/api/token/verify",
            Some(("ledger", &c.ledger)),
            &json!({"token": token, "audience": "ledger", "scope": "read write"}),
        )
        .await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_token");
}

#[tokio::test]
async fn default_ttl_and_no_scope() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let (status, _, body) = s
        .post(
            "/api/token",
            Some(("billing", &c.billing)),
            &json!({"audience": "ledger"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "");
    let p = payload(body["access_token"].as_str().expect("token"));
    assert!(
        p.get("scope").is_none(),
        "no scope claim when none asked: {p}"
    );
}

#[tokio::test]
async fn policy_denials() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let open = s.add_client("open", &["--audience", "ledger"]);
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "billing",
            &c.billing,
            json!({"audience": "payroll"}),
            "invalid_target",
        ),
        (
            "billing",
            &c.billing,
            json!({"audience": "ledger", "scope": "read admin"}),
            "invalid_scope",
        ),
        (
            "billing",
            &c.billing,
            json!({"audience": "ledger", "ttl": 301}),
            "invalid_request",
        ),
        (
            "open",
            &open,
            json!({"audience": "ledger", "ttl": 3601}),
            "invalid_request",
        ),
        (
            "billing",
            &c.billing,
            json!({"audience": "ledger", "ttl": 0}),
            "invalid_request",
        ),
        (
            "billing",
            &c.billing,
            json!({"audience": "ledger", "scope": "bad\"scope"}),
            "invalid_scope",
        ),
        (
            "billing",
            &c.billing,
            json!({"audience": "two words"}),
            "invalid_request",
        ),
        (
            "billing",
            &c.billing,
            json!({"audience": "ledger", "bind": {"method": "GET", "url": "/x"}}),
            "invalid_request",
        ),
    ];
    for (id, secret, body, code) in cases {
        let (status, headers, json) = s.post("/api/token", Some((id, secret)), &body).await;
        assert_eq!(status, 400, "{body} -> {json}");
        assert_error(&json, code);
        assert_eq!(headers["content-type"], "application/json");
    }
    // Never silently shortened: the client's exact maximum is granted.
    let (status, _, json) = s
        .post(
            "/api/token",
            Some(("billing", &c.billing)),
            &json!({"audience": "ledger", "ttl": 300}),
        )
        .await;
    assert_eq!((status, json["expires_in"].clone()), (200, json!(300)));
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_look_the_same() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let body = json!({"audience": "ledger"});
    let (s1, h1, b1) = s
        .post("/api/token", Some(("billing", "wrong")), &body)
        .await;
    let (s2, h2, b2) = s
        .post("/api/token", Some(("nobody", &c.billing)), &body)
        .await;
    let (s3, h3, b3) = s.post("/api/token", None, &body).await;
    for (status, headers, json) in [(s1, &h1, &b1), (s2, &h2, &b2), (s3, &h3, &b3)] {
        assert_eq!(status, 401);
        assert_error(json, "invalid_client");
        assert!(headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Basic"));
    }
    assert_eq!(b1, b2);
    // The secret never appears in logs.
    assert!(s.logs().iter().all(|l| !l.contains(&c.billing)));
}

#[tokio::test]
async fn malformed_requests_get_json_errors_never_500() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    // No connection reuse: after refusing an oversized body the server
    // closes the connection, which a pooled client would try to reuse.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let post_raw = |ct: &'static str, body: String| {
        fresh
            .post(s.url("/api/token"))
            .basic_auth("billing", Some(&c.billing))
            .header("content-type", ct)
            .body(body)
    };
    let cases = vec![
        (post_raw("application/json", "{not json".into()), 400),
        (
            post_raw("text/plain", r#"{"audience":"ledger"}"#.into()),
            415,
        ),
        (post_raw("application/json", "{}".into()), 400),
        (
            post_raw("application/json", r#"{"audience": 5}"#.into()),
            400,
        ),
        (
            post_raw(
                "application/json",
                r#"{"audience":"ledger","ttl":-1}"#.into(),
            ),
            400,
        ),
        (
            post_raw(
                "application/json",
                r#"{"audience":"ledger","ttl":"eyJsecret"}"#.into(),
            ),
            400,
        ),
        (
            post_raw(
                "application/json",
                r#"{"audience":"ledger","scopes":"read"}"#.into(),
            ),
            400,
        ),
        (post_raw("application/json", r#"[1,2]"#.into()), 400),
        (
            post_raw(
                "application/json",
                format!(r#"{{"audience":"{}"}}"#, "a".repeat(40_000)),
            ),
            413,
        ),
    ];
    for (request, expected) in cases {
        // An oversized body is refused from its Content-Length before it is
        // read; the server may then close while the client still writes, so
        // a transport error is retried (the answer must still be a 413).
        let mut attempt = 0;
        let resp = loop {
            match request.try_clone().expect("clonable").send().await {
                Ok(resp) => break resp,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("retrying after transport error: {e}");
                }
                Err(e) => panic!("send: {e}"),
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("text");
        assert_eq!(status, expected, "{text}");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
        assert_error(&json, "invalid_request");
        assert!(!text.contains("eyJsecret"), "value echoed: {text}");
    }
    let (status, _, text) = s.get("/no/such/route").await;
    assert_eq!(status, 404);
    assert_error(&serde_json::from_str(&text).expect("json"), "not_found");
    let (status, headers, text) = s.get("/api/token").await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    assert_error(
        &serde_json::from_str(&text).expect("json"),
        "invalid_request",
    );
}

#[tokio::test]
async fn verification_refusals() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let audit = s.add_client("audit", &["--audience", "ledger"]);
    let token = s
        .issue(
            "billing",
            &c.billing,
            json!({"audience": "ledger", "scope": "read"}),
        )
        .await;

    // A client may only verify for audiences it receives.
    let (status, body) = s.verify("audit", &audit, &token, "ledger").await;
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "access_denied");
    // Addressed to someone else.
    let (status, body) = s.verify("audit", &audit, &token, "audit").await;
    assert_eq!(status, 401, "{body}");
    assert_error(&body, "invalid_token");

    // Tampered payload, forged alg=none, garbage.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims = payload(&token);
    claims["scope"] = json!("read write");
    parts[1] = b64.encode(claims.to_string());
    let tampered = parts.join(".");
    let none_header = b64
        .encode(json!({"alg": "none", "typ": "at+jwt", "kid": header(&token)["kid"]}).to_string());
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let jku_header = b64.encode(
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": header(&token)["kid"], "jku": "https://evil/jwks"}).to_string(),
    );
    let with_jku = format!("{jku_header}.{}.{}", parts[1], parts[2]);
    for bad in [
        tampered.as_str(),
        alg_none.as_str(),
        with_jku.as_str(),
        "garbage",
        "",
    ] {
        let (status, body) = s.verify("ledger", &c.ledger, bad, "ledger").await;
        assert_eq!(status, 401, "{bad}: {body}");
        assert_error(&body, "invalid_token");
    }
    let (status, body) = s.verify("ledger", &c.ledger, &token, "ledger").await;
    assert_eq!(status, 200, "the genuine token still verifies: {body}");
}

/// The shared forgery table (tests/common/forgeries.rs) at the issuer:
/// the verifier crate behind the example API must refuse the same list
/// (tests/verifier.rs).
#[tokio::test]
async fn every_forgery_class_is_refused_by_the_verify_endpoint() {
    let (dir, s) = server();
    let c = register_pair(&s);
    let token = s
        .issue(
            "billing",
            &c.billing,
            json!({"audience": "ledger", "scope": "read"}),
        )
        .await;
    let key = common::forgeries::issuer_key(&dir.path().join("data"));
    let table = common::forgeries::forgeries(&token, &key);
    assert!(table.len() >= 25, "{} classes", table.len());
    for forgery in &table {
        let (status, body) = s
            .verify("ledger", &c.ledger, &forgery.token, "ledger")
            .await;
        assert_eq!(status, 401, "{}: {body}", forgery.class);
        assert_error(&body, "invalid_token");
    }
    let (status, body) = s.verify("ledger", &c.ledger, &token, "ledger").await;
    assert_eq!(status, 200, "the genuine token still verifies: {body}");
}

#[tokio::test]
async fn single_use_token_works_once() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let token = s
        .issue(
            "billing",
            &c.billing,
            json!({"audience": "ledger", "once": true}),
        )
        .await;
    assert_eq!(payload(&token)["once"], true);
    let (status, body) = s.verify("ledger", &c.ledger, &token, "ledger").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.verify("ledger", &c.ledger, &token, "ledger").await;
    assert_eq!(status, 401);
    assert_error(&body, "invalid_token");
    assert!(body["error_description"]
        .as_str()
        .expect("desc")
        .contains("already been used"));
}

#[tokio::test]
async fn bound_token_authorizes_one_method_on_one_url() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let token = s
        .issue(
            "billing",
            &c.billing,
            json!({"audience": "ledger", "bind": {"method": "POST", "url": "https://ledger.internal/pay"}}),
        )
        .await;
    let p = payload(&token);
    assert_eq!(
        (p["htm"].as_str(), p["htu"].as_str()),
        (Some("POST"), Some("https://ledger.internal/pay"))
    );
    let verify = |method: Option<&str>, url: Option<&str>| {
        let mut body = json!({"token": token, "audience": "ledger"});
        if let Some(m) = method {
            body["method"] = json!(m);
        }
        if let Some(u) = url {
            body["url"] = json!(u);
        }
        body
    };
    let auth = Some(("ledger", c.ledger.as_str()));
    for (method, url) in [
        (None, None),
        (Some("GET"), Some("https://ledger.internal/pay")),
        (Some("POST"), Some("https://ledger.internal/refund")),
    ] {
        let (status, _, body) = s
            .post("/api/token/verify", auth, &verify(method, url))
            .await;
        assert_eq!(status, 401, "{method:?} {url:?}: {body}");
    }
    let (status, _, body) = s
        .post(
            "/api/token/verify",
            auth,
            &verify(Some("POST"), Some("https://ledger.internal/pay?id=1")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A bound token can be revoked by presenting it, without its request.
    assert_eq!(
        s.revoke("billing", &c.billing, json!({"token": token}))
            .await,
        200
    );
    let (status, _, body) = s
        .post(
            "/api/token/verify",
            auth,
            &verify(Some("POST"), Some("https://ledger.internal/pay")),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error_description"]
        .as_str()
        .expect("desc")
        .contains("revoked"));
}

#[tokio::test]
async fn revocation_by_owner_receiver_and_stranger() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let stranger = s.add_client("stranger", &["--audience", "ledger"]);
    let t1 = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    let t2 = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    let t3 = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;

    // A stranger's revocation answers 200 and changes nothing.
    for body in [json!({"token": t1}), json!({"jti": payload(&t1)["jti"]})] {
        assert_eq!(s.revoke("stranger", &stranger, body.clone()).await, 200);
    }
    assert_eq!(s.verify("ledger", &c.ledger, &t1, "ledger").await.0, 200);

    // The owner by token, the receiver by jti.
    assert_eq!(
        s.revoke("billing", &c.billing, json!({"token": t1})).await,
        200
    );
    assert_eq!(
        s.revoke("ledger", &c.ledger, json!({"jti": payload(&t2)["jti"]}))
            .await,
        200
    );
    for t in [&t1, &t2] {
        let (status, body) = s.verify("ledger", &c.ledger, t, "ledger").await;
        assert_eq!(status, 401);
        assert!(body["error_description"]
            .as_str()
            .expect("desc")
            .contains("revoked"));
    }
    assert_eq!(s.verify("ledger", &c.ledger, &t3, "ledger").await.0, 200);

    // Unknown token: still 200. Both or neither field: 400.
    assert_eq!(
        s.revoke("billing", &c.billing, json!({"token": "x.y.z"}))
            .await,
        200
    );
    for body in [json!({}), json!({"token": t3, "jti": "a"})] {
        let (status, _, json) = s
            .post("/api/token/revoke", Some(("billing", &c.billing)), &body)
            .await;
        assert_eq!(status, 400);
        assert_error(&json, "invalid_request");
    }
}

#[tokio::test]
async fn client_changes_apply_without_restart() {
    let (_dir, s) = server();
    let c = register_pair(&s);
    let token = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;

    // Added while running.
    let late = s.add_client("late", &["--audience", "ledger"]);
    let ok = eventually(Duration::from_secs(10), || async {
        s.post(
            "/api/token",
            Some(("late", &late)),
            &json!({"audience": "ledger"}),
        )
        .await
        .0 == 200
    })
    .await;
    assert!(ok, "a client added by the CLI was not picked up");

    // revoke-tokens: everything billing had up to now stops verifying.
    let out = common::command(&s.dir, &s.env)
        .args(["client", "revoke-tokens", "billing"])
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = eventually(Duration::from_secs(10), || async {
        s.verify("ledger", &c.ledger, &token, "ledger").await.0 == 401
    })
    .await;
    assert!(revoked, "revoke-tokens did not take effect");

    // Removed: cannot authenticate any more.
    let out = common::command(&s.dir, &s.env)
        .args(["client", "remove", "late"])
        .output()
        .expect("cli");
    assert!(out.status.success());
    let gone = eventually(Duration::from_secs(10), || async {
        s.post(
            "/api/token",
            Some(("late", &late)),
            &json!({"audience": "ledger"}),
        )
        .await
        .0 == 401
    })
    .await;
    assert!(gone, "a removed client still authenticates");
}

#[tokio::test]
async fn docs_openapi_landing_and_health() {
    let (_dir, s) = server();
    let (status, _, text) = s.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).expect("openapi json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    for path in [
        "/api/token",
        "/api/token/verify",
        "/api/token/revoke",
        "/.well-known/jwks.json",
        "/api/health",
        "/api/ready",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["basicAuth"]["scheme"],
        "basic"
    );
    let issue = &doc["paths"]["/api/token"]["post"];
    for code in ["200", "400", "401", "429"] {
        assert!(
            issue["responses"].get(code).is_some(),
            "/api/token lacks {code}"
        );
    }
    assert_eq!(issue["security"][0]["basicAuth"], json!([]));

    let (status, _, html) = s.get("/api/docs/").await;
    assert_eq!(status, 200);
    assert!(html.contains("swagger"), "not Swagger UI");
    let (status, _, html) = s.get("/").await;
    assert_eq!(status, 200);
    for link in ["/api/docs", "/.well-known/jwks.json", "/api/health"] {
        assert!(html.contains(link), "landing page lacks {link}");
    }
    let (status, headers, text) = s.get("/api/health").await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json")["status"],
        "ok"
    );
    let (status, _, text) = s.get("/api/ready").await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn pages_carry_security_headers_and_errors_never_echo_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[]);
    for path in ["/", "/api/docs/"] {
        let (status, headers, _) = s.get(path).await;
        assert_eq!(status, 200, "{path}");
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let (_, headers, body) = s.get("/api/health").await;
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert!(!body.contains("version"), "no version banner: {body}");
    // A caller's field names and values never come back.
    let c = common::register_pair(&s);
    let (status, _, body) = s
        .post(
            "/api/token",
            Some(("billing", &c.billing)),
            &json!({"audience": "ledger", "eyJsecretLooking": 1}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(!body.to_string().contains("eyJsecretLooking"), "{body}");
    let (status, _, body) = s
        .post(
            "/api/token",
            Some(("billing", &c.billing)),
            &json!({"audience": "ledger", "ttl": "eyJvalue"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(!body.to_string().contains("eyJvalue"), "{body}");
}
