//! The ring's rules, on the directory backend (the Redis backend runs the
//! same code through `tests/keys.rs` against a real Redis).

use super::*;
use crate::services::store::{Store, StoreHandle};

fn settings(dir: &Path, extra: &[(&str, String)]) -> Settings {
    let mut env = vec![("AUTH_JIT_DATA_DIR".to_string(), dir.display().to_string())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Settings::from_sources(None, env).expect("settings")
}

fn ring(s: &Settings) -> KeyRing {
    KeyRing::open(s, None)
}

fn policy(s: &Settings) -> RingPolicy {
    RingPolicy::new(s, [])
}

async fn set(ring: &KeyRing, s: &Settings, now: u64) -> KeySet {
    ring.ensure(&policy(s), now).await.expect("ensure");
    ring.key_set(&policy(s), now).await.expect("key set")
}

fn state(set: &KeySet, kid: &str) -> Option<KeyState> {
    set.info().iter().find(|k| k.kid == kid).map(|k| k.state)
}

#[tokio::test]
async fn a_key_is_created_once_private_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let first = set(&ring(&s), &s, 100).await;
    let second = set(&ring(&s), &s, 200).await;
    assert_eq!(
        first.active().expect("active").kid(),
        second.active().expect("active").kid()
    );
    assert_eq!(second.info().len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&second.info()[0].location)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let jwks: serde_json::Value = serde_json::from_slice(&first.jwks().body).expect("jwks");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        jwks["keys"][0]["kid"],
        first.active().expect("active").kid()
    );
}

#[tokio::test]
async fn changing_the_algorithm_adds_a_key_and_keeps_the_old_one_verifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ed_settings = settings(dir.path(), &[]);
    let ed = set(&ring(&ed_settings), &ed_settings, 100).await;
    let es_settings = settings(dir.path(), &[("AUTH_JIT_SIGNING_ALG", "ES256".into())]);
    let both = set(&ring(&es_settings), &es_settings, 200).await;
    assert_eq!(both.active().expect("active").alg(), SigningAlg::ES256);
    assert!(both.find(ed.active().expect("active").kid()).is_some());
    // The ring, not one instance's settings, decides a key's state: the
    // EdDSA key stays the active EdDSA key (signing nothing here) until it
    // is revoked, which this instance allows since it does not use EdDSA.
    let old = ed.active().expect("active").kid().to_owned();
    assert_eq!(state(&both, &old), Some(KeyState::Active));
    let r = ring(&es_settings);
    assert!(r
        .revoke(&policy(&es_settings), &old, 300)
        .await
        .expect("revoke"));
    let after = r.key_set(&policy(&es_settings), 300).await.expect("set");
    assert!(after.find(&old).is_none());
    assert_ne!(both.jwks().etag, ed.jwks().etag);
}

#[tokio::test]
async fn rotation_publishes_first_switches_on_time_and_retires_after_max_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(
        dir.path(),
        &[
            ("AUTH_JIT_MAX_TTL", "600".into()),
            ("AUTH_JIT_LEEWAY", "5".into()),
        ],
    );
    let r = ring(&s);
    let first = set(&r, &s, 100).await;
    let old = first.active().expect("active").kid().to_owned();
    let added = r.rotate(&policy(&s), 100, false).await.expect("rotate");
    let (next, _, at) = added[0].clone();
    // Published the lead (330 s) plus propagation (2 s) ahead.
    assert_eq!(at, 100 + 330 + PROPAGATION_SECS);
    // Before its time: published, not signing.
    let before = r.key_set(&policy(&s), at - 1).await.expect("load");
    assert_eq!(before.active().expect("active").kid(), old);
    assert!(before.find(&next).is_some(), "next key published early");
    assert_eq!(state(&before, &next), Some(KeyState::Next));
    // From its time: it signs; the old one still verifies.
    let after = r.key_set(&policy(&s), at).await.expect("load");
    assert_eq!(after.active().expect("active").kid(), next);
    assert_eq!(state(&after, &old), Some(KeyState::Retired));
    assert!(after.find(&old).is_some());
    assert!(after.differs_from(&before));
    // Once every token of the old key has expired, it is dropped.
    let still = r.key_set(&policy(&s), at + 604).await.expect("load");
    assert!(still.find(&old).is_some());
    let later = r.key_set(&policy(&s), at + 605).await.expect("load");
    assert!(later.find(&old).is_none(), "expired key still trusted");
    assert_eq!(state(&later, &old), Some(KeyState::Expired));
}

#[tokio::test]
async fn scheduled_rotation_happens_once_per_period_whoever_asks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(
        dir.path(),
        &[
            ("AUTH_JIT_MAX_TTL", "10".into()),
            ("AUTH_JIT_DEFAULT_TTL", "10".into()),
            ("AUTH_JIT_LEEWAY", "1".into()),
            ("AUTH_JIT_JWKS_MAX_AGE_SECS", "2".into()),
            ("AUTH_JIT_KEY_PUBLISH_SECS", "3".into()),
            ("AUTH_JIT_KEY_ROTATION_SECS", "20".into()),
        ],
    );
    // Three "instances" (separate rings on one directory) tick every second.
    let rings = [ring(&s), ring(&s), ring(&s)];
    let p = policy(&s);
    rings[0].ensure(&p, 1_000).await.expect("first key");
    for now in 1_000..1_100 {
        for r in &rings {
            r.maintain(&p, now).await.expect("maintain");
        }
    }
    let all = rings[0].list(&p, 1_100).await.expect("list");
    // Keys at 1000 and then one per 20 s: 1020, 1040, 1060, 1080, 1100.
    let starts: Vec<u64> = all.iter().map(|k| k.not_before).collect();
    assert_eq!(starts, [1_000, 1_020, 1_040, 1_060, 1_080, 1_100]);
    // Each was published publish lead + propagation before it signed.
    for (k, set_at) in all.iter().zip([1_000, 1_020, 1_040, 1_060, 1_080, 1_100]) {
        let published = rings[0]
            .key_set(&p, set_at - 3 - PROPAGATION_SECS)
            .await
            .expect("set");
        if set_at > 1_000 {
            assert!(
                published.find(&k.kid).is_some(),
                "{} not published early",
                k.kid
            );
            assert_ne!(published.active().expect("active").kid(), k.kid);
        }
    }
}

#[tokio::test]
async fn revocation_ends_a_key_everywhere_but_never_the_only_signer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let r = ring(&s);
    let p = policy(&s);
    let first = set(&r, &s, 100).await;
    let old = first.active().expect("active").kid().to_owned();
    let old_file = PathBuf::from(&first.info()[0].location);
    let old_bytes = std::fs::read(&old_file).expect("key file");
    assert!(matches!(
        r.revoke(&p, &old, 100).await,
        Err(KeysError::OnlySigner(..))
    ));
    assert!(matches!(
        r.revoke(&p, "nope", 100).await,
        Err(KeysError::UnknownKid(_))
    ));
    let urgent = r.rotate(&p, 100, true).await.expect("rotate now");
    assert_eq!(urgent[0].2, 101, "one second past the key that signs");
    assert!(r.revoke(&p, &old, 101).await.expect("revoke"));
    assert!(!r.revoke(&p, &old, 102).await.expect("again"), "idempotent");
    let after = r.key_set(&p, 102).await.expect("set");
    assert!(after.find(&old).is_none(), "revoked key still trusted");
    assert_eq!(state(&after, &old), Some(KeyState::Revoked));
    let jwks = String::from_utf8_lossy(&after.jwks().body).into_owned();
    assert!(!jwks.contains(&old));
    // The private key file is gone; only the marker remains.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == &format!("{old}.revoked")),
        "{names:?}"
    );
    assert_eq!(names.iter().filter(|n| n.ends_with(".p8")).count(), 1);
    // A restored backup of the old key file is not trusted again.
    write_private_file(&old_file, &old_bytes).expect("restore");
    let restored = r.key_set(&p, 103).await.expect("set");
    assert!(
        restored.find(&old).is_none(),
        "restored revoked key trusted"
    );
}

#[tokio::test]
async fn encrypted_keys_need_the_right_kek_and_plaintext_is_refused_beside_them() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let other = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
    let with = settings(dir.path(), &[("AUTH_JIT_KEY_ENCRYPTION_KEY", kek)]);
    let created = set(&ring(&with), &with, 100).await;
    assert!(created.info()[0].encrypted);
    let again = set(&ring(&with), &with, 200).await;
    assert_eq!(
        again.active().expect("active").kid(),
        created.active().expect("active").kid()
    );
    let wrong = settings(dir.path(), &[("AUTH_JIT_KEY_ENCRYPTION_KEY", other)]);
    assert!(matches!(
        ring(&wrong).key_set(&policy(&wrong), 300).await,
        Err(KeysError::WrongKek(_))
    ));
    let without = settings(dir.path(), &[]);
    assert!(matches!(
        ring(&without).key_set(&policy(&without), 300).await,
        Err(KeysError::NeedsKek(_))
    ));
    let planted = SigningKey::generate(SigningAlg::EdDSA, 2048).expect("key");
    write_private_file(&dir.path().join("keys/9999999999-EdDSA.p8"), &planted.pkcs8)
        .expect("plant");
    assert!(matches!(
        ring(&with).key_set(&policy(&with), 400).await,
        Err(KeysError::Plaintext(_))
    ));
}

#[tokio::test]
async fn an_audience_algorithm_gets_its_own_active_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    let r = ring(&s);
    let p = RingPolicy::new(&s, [SigningAlg::RS256]);
    r.ensure(&p, 100).await.expect("ensure");
    let keys = r.key_set(&p, 100).await.expect("set");
    assert_eq!(keys.active().expect("active").alg(), SigningAlg::EdDSA);
    let rs = keys.active_for(SigningAlg::RS256).expect("an RS256 key");
    assert_eq!(rs.alg(), SigningAlg::RS256);
    let jwks: serde_json::Value = serde_json::from_slice(&keys.jwks().body).expect("jwks");
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["alg"].as_str())
        .collect();
    assert_eq!(algs.len(), 2);
    assert!(algs.contains(&"RS256") && algs.contains(&"EdDSA"));
}

#[tokio::test]
async fn the_embedded_store_keeps_no_ring() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        crate::services::store::EmbeddedStore::open(&dir.path().join("s.redb")).expect("store");
    assert!(store.ring_version().await.is_err());
    let handle = StoreHandle::new(
        std::sync::Arc::new(store),
        std::time::Duration::from_secs(1),
    );
    let s = settings(dir.path(), &[]);
    // Not shared: the ring is the directory.
    let r = KeyRing::open(&s, Some(&handle));
    assert!(r.describe().ends_with("keys"));
}

#[tokio::test]
async fn a_revoked_newest_key_never_brings_an_older_one_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ed = settings(dir.path(), &[("AUTH_JIT_MAX_TTL", "60".into())]);
    let r = ring(&ed);
    let first = set(&r, &ed, 100).await;
    let a = first.active().expect("active").kid().to_owned();
    let b = r.rotate(&policy(&ed), 100, true).await.expect("rotate")[0]
        .0
        .clone();
    // Long after, A has expired; an instance whose settings do not use
    // EdDSA may revoke B (it signs nothing there)...
    let es = settings(
        dir.path(),
        &[
            ("AUTH_JIT_MAX_TTL", "60".into()),
            ("AUTH_JIT_SIGNING_ALG", "ES256".into()),
        ],
    );
    r.ensure(&policy(&es), 1_000).await.expect("es key");
    assert!(r.revoke(&policy(&es), &b, 1_000).await.expect("revoke"));
    // ... and A must not sign again: EdDSA gets a fresh key instead.
    let states: Vec<(String, KeyState)> = r
        .list(&policy(&ed), 1_001)
        .await
        .expect("list")
        .into_iter()
        .map(|k| (k.kid, k.state))
        .collect();
    assert!(
        states.contains(&(a.clone(), KeyState::Expired)),
        "{states:?}"
    );
    let after = set(&r, &ed, 1_001).await;
    let signer = after.active().expect("active").kid().to_owned();
    assert!(
        signer != a && signer != b,
        "an old or revoked key signs again"
    );
    assert!(after.find(&a).is_none());
}

#[tokio::test]
async fn a_key_file_is_never_seen_half_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(dir.path(), &[]);
    set(&ring(&s), &s, 100).await;
    // The directory holds the key and the lock; no temporary file is left.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // A half-copied file under a temporary name is ignored by readers.
    std::fs::write(dir.path().join("keys/200-EdDSA-x.p8.tmp"), b"half").expect("tmp");
    assert!(ring(&s).key_set(&policy(&s), 300).await.is_ok());
}
