//! Start-up, shutdown and restarts of the real binary.
// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{command, payload, register_pair, Server};
use serde_json::{json, Value};

#[test]
fn bad_settings_stop_start_up_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("AUTH_JIT_PORT", "abc"),
        ("AUTH_JIT_DEFAULT_TTL", "-5"),
        ("AUTH_JIT_DEFAULT_TTL", "7200"),
        ("AUTH_JIT_LEEWAY", "lots"),
        ("AUTH_JIT_SIGNING_ALG", "none"),
        ("AUTH_JIT_STORE_URL", "postgres://x"),
        ("AUTH_JIT_KEY_ENCRYPTION_KEY", "dG9vIHNob3J0"),
    ];
    for (var, value) in cases {
        let out = command(dir.path(), &[(var, value.to_string())])
            .arg("serve")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}={value}: one line expected: {stderr}");
        assert!(lines[0].contains(var), "{var}={value}: {stderr}");
        if var == "AUTH_JIT_KEY_ENCRYPTION_KEY" {
            assert!(!stderr.contains(value), "secret echoed: {stderr}");
        }
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created by a refused start"
    );
}

#[tokio::test]
async fn restart_keeps_the_key_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A fixed issuer: the port changes between runs.
    let env = [("AUTH_JIT_ISSUER", "http://auth.test".to_string())];
    let first = Server::start(dir.path(), &env);
    let c = register_pair(&first);
    let token = first
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    let (_, _, jwks_before) = first.get("/.well-known/jwks.json").await;
    assert_eq!(first.terminate(), Some(0), "SIGTERM must exit 0");

    let key_dir = dir.path().join("data/keys");
    // One key file (writers' `.lock` aside).
    let files: Vec<_> = std::fs::read_dir(&key_dir)
        .expect("keys dir")
        .filter(|e| {
            e.as_ref()
                .map(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .unwrap_or(true)
        })
        .collect();
    assert_eq!(files.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = files
            .into_iter()
            .next()
            .expect("one")
            .expect("entry")
            .path();
        let mode = std::fs::metadata(file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let second = Server::start(dir.path(), &env);
    let (_, _, jwks_after) = second.get("/.well-known/jwks.json").await;
    assert_eq!(jwks_before, jwks_after, "the key changed across a restart");
    let (status, body) = second.verify("ledger", &c.ledger, &token, "ledger").await;
    assert_eq!(status, 200, "a token from before the restart: {body}");
}

#[tokio::test]
async fn embedded_store_remembers_revocations_and_used_tokens_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("AUTH_JIT_ISSUER", "http://auth.test".to_string())];
    let first = Server::start(dir.path(), &env);
    let c = register_pair(&first);
    let revoked = first
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    let once = first
        .issue(
            "billing",
            &c.billing,
            json!({"audience": "ledger", "once": true}),
        )
        .await;
    assert_eq!(
        first
            .revoke("billing", &c.billing, json!({"token": revoked}))
            .await,
        200
    );
    assert_eq!(
        first.verify("ledger", &c.ledger, &once, "ledger").await.0,
        200
    );
    assert_eq!(first.terminate(), Some(0));

    let second = Server::start(dir.path(), &env);
    let (status, body) = second.verify("ledger", &c.ledger, &revoked, "ledger").await;
    assert_eq!(status, 401, "revocation forgotten: {body}");
    let (status, body) = second.verify("ledger", &c.ledger, &once, "ledger").await;
    assert_eq!(status, 401, "single-use token usable again: {body}");
    assert!(body["error_description"]
        .as_str()
        .expect("desc")
        .contains("already been used"));
}

#[test]
fn a_second_instance_on_the_same_embedded_store_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Server::start(dir.path(), &[]);
    let out = command(dir.path(), &[]).arg("serve").output().expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTH_JIT_STORE_URL"), "{stderr}");
}

#[tokio::test]
async fn es256_keys_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[("AUTH_JIT_SIGNING_ALG", "ES256".into())]);
    let c = register_pair(&s);
    let token = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    assert_eq!(common::header(&token)["alg"], "ES256");
    assert_eq!(payload(&token)["aud"], "ledger");
    let (_, _, jwks) = s.get("/.well-known/jwks.json").await;
    let jwks: Value = serde_json::from_str(&jwks).expect("json");
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(s.verify("ledger", &c.ledger, &token, "ledger").await.0, 200);
}

#[test]
fn client_cli_prints_only_the_secret_and_lists_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = common::add_client(
        dir.path(),
        &[],
        "svc",
        &["--audience", "api", "--scope", "read"],
    );
    assert!(secret.starts_with("ajs_") && secret.len() == 47, "{secret}");
    let out = command(dir.path(), &[])
        .args(["client", "list"])
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("svc") && listing.contains("audiences=api"),
        "{listing}"
    );
    assert!(!listing.contains(&secret));
    let file = std::fs::read_to_string(dir.path().join("data/clients.toml")).expect("clients file");
    assert!(!file.contains(&secret), "plain secret stored");
    let dup = command(dir.path(), &[])
        .args(["client", "add", "svc", "--audience", "api"])
        .output()
        .expect("dup");
    assert!(!dup.status.success());
    assert!(
        dup.stdout.is_empty(),
        "nothing on stdout when nothing was created"
    );
    let bad = command(dir.path(), &[])
        .args(["client", "add", "bad id", "--audience", "api"])
        .output()
        .expect("bad");
    assert!(!bad.status.success());
    let removed = command(dir.path(), &[])
        .args(["client", "remove", "svc"])
        .output()
        .expect("remove");
    assert!(removed.status.success());
    let keys = command(dir.path(), &[])
        .args(["keys", "list"])
        .output()
        .expect("keys");
    assert!(keys.status.success());
}

#[test]
fn concurrent_client_adds_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                common::add_client(&path, &[], &format!("svc-{i}"), &["--audience", "api"])
            })
        })
        .collect();
    let secrets: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(secrets.len(), 8);
    let out = command(dir.path(), &[])
        .args(["client", "list"])
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&out.stdout);
    for i in 0..8 {
        assert!(
            listing.contains(&format!("svc-{i}\t")),
            "svc-{i} lost: {listing}"
        );
    }
}

#[tokio::test]
async fn key_rotation_publishes_first_then_signs_and_old_tokens_keep_verifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.jsonl");
    let env = [
        ("AUTH_JIT_KEY_PUBLISH_SECS", "3".to_string()),
        ("AUTH_JIT_JWKS_MAX_AGE_SECS", "2".to_string()),
        ("AUTH_JIT_AUDIT_LOG_FILE", audit.display().to_string()),
    ];
    let s = Server::start(dir.path(), &env);
    let c = register_pair(&s);
    let old_token = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    let old_kid = common::header(&old_token)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();

    let out = command(dir.path(), &env)
        .args(["keys", "rotate"])
        .output()
        .expect("rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_kid = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    // Published first (the server re-reads the keys every second) ...
    let jwks_kids = || async {
        let (_, _, text) = s.get("/.well-known/jwks.json").await;
        let jwks: Value = serde_json::from_str(&text).expect("jwks");
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let published = common::eventually(std::time::Duration::from_secs(3), || async {
        jwks_kids().await.contains(&new_kid)
    })
    .await;
    assert!(published, "the next key was not published");
    // ... while the old key still signs.
    let during = s
        .issue("billing", &c.billing, json!({"audience": "ledger"}))
        .await;
    assert_eq!(
        common::header(&during)["kid"],
        old_kid.as_str(),
        "signed before its time"
    );

    // Then the new key signs; tokens of the old one still verify.
    let switched = common::eventually(std::time::Duration::from_secs(10), || async {
        let t = s
            .issue("billing", &c.billing, json!({"audience": "ledger"}))
            .await;
        common::header(&t)["kid"] == new_kid.as_str()
    })
    .await;
    assert!(switched, "the new key never started signing");
    assert!(
        jwks_kids().await.contains(&old_kid),
        "old key unpublished too early"
    );
    assert_eq!(
        s.verify("ledger", &c.ledger, &old_token, "ledger").await.0,
        200
    );

    let listing = command(dir.path(), &env)
        .args(["keys", "list"])
        .output()
        .expect("list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains(&format!("{old_kid}\tEdDSA")) && listing.contains("retired"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("{new_kid}\tEdDSA")) && listing.contains("active"),
        "{listing}"
    );

    // An emergency rotation signs at once.
    let out = command(dir.path(), &env)
        .args(["keys", "rotate", "--now"])
        .output()
        .expect("rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let urgent = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    let now_signing = common::eventually(std::time::Duration::from_secs(5), || async {
        let t = s
            .issue("billing", &c.billing, json!({"audience": "ledger"}))
            .await;
        common::header(&t)["kid"] == urgent.as_str()
    })
    .await;
    assert!(now_signing);

    // Both steps are audited: the command's `key_rotated`, the server's
    // `key_activated` (they share the audit file here).
    let events: Vec<Value> = std::fs::read_to_string(&audit)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["event"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "key_rotated").count(),
        2,
        "{kinds:?}"
    );
    let activated: Vec<&Value> = events
        .iter()
        .filter(|e| e["fields"]["event"] == "key_activated")
        .collect();
    assert!(activated
        .iter()
        .any(|e| e["fields"]["kid"] == new_kid.as_str()
            && e["fields"]["previous"] == old_kid.as_str()));
    assert!(activated
        .iter()
        .any(|e| e["fields"]["kid"] == urgent.as_str()));
}
