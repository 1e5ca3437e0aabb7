//! Turning a [`Grant`] into a signed token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::claims::AccessClaims;
use super::clock::{Clock, Random};
use super::jws::SigningKey;
use super::policy::Grant;
use super::types::ClientId;

/// A freshly signed token and what it says.
#[derive(Clone)]
pub struct Issued<C> {
    pub token: String,
    pub claims: C,
}

/// A signed access token.
pub type IssuedToken = Issued<AccessClaims>;

impl<C: std::fmt::Debug> std::fmt::Debug for Issued<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("Issued")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no randomness available for the token id")]
    Random,
    #[error("signing failed")]
    Sign,
}

/// Generates an unguessable token id: 128 random bits, base64url.
pub fn new_jti(random: &dyn Random) -> Result<String, IssueError> {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes).map_err(|_| IssueError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Builds the claims of a grant, for `client`, at the clock's now.
pub fn claims_for(
    issuer: &str,
    client: &ClientId,
    grant: &Grant,
    clock: &dyn Clock,
    random: &dyn Random,
) -> Result<AccessClaims, IssueError> {
    let now = clock.now();
    Ok(AccessClaims {
        iss: issuer.to_owned(),
        sub: client.to_string(),
        aud: grant.audience.to_string(),
        exp: now.saturating_add(grant.ttl.seconds()),
        iat: now,
        nbf: now,
        jti: new_jti(random)?,
        client_id: client.to_string(),
        scope: (!grant.scope.is_empty()).then(|| grant.scope.to_string()),
        once: grant.once.then_some(true),
        htm: grant.bind.as_ref().map(|b| b.method().to_owned()),
        htu: grant.bind.as_ref().map(|b| b.url().to_owned()),
        act: None,
    })
}

/// Signs claims with the active key.
pub fn sign(key: &SigningKey, claims: AccessClaims) -> Result<IssuedToken, IssueError> {
    let token = key.sign(&claims).map_err(|_| IssueError::Sign)?;
    Ok(IssuedToken { token, claims })
}
