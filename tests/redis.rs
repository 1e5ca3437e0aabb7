//! Scale-out on a real Redis: two instances share revocations and
//! single-use consumption; a lost Redis fails closed and recovers.
//! `make test` installs redis-server; each test starts its own on a free
//! loopback port and stops it.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{add_client, payload, Redis, Server};
use serde_json::json;

struct Fleet {
    _dir: tempfile::TempDir,
    a: Server,
    b: Server,
    billing: String,
    ledger: String,
    burst: String,
}

/// Two instances with their own data directories and the same clients file
/// and issuer, on one Redis.
fn fleet(redis: &Redis) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("shared");
    let env = vec![
        ("AUTH_JIT_STORE_URL", redis.url()),
        ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.to_string()),
        ("AUTH_JIT_ISSUER", "http://auth.fleet".to_string()),
        (
            "AUTH_JIT_CLIENTS_FILE",
            shared.join("clients.toml").display().to_string(),
        ),
    ];
    let billing = add_client(dir.path(), &env, "billing", &["--audience", "ledger"]);
    let ledger = add_client(dir.path(), &env, "ledger", &["--audience", "audit"]);
    let burst = add_client(
        dir.path(),
        &env,
        "burst",
        &["--audience", "ledger", "--rate-limit", "5"],
    );
    let dir_a = dir.path().join("a");
    let dir_b = dir.path().join("b");
    std::fs::create_dir_all(&dir_a).expect("a");
    std::fs::create_dir_all(&dir_b).expect("b");
    // Separate data directories: the key ring lives in Redis.
    let a = Server::start(&dir_a, &env);
    let b = Server::start(&dir_b, &env);
    Fleet {
        _dir: dir,
        a,
        b,
        billing,
        ledger,
        burst,
    }
}

#[tokio::test]
async fn a_revocation_through_one_instance_holds_on_the_other() {
    let redis = Redis::start();
    let f = fleet(&redis);
    let token =
        f.a.issue("billing", &f.billing, json!({"audience": "ledger"}))
            .await;
    assert_eq!(
        f.b.verify("ledger", &f.ledger, &token, "ledger").await.0,
        200
    );
    let (status, _, _) =
        f.a.post(
            "/api/token/revoke",
            Some(("ledger", &f.ledger)),
            &json!({"jti": payload(&token)["jti"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = f.b.verify("ledger", &f.ledger, &token, "ledger").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error_description"]
        .as_str()
        .expect("desc")
        .contains("revoked"));
}

#[tokio::test]
async fn fifty_concurrent_verifications_of_one_single_use_token_succeed_once() {
    let redis = Redis::start();
    let f = Arc::new(fleet(&redis));
    let token =
        f.a.issue(
            "billing",
            &f.billing,
            json!({"audience": "ledger", "once": true}),
        )
        .await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let f = Arc::clone(&f);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let server = if i % 2 == 0 { &f.a } else { &f.b };
            server.verify("ledger", &f.ledger, &token, "ledger").await.0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let used = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!((ok, used), (1, 49), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_fails_closed_and_recovery_needs_no_restart() {
    let mut redis = Redis::start();
    let f = fleet(&redis);
    let live =
        f.a.issue("billing", &f.billing, json!({"audience": "ledger"}))
            .await;
    let revoked =
        f.a.issue("billing", &f.billing, json!({"audience": "ledger"}))
            .await;
    let (status, _, _) =
        f.a.post(
            "/api/token/revoke",
            Some(("billing", &f.billing)),
            &json!({"token": revoked}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(f.a.get("/api/ready").await.0, 200);

    redis.stop();
    for server in [&f.a, &f.b] {
        for token in [&live, &revoked] {
            let (status, headers, body) = server
                .post(
                    "/api/token/verify",
                    Some(("ledger", &f.ledger)),
                    &json!({"token": token, "audience": "ledger"}),
                )
                .await;
            assert_eq!(status, 503, "{body}");
            assert_ne!(body["active"], true);
            assert_eq!(body["error"], "temporarily_unavailable");
            assert!(headers.contains_key("retry-after"));
        }
        let (status, _, text) = server.get("/api/ready").await;
        assert_eq!(status, 503, "{text}");
        // Ordinary issuance keeps working; single-use issuance does not.
        assert_eq!(
            server
                .post(
                    "/api/token",
                    Some(("billing", &f.billing)),
                    &json!({"audience": "ledger"})
                )
                .await
                .0,
            200
        );
        let (status, _, body) = server
            .post(
                "/api/token",
                Some(("billing", &f.billing)),
                &json!({"audience": "ledger", "once": true}),
            )
            .await;
        assert_eq!(status, 503, "{body}");
        let (status, _, _) = server
            .post(
                "/api/token/revoke",
                Some(("billing", &f.billing)),
                &json!({"token": live}),
            )
            .await;
        assert_eq!(status, 503);
    }

    redis.resume();
    for server in [&f.a, &f.b] {
        let recovered = common::eventually(std::time::Duration::from_secs(15), || async {
            server.get("/api/ready").await.0 == 200
        })
        .await;
        assert!(recovered, "not ready again after Redis came back");
        assert_eq!(
            server.verify("ledger", &f.ledger, &live, "ledger").await.0,
            200
        );
        let (status, body) = server.verify("ledger", &f.ledger, &revoked, "ledger").await;
        assert_eq!(status, 401, "the revocation must survive: {body}");
    }
}

/// Runs openssl; `make test` makes sure it is installed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed: run `make test`");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rediss_with_a_private_ca_works_and_an_untrusted_server_is_refused() {
    let pki = tempfile::tempdir().expect("tempdir");
    let p = pki.path();
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=auth-jit test CA",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(p.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let redis = Redis::start_tls(p);
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);

    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = Server::start(
        dir.path(),
        &[
            ("AUTH_JIT_STORE_URL", url.clone()),
            ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.to_string()),
            ("SSL_CERT_FILE", p.join("ca.pem").display().to_string()),
        ],
    );
    let c = common::register_pair(&trusted);
    assert_eq!(trusted.get("/api/ready").await.0, 200);
    let once = trusted
        .issue(
            "billing",
            &c.billing,
            json!({"audience": "ledger", "once": true}),
        )
        .await;
    assert_eq!(
        trusted.verify("ledger", &c.ledger, &once, "ledger").await.0,
        200
    );
    assert_eq!(
        trusted.verify("ledger", &c.ledger, &once, "ledger").await.0,
        401
    );

    // Without the CA, the server's certificate is not trusted: fail closed.
    let other = tempfile::tempdir().expect("tempdir");
    let untrusted = Server::start(
        other.path(),
        &[
            ("AUTH_JIT_STORE_URL", url),
            ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.to_string()),
        ],
    );
    assert_eq!(untrusted.get("/api/ready").await.0, 503);
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_the_fleet() {
    let redis = Redis::start();
    let f = fleet(&redis);
    common::assert_rate_limit_is_shared(&[&f.a, &f.b], "burst", &f.burst, "ledger").await;
}
