//! OAuth request bodies (`application/x-www-form-urlencoded`).
//!
//! The documented form types are the parsers: serde reads each body into
//! its type. Before that, the raw parameters are checked once: a parameter
//! given twice is refused (RFC 6749 §3.2), one without a value counts as
//! omitted (§3.1), and the client authentication parameters (§2.3.1,
//! RFC 7523 §2.2) are taken out for the authenticator, so no form type has
//! to carry them.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::web::api::error::{scrub, ApiError};

/// The client authentication parameters of a form, as sent.
#[derive(Default)]
pub struct ClientParams {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

/// Reads a form body: the client authentication parameters, and the rest
/// parsed into `F`.
pub fn parse<F: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(ClientParams, F), ApiError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/x-www-form-urlencoded".into(),
        ));
    }
    let mut params = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if !seen.insert(name.to_string()) {
            return Err(ApiError::InvalidRequest("a parameter is repeated".into()));
        }
        if !value.is_empty() {
            params.insert(name.into_owned(), value.into_owned());
        }
    }
    let client = ClientParams {
        client_id: params.remove("client_id"),
        client_secret: params.remove("client_secret"),
        client_assertion_type: params.remove("client_assertion_type"),
        client_assertion: params.remove("client_assertion"),
    };
    let rest = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let form = serde_urlencoded::from_str(&rest).map_err(|e| {
        ApiError::InvalidRequest(match e.to_string() {
            m if m.starts_with("missing field") => m,
            m => scrub(&m),
        })
    })?;
    Ok((client, form))
}

/// `POST /oauth/token`: client credentials (RFC 6749 §4.4) or token
/// exchange (RFC 8693). Authenticate with HTTP Basic, or with
/// `client_id` + `client_secret`, or `client_assertion_type` +
/// `client_assertion` (RFC 7523) in the form; exactly one way.
#[derive(Deserialize, ToSchema)]
pub struct TokenForm {
    /// `client_credentials` or `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(example = "client_credentials")]
    pub grant_type: String,
    /// Target API (RFC 8693); or use `resource` (RFC 8707).
    #[schema(example = "ledger")]
    pub audience: Option<String>,
    /// Target API as a resource indicator (RFC 8707).
    pub resource: Option<String>,
    /// Space-separated scopes.
    pub scope: Option<String>,
    /// Token exchange: the token to exchange, addressed to the caller.
    pub subject_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token` (or `...:jwt`).
    pub subject_token_type: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token`
    /// (the default), or `urn:ietf:params:oauth:token-type:txn_token` for a
    /// Transaction Token (then `subject_token_type` may also be `...:jwt`,
    /// a trusted issuer's token, or `...:txn_token`, a replacement).
    pub requested_token_type: Option<String>,
    /// Txn-Tokens: the request's context, a JSON object of at most 2048
    /// bytes; it becomes `rctx`, with what the service knows.
    #[schema(max_length = 2048, example = r#"{"req_ip":"203.0.113.7"}"#)]
    pub request_context: Option<String>,
    /// Txn-Tokens: the transaction's details, a JSON object of at most 2048
    /// bytes; it becomes `tctx`, immutable from then on.
    #[schema(max_length = 2048, example = r#"{"action":"pay","order":"o-17"}"#)]
    pub request_details: Option<String>,
    /// Not supported: the authenticated client is the actor.
    pub actor_token: Option<String>,
}

/// Introspection (RFC 7662) and revocation (RFC 7009): the token, and an
/// optional hint. Client authentication as at the token endpoint.
#[derive(Deserialize, ToSchema)]
pub struct TokenOnlyForm {
    /// The token (any string: one that is not an active token of ours is
    /// reported inactive, or revoking it does nothing). Empty counts as
    /// omitted.
    #[schema(min_length = 1)]
    pub token: String,
    /// Ignored: only access tokens exist here.
    pub token_type_hint: Option<String>,
}
