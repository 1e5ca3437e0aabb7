//! The one error type of the HTTP API and its one JSON shape, the OAuth one
//! (RFC 6749 §5.2): `{"error": "...", "error_description": "..."}`.
//! Internal causes are logged where they happen, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::tokens::TokenError;
use crate::token::policy::PolicyError;

/// The error body of every endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// An OAuth 2.0 error code, e.g. `invalid_client`.
    #[schema(example = "invalid_request")]
    pub error: &'static str,
    /// A human-readable explanation; never contains a secret or token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: malformed or missing parameters.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `invalid_client` with `WWW-Authenticate: Basic`: authentication
    /// failed; never says which part was wrong.
    #[error("client authentication failed")]
    InvalidClient,
    /// 400 `invalid_scope`: a scope the client may not have, or malformed.
    #[error("{0}")]
    InvalidScope(String),
    /// 400 `invalid_target` (RFC 8707): an audience the client may not target.
    #[error("{0}")]
    InvalidTarget(String),
    /// 400 `invalid_grant`: the grant (a token-exchange subject token) is
    /// invalid, expired, revoked or not the caller's.
    #[error("{0}")]
    InvalidGrant(String),
    /// 400 `unauthorized_client`: the client may not use this grant type.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// 400 `unsupported_grant_type`.
    #[error(
        "grant_type must be client_credentials or urn:ietf:params:oauth:grant-type:token-exchange"
    )]
    UnsupportedGrantType,
    /// 401 `invalid_token`: the presented token does not verify.
    #[error("{0}")]
    InvalidToken(String),
    /// 403 `access_denied`: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`.
    #[error("no such endpoint")]
    NotFound,
    /// 405 `invalid_request`.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 408 `invalid_request`.
    #[error("the request took too long")]
    Timeout,
    /// 413 `invalid_request`.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// 415 `invalid_request`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 `slow_down` with `Retry-After`.
    #[error("too many requests for this client")]
    TooManyRequests { retry_after: u64 },
    /// 503 `temporarily_unavailable` with `Retry-After`: a dependency (the
    /// store) did not answer; we fail closed.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `server_error`: a bug or a broken host, never bad input.
    #[error("internal server error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_)
            | Self::InvalidScope(_)
            | Self::InvalidTarget(_)
            | Self::InvalidGrant(_)
            | Self::UnauthorizedClient(_)
            | Self::UnsupportedGrantType => StatusCode::BAD_REQUEST,
            Self::InvalidClient | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_)
            | Self::MethodNotAllowed
            | Self::Timeout
            | Self::PayloadTooLarge
            | Self::UnsupportedMediaType(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InvalidTarget(_) => "invalid_target",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidToken(_) => "invalid_token",
            Self::Forbidden(_) => "access_denied",
            Self::NotFound => "not_found",
            Self::TooManyRequests { .. } => "slow_down",
            Self::Unavailable(_) => "temporarily_unavailable",
            Self::Internal => "server_error",
        }
    }

    /// The error for a bare status produced by a layer (timeouts, limits).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::UnsupportedMediaType("unsupported content type".into())
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable("try again shortly".into()),
            s if s.is_client_error() => {
                Self::InvalidRequest(s.canonical_reason().unwrap_or("bad request").to_owned())
            }
            _ => Self::Internal,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.code(),
            error_description: Some(self.to_string()),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            Self::InvalidClient => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"auth-jit\", charset=\"UTF-8\""),
                );
            }
            Self::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"auth-jit\", error=\"invalid_token\""),
                );
            }
            Self::TooManyRequests { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.max(&1).to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Policy(PolicyError::AudienceNotAllowed) => {
                Self::InvalidTarget(error.to_string())
            }
            TokenError::Policy(PolicyError::ScopeNotAllowed(_)) => {
                Self::InvalidScope(error.to_string())
            }
            TokenError::Policy(PolicyError::TtlAboveMax { .. }) => {
                Self::InvalidRequest(error.to_string())
            }
            TokenError::Invalid(e) => Self::InvalidToken(e.to_string()),
            TokenError::NotReceiver => Self::Forbidden(error.to_string()),
            TokenError::ExchangeNotAllowed => Self::UnauthorizedClient(error.to_string()),
            TokenError::InvalidGrant(m) => Self::InvalidGrant(m),
            TokenError::ScopeWidening(_) => Self::InvalidScope(error.to_string()),
            TokenError::Unavailable(e) => {
                tracing::warn!(error = %e, "store unavailable: failing closed");
                Self::Unavailable("the token state store is unavailable; try again".into())
            }
            TokenError::NoSigningKey => {
                Self::Unavailable("no signing key is loaded yet; try again".into())
            }
            TokenError::TxnOff => Self::InvalidRequest(error.to_string()),
            TokenError::TxnNotAllowed => Self::UnauthorizedClient(error.to_string()),
            TokenError::NotTrustDomain => Self::InvalidTarget(error.to_string()),
            TokenError::UpstreamUnavailable => {
                Self::Unavailable("the trusted issuer's keys cannot be fetched; try again".into())
            }
            TokenError::Internal(what) => {
                tracing::error!(what, "internal error");
                Self::Internal
            }
        }
    }
}

/// serde messages quote the offending value; a misplaced token or secret
/// must not come back in an error, so quoted strings are dropped.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find("string \"") {
        out.push_str(&rest[..start + "string".len()]);
        let after = &rest[start + "string \"".len()..];
        rest = match after.find('"') {
            Some(end) => &after[end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    // serde quotes the caller's own names and values in backticks after
    // these words: drop them (our field names, after "missing field" or
    // "expected", stay).
    for marker in [
        "unknown field ",
        "unknown variant ",
        "integer ",
        "floating point ",
        "invalid length ",
        "char ",
    ] {
        out = drop_quoted_after(&out, marker);
    }
    out
}

fn drop_quoted_after(message: &str, marker: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(marker) {
        let (head, tail) = rest.split_at(at + marker.len());
        out.push_str(head.trim_end());
        rest = match tail
            .strip_prefix('`')
            .and_then(|t| t.find('`').map(|end| &t[end + 1..]))
        {
            Some(after) => after,
            None => tail,
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_drops_quoted_values() {
        assert_eq!(
            scrub("ttl: invalid type: string \"eyJsecret\", expected u64 at line 1"),
            "ttl: invalid type: string, expected u64 at line 1"
        );
        assert_eq!(
            scrub("missing field `audience`"),
            "missing field `audience`"
        );
        assert_eq!(
            scrub("unknown field `eyJhbGciOi`, expected one of `audience`, `scope`"),
            "unknown field, expected one of `audience`, `scope`"
        );
        assert_eq!(
            scrub("ttl: invalid value: integer `-5`, expected u64"),
            "ttl: invalid value: integer, expected u64"
        );
    }
}
