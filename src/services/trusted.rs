//! Trusted external issuers (`AUTH_JIT_TRUSTED_ISSUERS_FILE`): the identity
//! providers whose JWTs a gateway may exchange for Transaction Tokens.
//!
//! ```toml
//! [[issuer]]
//! issuer = "https://idp.example"          # their `iss`, exactly
//! jwks_uri = "https://idp.example/jwks"   # or jwks_file = "/etc/idp-jwks.json"
//! audience = "gateway"                    # what their tokens must be addressed to
//! ```
//!
//! A remote key set is fetched and cached by the verifier crate's rules (the
//! same code receiving APIs use): `max-age` and `ETag`, one refetch per
//! interval for an unknown `kid`, a bounded stale-if-error. Tokens are
//! checked as strictly as ours: the header allow-list and `crit` refused,
//! the key pinning the algorithm, `iss` exactly, `aud`, `exp` required,
//! `nbf`/`iat` with the leeway, exact JSON types, a non-empty `sub`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use auth_jit_verifier::jwks::KeySet;
use auth_jit_verifier::{Refusal, Verifier};
use serde::Deserialize;

use crate::token::jws::{unverified_payload, Jws, JwsError, EXTERNAL_JWT};
use crate::token::jwt::{check_times, Claims};
use crate::token::types::Scope;
use crate::token::verify::{KeyLookup, VerifyError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    issuer: String,
    jwks_uri: Option<String>,
    jwks_file: Option<PathBuf>,
    audience: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    issuer: Vec<FileEntry>,
}

enum Keys {
    Remote(Verifier),
    Fixed(Arc<KeySet>),
}

struct Trusted {
    audience: String,
    keys: Keys,
}

/// The trusted issuers, by `iss`.
#[derive(Default)]
pub struct TrustedIssuers {
    by_issuer: HashMap<String, Trusted>,
}

/// What a trusted issuer's verified token says.
#[derive(Debug)]
pub struct External {
    pub iss: String,
    pub sub: String,
    /// Its `scope` claim; empty when it has none (then nothing can be
    /// asked of it: an unknown scope is never taken as unlimited).
    pub scope: Scope,
    pub exp: u64,
    /// The audience the issuer's entry names (its tokens carry it).
    pub audience: String,
}

/// Why an external subject token was refused. Messages are safe to return.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("subject_token is not from a trusted issuer")]
    Untrusted,
    #[error("subject_token: {0}")]
    Invalid(#[from] VerifyError),
    #[error("the trusted issuer's keys cannot be fetched now")]
    Unavailable,
}

impl TrustedIssuers {
    /// Reads the file; every entry is checked (one way to get keys, a
    /// parseable issuer and audience, a readable key file), and names the
    /// issuer when it is not.
    pub fn load(path: &Path, leeway: u64) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let file: File =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut by_issuer = HashMap::new();
        for entry in file.issuer {
            let name = entry.issuer.clone();
            let fail = |what: String| anyhow::anyhow!("{}: issuer {name}: {what}", path.display());
            let keys = match (entry.jwks_uri, entry.jwks_file) {
                (Some(uri), None) => Keys::Remote(
                    Verifier::builder(entry.issuer.clone(), entry.audience.clone())
                        .jwks_uri(uri)
                        .leeway(leeway)
                        .build()
                        .map_err(|e| fail(e.to_string()))?,
                ),
                (None, Some(file)) => {
                    let file = if file.is_relative() {
                        path.parent().unwrap_or(Path::new(".")).join(file)
                    } else {
                        file
                    };
                    let bytes = std::fs::read(&file)
                        .map_err(|e| fail(format!("jwks_file {}: {e}", file.display())))?;
                    Keys::Fixed(Arc::new(
                        KeySet::from_json(&bytes)
                            .map_err(|e| fail(format!("jwks_file {}: {e}", file.display())))?,
                    ))
                }
                _ => return Err(fail("give exactly one of jwks_uri and jwks_file".into())),
            };
            if entry.audience.is_empty() {
                return Err(fail("audience is required".into()));
            }
            let trusted = Trusted {
                audience: entry.audience,
                keys,
            };
            if by_issuer.insert(entry.issuer, trusted).is_some() {
                return Err(fail("listed twice".into()));
            }
        }
        Ok(Self { by_issuer })
    }

    /// Verifies a JWT of a trusted issuer at `now`.
    pub async fn verify(
        &self,
        token: &str,
        leeway: u64,
        now: u64,
    ) -> Result<External, ExternalError> {
        // Only to pick the issuer whose keys will check it.
        let claimed = unverified_payload(token)
            .and_then(|p| p.get("iss").and_then(|i| i.as_str()).map(str::to_owned))
            .ok_or(ExternalError::Untrusted)?;
        let trusted = self
            .by_issuer
            .get(&claimed)
            .ok_or(ExternalError::Untrusted)?;
        let jws = Jws::parse(token, &EXTERNAL_JWT).map_err(VerifyError::from)?;
        let kid = jws.kid.as_deref().unwrap_or_default();
        let keys = match &trusted.keys {
            Keys::Fixed(keys) => keys.clone(),
            Keys::Remote(verifier) => match verifier.keys(kid).await {
                Ok(keys) => keys,
                Err(Refusal::Unavailable(_)) => return Err(ExternalError::Unavailable),
                Err(_) => return Err(VerifyError::Jws(JwsError::UnknownKey).into()),
            },
        };
        let key = keys
            .find(kid)
            .ok_or(JwsError::UnknownKey)
            .map_err(VerifyError::from)?;
        let map = jws.verify(key).map_err(VerifyError::from)?;
        let c = Claims(&map);
        let read = || -> Result<External, VerifyError> {
            if c.str("iss")? != claimed {
                return Err(VerifyError::WrongIssuer);
            }
            if !c.audience_in(std::slice::from_ref(&trusted.audience))? {
                return Err(VerifyError::WrongAudience);
            }
            let exp = c.number("exp")?;
            check_times(exp, c.opt_number("nbf")?, c.opt_number("iat")?, leeway, now)?;
            let scope = Scope::parse(c.opt_str("scope")?.unwrap_or_default())
                .map_err(|_| VerifyError::WrongClaimType("scope"))?;
            Ok(External {
                iss: claimed.clone(),
                sub: c.non_empty_str("sub")?.to_owned(),
                scope,
                exp,
                audience: trusted.audience.clone(),
            })
        };
        Ok(read()?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;
    use crate::token::jws::{SigningAlg, SigningKey};

    const NOW: u64 = 1_800_000_000;

    fn idp_token(key: &SigningKey, claims: serde_json::Value) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), json!("EdDSA"));
        header.insert("kid".into(), json!(key.kid()));
        key.sign_with_header(&header, &claims).expect("sign")
    }

    #[tokio::test]
    async fn a_key_file_issuer_verifies_its_tokens_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(SigningAlg::EdDSA, 2048)
            .expect("key")
            .key;
        std::fs::write(
            dir.path().join("idp.json"),
            json!({"keys": [key.verifying_key().jwk()]}).to_string(),
        )
        .expect("jwks");
        let file = dir.path().join("issuers.toml");
        std::fs::write(
            &file,
            "[[issuer]]\nissuer = \"https://idp.test\"\njwks_file = \"idp.json\"\naudience = \"gateway\"\n",
        )
        .expect("file");
        let trusted = TrustedIssuers::load(&file, 5).expect("load");
        let claims = json!({"iss": "https://idp.test", "sub": "alice", "aud": ["gateway", "x"],
            "exp": NOW + 60, "iat": NOW, "scope": "read"});
        let external = trusted
            .verify(&idp_token(&key, claims.clone()), 5, NOW)
            .await
            .expect("valid");
        assert_eq!(
            (external.sub.as_str(), external.scope.to_string().as_str()),
            ("alice", "read")
        );
        let mut other = claims.clone();
        other["aud"] = json!("billing");
        assert!(matches!(
            trusted.verify(&idp_token(&key, other), 5, NOW).await,
            Err(ExternalError::Invalid(VerifyError::WrongAudience))
        ));
        let mut stranger = claims.clone();
        stranger["iss"] = json!("https://other.test");
        assert!(matches!(
            trusted.verify(&idp_token(&key, stranger), 5, NOW).await,
            Err(ExternalError::Untrusted)
        ));
        let forger = SigningKey::generate(SigningAlg::EdDSA, 2048)
            .expect("key")
            .key;
        assert!(trusted
            .verify(&idp_token(&forger, claims), 5, NOW)
            .await
            .is_err());
    }

    #[test]
    fn entries_need_exactly_one_key_source_and_appear_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("issuers.toml");
        for (text, expect) in [
            ("[[issuer]]\nissuer = \"https://a\"\naudience = \"g\"\n", "exactly one"),
            (
                "[[issuer]]\nissuer = \"https://a\"\njwks_uri = \"https://a/j\"\njwks_file = \"j\"\naudience = \"g\"\n",
                "exactly one",
            ),
            (
                "[[issuer]]\nissuer = \"https://a\"\njwks_uri = \"https://a/j\"\naudience = \"g\"\n[[issuer]]\nissuer = \"https://a\"\njwks_uri = \"https://a/k\"\naudience = \"g\"\n",
                "listed twice",
            ),
            ("[[issuer]]\nissuer = \"https://a\"\njwks_uri = \"https://a/j\"\naudience = \"g\"\nextra = 1\n", "unknown field"),
        ] {
            std::fs::write(&file, text).expect("write");
            let error = TrustedIssuers::load(&file, 5).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(expect), "{text}: {error}");
        }
    }
}
