//! Who may have which token: deny by default, never widen, never shorten
//! silently.

use std::collections::BTreeSet;

use super::types::{Audience, ParseError, Scope, Ttl};

/// What a registered client is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    pub audiences: BTreeSet<Audience>,
    pub scopes: Scope,
    /// The client's own ceiling; the global one applies as well.
    pub max_ttl: Option<u64>,
    /// May use token exchange (RFC 8693).
    pub exchange: bool,
    /// May request Transaction Tokens (a gateway or workload of the trust
    /// domain).
    pub txn_token: bool,
}

/// Service-wide lifetime settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlLimits {
    pub default_ttl: u64,
    pub max_ttl: u64,
}

/// A request binding: the token authorizes this method on this URL only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    method: String,
    url: String,
}

impl Binding {
    /// Method: an RFC 9110 token, upper-cased. URL: absolute http(s), kept
    /// without query and fragment as RFC 9449 does for `htu`.
    pub fn parse(method: &str, url: &str) -> Result<Self, ParseError> {
        Ok(Self {
            method: normalize_method(method)?,
            url: normalize_url(url)?,
        })
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

pub use auth_jit_verifier::binding::{normalize_method, normalize_url};

/// A token request, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub audience: Audience,
    pub scope: Scope,
    pub ttl: Option<Ttl>,
    pub once: bool,
    pub bind: Option<Binding>,
}

/// What the policy grants: the token to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub audience: Audience,
    pub scope: Scope,
    pub ttl: Ttl,
    pub once: bool,
    pub bind: Option<Binding>,
}

/// Why a request was refused. Messages are safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("this client may not request tokens for that audience")]
    AudienceNotAllowed,
    #[error("this client may not request the scope `{0}`")]
    ScopeNotAllowed(String),
    #[error("ttl {requested} exceeds the maximum of {max} seconds for this client")]
    TtlAboveMax { requested: u64, max: u64 },
}

/// Applies a client's policy and the service's limits to a request.
pub fn authorize(
    policy: &ClientPolicy,
    limits: TtlLimits,
    request: TokenRequest,
) -> Result<Grant, PolicyError> {
    if !policy.audiences.contains(&request.audience) {
        return Err(PolicyError::AudienceNotAllowed);
    }
    if let Some(denied) = request.scope.iter().find(|s| !policy.scopes.contains(s)) {
        return Err(PolicyError::ScopeNotAllowed(denied.to_string()));
    }
    let max = effective_max_ttl(policy, limits);
    let ttl = match request.ttl {
        Some(ttl) if ttl.seconds() > max => {
            return Err(PolicyError::TtlAboveMax {
                requested: ttl.seconds(),
                max,
            })
        }
        Some(ttl) => ttl,
        // A default above a client's own ceiling is lowered to that ceiling:
        // the client asked for nothing in particular, so nothing is refused.
        None => {
            Ttl::new(limits.default_ttl.min(max).max(1)).map_err(|_| PolicyError::TtlAboveMax {
                requested: limits.default_ttl,
                max,
            })?
        }
    };
    Ok(Grant {
        audience: request.audience,
        scope: request.scope,
        ttl,
        once: request.once,
        bind: request.bind,
    })
}

/// The lower of the client's and the service's ceiling.
pub fn effective_max_ttl(policy: &ClientPolicy, limits: TtlLimits) -> u64 {
    policy
        .max_ttl
        .map_or(limits.max_ttl, |own| own.min(limits.max_ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TtlLimits = TtlLimits {
        default_ttl: 60,
        max_ttl: 3600,
    };

    fn policy(max_ttl: Option<u64>) -> ClientPolicy {
        ClientPolicy {
            audiences: [Audience::parse("ledger").expect("aud")].into(),
            scopes: Scope::parse("read write").expect("scope"),
            max_ttl,
            exchange: false,
            txn_token: false,
        }
    }

    fn request(aud: &str, scope: &str, ttl: Option<u64>) -> TokenRequest {
        TokenRequest {
            audience: Audience::parse(aud).expect("aud"),
            scope: Scope::parse(scope).expect("scope"),
            ttl: ttl.map(|t| Ttl::new(t).expect("ttl")),
            once: false,
            bind: None,
        }
    }

    #[test]
    fn grants_registered_audience_and_scopes_with_default_ttl() {
        let grant = authorize(&policy(None), LIMITS, request("ledger", "read", None)).expect("ok");
        assert_eq!(grant.ttl.seconds(), 60);
        assert_eq!(grant.scope.to_string(), "read");
    }

    #[test]
    fn denies_unregistered_audience_and_scope() {
        assert_eq!(
            authorize(&policy(None), LIMITS, request("payroll", "read", None)),
            Err(PolicyError::AudienceNotAllowed)
        );
        assert_eq!(
            authorize(&policy(None), LIMITS, request("ledger", "read admin", None)),
            Err(PolicyError::ScopeNotAllowed("admin".into()))
        );
    }

    #[test]
    fn ttl_above_either_ceiling_is_refused_never_shortened() {
        assert_eq!(
            authorize(&policy(Some(300)), LIMITS, request("ledger", "", Some(301))),
            Err(PolicyError::TtlAboveMax {
                requested: 301,
                max: 300
            })
        );
        assert_eq!(
            authorize(
                &policy(Some(9999)),
                LIMITS,
                request("ledger", "", Some(3601))
            ),
            Err(PolicyError::TtlAboveMax {
                requested: 3601,
                max: 3600
            })
        );
        let at_edge = authorize(&policy(Some(300)), LIMITS, request("ledger", "", Some(300)));
        assert_eq!(at_edge.map(|g| g.ttl.seconds()), Ok(300));
    }

    #[test]
    fn default_ttl_respects_a_lower_client_ceiling() {
        let grant = authorize(&policy(Some(30)), LIMITS, request("ledger", "", None));
        assert_eq!(grant.map(|g| g.ttl.seconds()), Ok(30));
    }

    #[test]
    fn bindings_normalize_method_and_strip_query() {
        let b = Binding::parse("post", "https://Ledger.internal/pay?x=1#f").expect("binding");
        assert_eq!(b.method(), "POST");
        assert_eq!(b.url(), "https://ledger.internal/pay");
        assert!(Binding::parse("GET", "ftp://x/").is_err());
        assert!(Binding::parse("GET", "/relative").is_err());
        assert!(Binding::parse("GET", "https://u:p@x/").is_err());
        assert!(Binding::parse("G ET", "https://x/").is_err());
    }
}
