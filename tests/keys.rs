//! One signer for the whole fleet: instances with separate data directories
//! on one real Redis share the key ring (created once, rotated once per
//! period, revoked everywhere at once), and their tokens verify with
//! third-party libraries (PyJWT, node jose) through the JWKS.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{add_client, command, eventually, header, interop, jose, start_many, Redis, Server};
use serde_json::{json, Value};

fn fleet_env(
    redis: &Redis,
    root: &Path,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AUTH_JIT_STORE_URL", redis.url()),
        ("AUTH_JIT_KEY_ENCRYPTION_KEY", common::KEK.to_string()),
        ("AUTH_JIT_ISSUER", "http://auth.fleet".to_string()),
        (
            "AUTH_JIT_CLIENTS_FILE",
            root.join("clients.toml").display().to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

async fn jwks(server: &Server) -> Value {
    let (status, _, text) = server.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    serde_json::from_str(&text).expect("jwks")
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

/// `auth-jit keys ...` with the fleet's settings; (success, stdout, stderr).
fn keys_cli(root: &Path, env: &[(&'static str, String)], args: &[&str]) -> (bool, String, String) {
    let out = command(root, env)
        .arg("keys")
        .args(args)
        .output()
        .expect("keys command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn three_instances_started_at_once_sign_as_one() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let env = fleet_env(&redis, root.path(), &[]);
    let billing = add_client(root.path(), &env, "billing", &["--audience", "ledger"]);
    let ledger = add_client(root.path(), &env, "ledger", &["--audience", "audit"]);
    let fleet = start_many(root.path(), 3, &env);

    // Exactly one key, created by whichever instance won the race.
    let (ok, listing, err) = keys_cli(root.path(), &env, &["list"]);
    assert!(ok, "{err}");
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.contains("\tactive"), "{listing}");
    let first = jwks(&fleet[0]).await;
    assert_eq!(kids(&first).len(), 1);
    for server in &fleet[1..] {
        assert_eq!(
            jwks(server).await,
            first,
            "every instance publishes the same JWKS"
        );
    }
    // The key is not in any data directory.
    for i in 0..3 {
        assert!(!root.path().join(format!("{i}/data/keys")).exists());
    }

    for (i, issuer) in fleet.iter().enumerate() {
        let token = issuer
            .issue("billing", &billing, json!({"audience": "ledger"}))
            .await;
        assert_eq!(header(&token)["kid"], kids(&first)[0].as_str());
        for (j, verifier) in fleet.iter().enumerate() {
            let (status, body) = verifier.verify("ledger", &ledger, &token, "ledger").await;
            assert_eq!(status, 200, "token of {i} refused by {j}: {body}");
            let (ok, out) = interop(
                "verify_pyjwt.py",
                &[
                    &verifier.url("/.well-known/jwks.json"),
                    "http://auth.fleet",
                    "ledger",
                    &token,
                ],
            );
            assert!(ok, "PyJWT with the JWKS of {j}, token of {i}: {out}");
        }
    }
}

#[tokio::test]
async fn scheduled_rotation_is_once_per_period_and_a_caching_verifier_never_fails() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    // Period 5 s, published 2 s (+2 s propagation) ahead, cached 1 s,
    // tokens live 2 s: the smallest settings the rules allow.
    let env = fleet_env(&redis, root.path(), &common::FAST_ROTATION);
    let billing = add_client(root.path(), &env, "billing", &["--audience", "ledger"]);
    let fleet = start_many(root.path(), 3, &env);
    let bases: Vec<String> = fleet.iter().map(|s| s.base.clone()).collect();
    let started = std::time::Instant::now();
    // A strict verifier: refetches the JWKS only when its copy is older
    // than max-age, never on an unknown kid.
    let (ok, report) = interop(
        "cached_verifier.py",
        &[
            &bases.join(","),
            "billing",
            &billing,
            "ledger",
            "http://auth.fleet",
            "16",
        ],
    );
    let elapsed = started.elapsed().as_secs();
    assert!(ok, "the caching verifier saw failures: {report}");
    assert!(report["issued"].as_u64().unwrap_or(0) > 50, "{report}");
    let seen = report["kids_seen"].as_array().map_or(0, Vec::len);
    assert!(
        seen >= 3,
        "tokens of at least three keys were verified: {report}"
    );

    // Keys: the first, then one per period for the fleet, not per instance.
    let (ok, listing, err) = keys_cli(root.path(), &env, &["list"]);
    assert!(ok, "{err}");
    eprintln!("{report}\n{listing}");
    let keys = listing.lines().count() as u64;
    let periods = elapsed / 5 + 1;
    assert!(
        keys >= periods && keys <= periods + 2,
        "{keys} keys after {elapsed} s with a 5 s period: {listing}"
    );
}

#[tokio::test]
async fn a_revoked_key_vanishes_everywhere_and_its_tokens_are_refused() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let audit = root.path().join("audit.jsonl");
    let audit_path = audit.display().to_string();
    let env = fleet_env(
        &redis,
        root.path(),
        &[("AUTH_JIT_AUDIT_LOG_FILE", &audit_path)],
    );
    let billing = add_client(root.path(), &env, "billing", &["--audience", "ledger"]);
    let ledger = add_client(root.path(), &env, "ledger", &["--audience", "audit"]);
    let fleet = start_many(root.path(), 2, &env);
    let old_token = fleet[0]
        .issue(
            "billing",
            &billing,
            json!({"audience": "ledger", "ttl": 600}),
        )
        .await;
    let old_kid = header(&old_token)["kid"].as_str().expect("kid").to_owned();

    // The key that signs cannot be revoked before a successor signs.
    let (ok, _, err) = keys_cli(root.path(), &env, &["revoke", &old_kid]);
    assert!(!ok, "revoked the only signing key");
    assert!(err.contains("keys rotate --now"), "{err}");

    let (ok, out, err) = keys_cli(root.path(), &env, &["rotate", "--now"]);
    assert!(ok, "{err}");
    let new_kid = out.trim().to_owned();
    for server in &fleet {
        let switched = eventually(Duration::from_secs(3), || async {
            let t = server
                .issue("billing", &billing, json!({"audience": "ledger"}))
                .await;
            header(&t)["kid"] == new_kid.as_str()
        })
        .await;
        assert!(switched, "an instance never signed with the new key");
    }
    // Until revoked, the old key's tokens still verify.
    assert_eq!(
        fleet[1]
            .verify("ledger", &ledger, &old_token, "ledger")
            .await
            .0,
        200
    );

    let (ok, _, err) = keys_cli(root.path(), &env, &["revoke", &old_kid]);
    assert!(ok, "{err}");
    let revoked_at = std::time::Instant::now();
    for server in &fleet {
        let gone = eventually(Duration::from_secs(2), || async {
            !kids(&jwks(server).await).contains(&old_kid)
                && server
                    .verify("ledger", &ledger, &old_token, "ledger")
                    .await
                    .0
                    == 401
        })
        .await;
        assert!(gone, "the revoked key is still trusted after 2 s");
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(4));
    let (status, body) = fleet[0]
        .verify("ledger", &ledger, &old_token, "ledger")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    // Third parties refuse it too: the key is out of the JWKS.
    let (ok, _) = interop(
        "verify_pyjwt.py",
        &[
            &fleet[0].url("/.well-known/jwks.json"),
            "http://auth.fleet",
            "ledger",
            &old_token,
        ],
    );
    assert!(!ok, "PyJWT still accepts a token of the revoked key");

    let (_, listing, _) = keys_cli(root.path(), &env, &["list"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&old_kid))
        .expect("revoked key listed");
    assert!(
        line.contains("\trevoked") && line.contains("revoked_at="),
        "{line}"
    );
    let events = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"key_revoked\"") && l.contains(&old_kid)),
        "no key_revoked audit event: {events}"
    );
}

#[tokio::test]
async fn rsa_audiences_get_rs256_and_ps256_tokens_that_pyjwt_and_jose_verify() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let env = fleet_env(&redis, root.path(), &[]);
    let billing = add_client(
        root.path(),
        &env,
        "billing",
        &["--audience", "ledger", "gateway", "pss-api"],
    );
    let fleet = start_many(root.path(), 1, &env);
    let server = &fleet[0];
    for (aud, alg) in [("gateway", "RS256"), ("pss-api", "PS256")] {
        let out = command(root.path(), &env)
            .args(["audience", "set", aud, "--signing-alg", alg])
            .output()
            .expect("audience set");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (aud, alg) in [
        ("gateway", "RS256"),
        ("pss-api", "PS256"),
        ("ledger", "EdDSA"),
    ] {
        let signed = eventually(Duration::from_secs(5), || async {
            let (status, _, body) = server
                .post(
                    "/api/token",
                    Some(("billing", &billing)),
                    &json!({"audience": aud}),
                )
                .await;
            status == 200
                && body["access_token"]
                    .as_str()
                    .is_some_and(|t| header(t)["alg"] == alg)
        })
        .await;
        assert!(signed, "{aud} never got {alg} tokens");
        let token = server
            .issue("billing", &billing, json!({"audience": aud}))
            .await;
        let jwks_url = server.url("/.well-known/jwks.json");
        let (ok, out) = interop(
            "verify_pyjwt.py",
            &[&jwks_url, "http://auth.fleet", aud, &token],
        );
        assert!(ok, "PyJWT refused the {alg} token: {out}");
        let (ok, out) = jose(&[&jwks_url, "http://auth.fleet", aud, &token]);
        assert!(ok, "jose refused the {alg} token: {out}");
        assert_eq!(out["alg"], alg);
    }
    let published = jwks(server).await;
    let mut algs: Vec<&str> = published["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["alg"].as_str().expect("every key has alg"))
        .collect();
    algs.sort_unstable();
    assert_eq!(algs, ["EdDSA", "PS256", "RS256"]);
    for key in published["keys"].as_array().expect("keys") {
        assert_eq!(key["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} published"
            );
        }
    }
}

#[tokio::test]
async fn no_private_key_is_ever_written_to_redis_in_the_clear() {
    use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let env = fleet_env(&redis, root.path(), &[("AUTH_JIT_SIGNING_ALG", "RS256")]);
    let fleet = start_many(root.path(), 2, &env);
    let (ok, _, err) = keys_cli(root.path(), &env, &["rotate"]);
    assert!(ok, "{err}");
    drop(fleet);

    // The ring, as Redis holds it.
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--raw",
            "HGETALL",
            "auth-jit:keyring",
        ])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let kek = STANDARD.decode(common::KEK).expect("kek");
    let key = RandomizedNonceKey::new(&AES_256_GCM, &kek).expect("aead key");
    let mut documents = Vec::new();
    for pair in lines.chunks(2) {
        let [field, value] = pair else { continue };
        if !field.starts_with("k:") {
            continue;
        }
        let record: Value = serde_json::from_str(value).expect("record json");
        let sealed = STANDARD
            .decode(record["sealed"].as_str().expect("sealed"))
            .expect("base64");
        let aad = format!(
            "auth-jit-key:v1:{}:{}:{}",
            record["kid"].as_str().expect("kid"),
            record["alg"].as_str().expect("alg"),
            record["not_before"]
        );
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut in_out = body.to_vec();
        let der = key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).expect("nonce"),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .expect("sealed under the KEK, bound to its kid, alg and not-before")
            .to_vec();
        documents.push(der);
    }
    assert_eq!(documents.len(), 2, "{text}");
    // Everything Redis was ever asked to write is in its append-only file.
    let mut written = Vec::new();
    for entry in walk(redis.data_dir()) {
        written.extend(std::fs::read(entry).expect("aof"));
    }
    assert!(!written.is_empty());
    for der in &documents {
        for form in [
            der.clone(),
            STANDARD.encode(der).into_bytes(),
            URL_SAFE_NO_PAD.encode(der).into_bytes(),
        ] {
            // A 64-byte window of the private key is enough to find it.
            let needle = &form[form.len() / 2..form.len() / 2 + 64];
            assert!(
                !written.windows(needle.len()).any(|w| w == needle),
                "private key material written to Redis in the clear"
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn an_existing_keys_directory_is_imported_once_into_an_empty_ring() {
    let root = tempfile::tempdir().expect("tempdir");
    // A deployment on the embedded store...
    let plain = Server::start(
        root.path(),
        &[("AUTH_JIT_ISSUER", "http://auth.fleet".into())],
    );
    let before = kids(&jwks(&plain).await);
    assert_eq!(plain.terminate(), Some(0));
    // ... moves to Redis: its key comes along, and a new replica with an
    // empty data directory signs with it too.
    let redis = Redis::start();
    let env = fleet_env(&redis, root.path(), &[]);
    let billing = add_client(root.path(), &env, "billing", &["--audience", "ledger"]);
    let upgraded = Server::start(root.path(), &env);
    assert_eq!(kids(&jwks(&upgraded).await), before);
    let replica_dir = root.path().join("replica");
    std::fs::create_dir_all(&replica_dir).expect("replica");
    let replica = Server::start(&replica_dir, &env);
    let token = replica
        .issue("billing", &billing, json!({"audience": "ledger"}))
        .await;
    assert_eq!(header(&token)["kid"], before[0].as_str());
    assert!(upgraded.logs().iter().any(|l| l.contains("keys_imported")));
}

#[tokio::test]
async fn the_jwks_is_cached_for_max_age_and_revalidated_by_etag() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path(), &[]);
    let (status, headers, _) = server.get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let again = server
        .http
        .get(server.url("/.well-known/jwks.json"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(again.headers()["etag"].to_str().expect("etag"), etag);
    let other = server
        .http
        .get(server.url("/.well-known/jwks.json"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .expect("request");
    assert_eq!(other.status().as_u16(), 200);
}

#[test]
fn unsafe_key_settings_are_refused_at_start() {
    let root = tempfile::tempdir().expect("tempdir");
    // (settings, names the refusal must mention)
    type Case<'a> = (&'a [(&'a str, String)], &'a [&'a str]);
    let cases: [Case; 3] = [
        (
            &[
                ("AUTH_JIT_KEY_PUBLISH_SECS", "300".into()),
                ("AUTH_JIT_JWKS_MAX_AGE_SECS", "300".into()),
            ],
            &["AUTH_JIT_KEY_PUBLISH_SECS", "AUTH_JIT_JWKS_MAX_AGE_SECS"],
        ),
        (
            &[("AUTH_JIT_KEY_ROTATION_SECS", "600".into())],
            &["AUTH_JIT_KEY_ROTATION_SECS", "AUTH_JIT_MAX_TTL"],
        ),
        (
            &[("AUTH_JIT_STORE_URL", "redis://127.0.0.1:1/0".into())],
            &["AUTH_JIT_KEY_ENCRYPTION_KEY", "openssl rand -base64 32"],
        ),
    ];
    for (env, names) in cases {
        let out = command(root.path(), env)
            .arg("serve")
            .output()
            .expect("serve");
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for name in names {
            assert!(stderr.contains(name), "{env:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn an_import_leaves_revoked_keys_out_and_happens_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let plain_env = [("AUTH_JIT_ISSUER", "http://auth.fleet".to_string())];
    let plain = Server::start(root.path(), &plain_env);
    let old = kids(&jwks(&plain).await);
    let keys_dir = root.path().join("data/keys");
    let backup: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&keys_dir)
        .expect("keys")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "p8"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("key");
            (p, bytes)
        })
        .collect();
    let (ok, _, err) = keys_cli(root.path(), &plain_env, &["rotate", "--now"]);
    assert!(ok, "{err}");
    // A key made in the same second as the old one signs one second later;
    // until then the old one is the signer and cannot be revoked.
    let last_error = std::sync::Mutex::new(String::new());
    let revoked = eventually(Duration::from_secs(10), || async {
        let (ok, _, err) = keys_cli(root.path(), &plain_env, &["revoke", &old[0]]);
        if let Ok(mut last) = last_error.lock() {
            *last = err;
        }
        ok
    })
    .await;
    assert!(
        revoked,
        "the old key could not be revoked: {}",
        last_error.lock().map(|e| e.clone()).unwrap_or_default()
    );
    assert_eq!(plain.terminate(), Some(0));
    // A backup of the revoked key's file comes back, as backups do.
    for (path, bytes) in &backup {
        std::fs::write(path, bytes).expect("restore");
    }
    let redis = Redis::start();
    let env = fleet_env(&redis, root.path(), &[]);
    let upgraded = Server::start(root.path(), &env);
    let imported = kids(&jwks(&upgraded).await);
    assert_eq!(imported.len(), 1, "{imported:?}");
    assert!(!imported.contains(&old[0]), "a revoked key was imported");
    assert!(keys_dir.join(".imported").exists());
    drop(upgraded);
    // The ring deleted to start anew: the directory is not imported again.
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "DEL", "auth-jit:keyring"])
        .output()
        .expect("redis-cli");
    assert!(out.status.success());
    let fresh = Server::start(root.path(), &env);
    let now = kids(&jwks(&fresh).await);
    assert_eq!(now.len(), 1);
    assert!(
        !now.contains(&imported[0]) && !now.contains(&old[0]),
        "{now:?}"
    );
}
