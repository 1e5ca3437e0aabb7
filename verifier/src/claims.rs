//! The claims of an auth-jit access token (RFC 9068 profile plus our own).

use serde::{Deserialize, Serialize};

/// The payload of every token we issue. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AccessClaims {
    /// Our issuer URL, exactly as `AUTH_JIT_ISSUER`.
    pub iss: String,
    /// The client the token was issued to.
    pub sub: String,
    /// The one audience the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Not valid before, seconds since the epoch (equal to `iat`).
    pub nbf: u64,
    /// Unique token id: 128 random bits, base64url.
    pub jti: String,
    /// The client that requested the token (RFC 9068 §2.2).
    pub client_id: String,
    /// Granted scopes, space separated; absent when none were granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Present and true on single-use tokens: the verifier must ask us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<bool>,
    /// Bound HTTP method (as in RFC 9449), upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htm: Option<String>,
    /// Bound HTTP URL without query and fragment (as in RFC 9449).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htu: Option<String>,
    /// Delegation chain of a token-exchange token (RFC 8693 §4.1): the
    /// current actor, with the previous one nested inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// One actor of a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Actor {
    /// The client that acted.
    pub sub: String,
    /// The actor before it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(no_recursion))]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// Number of actors in the chain starting here.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }
}

impl AccessClaims {
    /// Whether the token works once only (the issuer consumes it).
    pub fn is_single_use(&self) -> bool {
        self.once == Some(true)
    }

    /// Number of delegation steps behind this token (0 for a direct one).
    pub fn delegation_depth(&self) -> usize {
        self.act.as_ref().map_or(0, Actor::depth)
    }
}
