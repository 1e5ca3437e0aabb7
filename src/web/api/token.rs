//! `POST /api/token`, `POST /api/token/verify`, `POST /api/token/revoke`:
//! our JSON API for issuing, checking and revoking JIT tokens.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, BasicClient};
use crate::services::tokens::RevokeTarget;
use crate::token::claims::AccessClaims;
use crate::token::policy::{Binding, TokenRequest};
use crate::token::types::{Audience, Scope, Ttl};
use crate::token::verify::Expectation;
use crate::web::application::AppState;
use auth_jit_verifier::txn::TxnClaims;

/// Binds a token to one HTTP request (checked at verify).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    /// HTTP method, e.g. `POST`.
    #[schema(example = "POST")]
    pub method: String,
    /// Absolute http(s) URL; query and fragment are ignored.
    #[schema(example = "https://ledger.internal/v1/payments", max_length = 2048)]
    pub url: String,
}

/// A request for a JIT token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// The API the token is for; must be registered for the client.
    #[schema(example = "ledger")]
    pub audience: String,
    /// Space-separated scopes, each registered for the client. Absent: none.
    #[schema(example = "read")]
    pub scope: Option<String>,
    /// Lifetime in seconds; default `AUTH_JIT_DEFAULT_TTL`. Above the
    /// client's or the global maximum it is refused, never shortened.
    #[schema(example = 60, minimum = 1, maximum = 86400)]
    pub ttl: Option<u64>,
    /// Single-use: the first successful verification consumes it.
    #[serde(default)]
    pub once: bool,
    /// Optional request binding (`htm`/`htu` claims).
    pub bind: Option<BindBody>,
}

/// An issued token (RFC 6749 §5.1 shape).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT (`typ: at+jwt`).
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until expiry.
    #[schema(example = 60)]
    pub expires_in: u64,
    /// Granted scopes, space separated (empty when none).
    #[schema(example = "read")]
    pub scope: String,
}

impl From<crate::services::tokens::IssuedTxn> for TokenResponse {
    fn from(issued: crate::services::tokens::IssuedTxn) -> Self {
        Self {
            expires_in: issued.claims.exp.saturating_sub(issued.claims.iat),
            scope: issued.claims.scope,
            access_token: issued.token,
            // draft-ietf-oauth-transaction-tokens: not a bearer token.
            token_type: "N_A",
        }
    }
}

impl From<crate::token::issue::IssuedToken> for TokenResponse {
    fn from(issued: crate::token::issue::IssuedToken) -> Self {
        Self {
            expires_in: issued.claims.exp.saturating_sub(issued.claims.iat),
            scope: issued.claims.scope.clone().unwrap_or_default(),
            access_token: issued.token,
            token_type: "Bearer",
        }
    }
}

/// The client's request rate limit (`AUTH_JIT_RATE_LIMIT` or its own),
/// for every endpoint that issues or writes: 429 with `Retry-After`.
pub async fn rate_limit(
    state: &AppState,
    client: &crate::services::clients::Client,
) -> Result<(), ApiError> {
    state
        .rate_limits
        .check_shared(client.id.as_str(), client.rate_limit)
        .await
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn parse_issue(body: IssueBody) -> Result<TokenRequest, ApiError> {
    let audience = Audience::parse(&body.audience)
        .map_err(|e| ApiError::InvalidRequest(format!("audience: {e}")))?;
    let scope = Scope::parse(body.scope.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::InvalidScope(e.to_string()))?;
    let ttl = body
        .ttl
        .map(Ttl::new)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("ttl: {e}")))?;
    let bind = body
        .bind
        .map(|b| Binding::parse(&b.method, &b.url))
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("bind: {e}")))?;
    Ok(TokenRequest {
        audience,
        scope,
        ttl,
        once: body.once,
        bind,
    })
}

/// Issue a JIT token.
///
/// The caller authenticates as a registered client with HTTP Basic. The
/// token is for one audience and the requested scopes, lives `ttl` seconds
/// and, with `once`, works for exactly one verification.
#[utoipa::path(
    post,
    path = "/api/token",
    tag = "tokens",
    request_body = IssueBody,
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "Token issued", body = TokenResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "invalid_request, invalid_scope or invalid_target", body = ErrorBody),
        (status = 401, description = "invalid_client", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "slow_down: rate limit, see Retry-After", body = ErrorBody),
        (status = 503, description = "Store unavailable (single-use tokens only)", body = ErrorBody),
    )
)]
pub async fn issue(
    State(state): State<AppState>,
    BasicClient(client): BasicClient,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    // Only a well-formed audience goes into the audit log: the raw field
    // could hold anything a caller pasted there.
    let audience = Audience::parse(&body.audience).ok();
    let denied = |e: ApiError| {
        audit::token_denied(&client, audience.as_ref().map(Audience::as_str), "jit", &e);
        e
    };
    rate_limit(&state, &client).await.map_err(denied)?;
    let request = parse_issue(body).map_err(denied)?;
    let issued = state
        .tokens
        .issue(&client, request)
        .await
        .map_err(|e| denied(e.into()))?;
    audit::token_issued(&client, &issued.claims, "jit");
    Ok(no_store(Json(TokenResponse::from(issued)).into_response()))
}

/// What a receiving API asks about a token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The token to check.
    #[schema(min_length = 1, max_length = 8192)]
    pub token: String,
    /// The audience the caller expects; the caller must receive it (its own
    /// client id, or one listed in its `receives`).
    #[schema(example = "ledger")]
    pub audience: String,
    /// Space-separated scopes that must all be in the token.
    pub scope: Option<String>,
    /// The method of the request the token came with (bound tokens).
    pub method: Option<String>,
    /// The URL of the request the token came with (bound tokens).
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    /// `access_token` (the default) or `txn_token`: a Transaction Token,
    /// with the trust domain as `audience`. Each kind is refused as the
    /// other.
    #[schema(example = "access_token")]
    pub token_type: Option<VerifyTokenType>,
}

/// The kinds of token `POST /api/token/verify` checks.
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VerifyTokenType {
    AccessToken,
    TxnToken,
}

/// What a successful verification answers: an access token's claims, or
/// (with `token_type: txn_token`) a Txn-Token's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyAnswer {
    Access(VerifyResponse),
    Txn(TxnVerifyResponse),
}

/// A Txn-Token that verified.
#[derive(Serialize, ToSchema)]
pub struct TxnVerifyResponse {
    /// Always true: anything else is an error response.
    pub active: bool,
    pub claims: TxnClaims,
}

/// A token that verified.
#[derive(Serialize, ToSchema)]
pub struct VerifyResponse {
    /// Always true: anything else is an error response.
    pub active: bool,
    pub claims: AccessClaims,
}

/// Verify a token, consuming it if it is single-use.
///
/// Checks signature (algorithm pinned to our key), `typ`, issuer, audience,
/// expiry with `AUTH_JIT_LEEWAY`, required scopes, request binding and
/// revocation. A single-use token is consumed atomically by its first
/// successful verification, across every instance sharing the store.
#[utoipa::path(
    post,
    path = "/api/token/verify",
    tag = "tokens",
    request_body = VerifyBody,
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "The token is valid (an access token, or with `token_type: txn_token` a Txn-Token)", body = VerifyAnswer),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_client (caller) or invalid_token (token)", body = ErrorBody),
        (status = 403, description = "The caller does not receive that audience", body = ErrorBody),
        (status = 503, description = "Store unavailable: nothing is reported active", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    BasicClient(client): BasicClient,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Response, ApiError> {
    if body.token_type == Some(VerifyTokenType::TxnToken) {
        return verify_txn(&state, &client, &body);
    }
    let expect = Expectation {
        audience: Some(
            Audience::parse(&body.audience)
                .map_err(|e| ApiError::InvalidRequest(format!("audience: {e}")))?,
        ),
        scope: Scope::parse(body.scope.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::InvalidRequest(format!("scope: {e}")))?,
        method: body.method,
        url: body.url,
        ..Expectation::default()
    };
    match state
        .tokens
        .verify(&client, &body.token, &expect, true)
        .await
    {
        Ok(claims) => {
            audit::verification(&client, "verify", Ok(audit::Checked::Access(&claims)));
            Ok(no_store(
                Json(VerifyResponse {
                    active: true,
                    claims,
                })
                .into_response(),
            ))
        }
        Err(e) => {
            let error = ApiError::from(e);
            audit::verification(&client, "verify", Err(&error));
            Err(error)
        }
    }
}

/// `POST /api/token/verify` for a Txn-Token: any registered workload of
/// the trust domain may check one; there is nothing to consume.
fn verify_txn(
    state: &AppState,
    client: &crate::services::clients::Client,
    body: &VerifyBody,
) -> Result<Response, ApiError> {
    let audience = Audience::parse(&body.audience)
        .map_err(|e| ApiError::InvalidRequest(format!("audience: {e}")))?;
    let scope = Scope::parse(body.scope.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::InvalidRequest(format!("scope: {e}")))?;
    match state.tokens.verify_txn(&body.token, &audience, &scope) {
        Ok(claims) => {
            audit::verification(client, "verify", Ok(audit::Checked::Txn(&claims)));
            Ok(no_store(
                Json(TxnVerifyResponse {
                    active: true,
                    claims,
                })
                .into_response(),
            ))
        }
        Err(e) => {
            let error = ApiError::from(e);
            audit::verification(client, "verify", Err(&error));
            Err(error)
        }
    }
}

/// What to revoke: the token itself, or its `jti`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RevokeBody {
    Token(RevokeByToken),
    Jti(RevokeByJti),
}

/// Revocation by the token (its owner or a receiver proves who it is).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeByToken {
    /// Any string: one that is not a token of ours revokes nothing.
    pub token: String,
}

/// Revocation by token id: counts for tokens the caller obtained or
/// receives.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeByJti {
    /// A token id (`jti` claim), base64url.
    pub jti: String,
}

/// Revoke a token, by the token itself or by its `jti`.
///
/// Answers 200 whether or not the token was known (RFC 7009 style). Only
/// the client that obtained the token, or one that receives its audience,
/// can revoke it; for anyone else nothing happens.
#[utoipa::path(
    post,
    path = "/api/token/revoke",
    tag = "tokens",
    request_body = RevokeBody,
    security(("basicAuth" = [])),
    responses(
        (status = 200, description = "Done (or nothing to do)", body = Object),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_client", body = ErrorBody),
        (status = 429, description = "slow_down: rate limit, see Retry-After", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    BasicClient(client): BasicClient,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Response, ApiError> {
    let target = match &body {
        RevokeBody::Token(RevokeByToken { token }) => RevokeTarget::Token(token),
        RevokeBody::Jti(RevokeByJti { jti }) => {
            let valid = !jti.is_empty()
                && jti.len() <= 128
                && jti
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ApiError::InvalidRequest(
                    "jti must be 1 to 128 base64url characters".into(),
                ));
            }
            RevokeTarget::Jti(jti)
        }
    };
    // Revocations write to the store: the client's rate limit applies.
    rate_limit(&state, &client).await?;
    let (by, jti) = match &body {
        RevokeBody::Token(_) => ("token", None),
        RevokeBody::Jti(RevokeByJti { jti }) => ("jti", Some(jti.as_str())),
    };
    let revoked = state.tokens.revoke(&client, target).await?;
    audit::revocation(&client, by, revoked, jti);
    Ok(no_store(Json(serde_json::json!({})).into_response()))
}
