//! The standard OAuth 2.0 surface: `POST /oauth/token` (client credentials,
//! RFC 6749 §4.4, and token exchange, RFC 8693), `POST /oauth/introspect`
//! (RFC 7662), `POST /oauth/revoke` (RFC 7009) and the server metadata
//! (RFC 8414), so stock OAuth client libraries work unmodified.
//!
//! Requests are `application/x-www-form-urlencoded`, read by [`form`] into
//! the documented form types; [`request`] authenticates the caller;
//! [`metadata`] serves RFC 8414. A parameter given twice, or two client
//! authentication methods at once, is refused (RFC 6749 §3.2, §2.3).

pub mod form;
mod metadata;
mod request;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

pub use self::form::{TokenForm, TokenOnlyForm};
pub use self::metadata::{__path_metadata, metadata, Metadata};
use self::request::OAuthRequest;
use super::audit;
use super::error::{ApiError, ErrorBody};
use super::token::{no_store, rate_limit, TokenResponse};
use crate::services::clients::Client;
use crate::services::tokens::{IssuedTxn, RevokeTarget, SubjectType, TxnRequest};
use crate::token::claims::AccessClaims;
use crate::token::policy::TokenRequest;
use crate::token::types::{Audience, Scope};
use crate::web::application::AppState;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const TXN_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:txn_token";
/// The largest `request_context` or `request_details` accepted.
const MAX_CONTEXT_BYTES: usize = 2048;

/// A token from the OAuth token endpoint.
#[derive(Serialize, ToSchema)]
pub struct OAuthTokenResponse {
    #[serde(flatten)]
    pub token: TokenResponse,
    /// Token exchange only: `urn:ietf:params:oauth:token-type:access_token`,
    /// or `urn:ietf:params:oauth:token-type:txn_token` (then `token_type` is
    /// `N_A`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// The form's `scope`, if given.
fn form_scope(form: &TokenForm) -> Result<Option<Scope>, ApiError> {
    form.scope
        .as_deref()
        .map(Scope::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidScope(e.to_string()))
}

/// A JSON object given as a form parameter (`request_context`,
/// `request_details`), bounded.
fn json_object(
    name: &str,
    value: Option<&str>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    if text.len() > MAX_CONTEXT_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "{name} is larger than {MAX_CONTEXT_BYTES} bytes"
        )));
    }
    match serde_json::from_str(text) {
        // Bounded as written into the token too: numbers may grow when
        // written again (1e15 becomes 1000000000000000.0).
        Ok(serde_json::Value::Object(map))
            if serde_json::to_string(&map).is_ok_and(|t| t.len() <= MAX_CONTEXT_BYTES) =>
        {
            Ok(Some(map))
        }
        Ok(serde_json::Value::Object(_)) => Err(ApiError::InvalidRequest(format!(
            "{name} is larger than {MAX_CONTEXT_BYTES} bytes"
        ))),
        _ => Err(ApiError::InvalidRequest(format!(
            "{name} must be a JSON object"
        ))),
    }
}

/// A Txn-Token request (RFC 8693 with `requested_token_type` txn_token).
async fn grant_txn_token(
    state: &AppState,
    client: &Client,
    form: &TokenForm,
    subject_token: &str,
    subject_type: &str,
    method: &'static str,
) -> Result<(IssuedTxn, SubjectType), ApiError> {
    let subject_type = match subject_type {
        ACCESS_TOKEN_TYPE => SubjectType::AccessToken,
        JWT_TOKEN_TYPE => SubjectType::Jwt,
        TXN_TOKEN_TYPE => SubjectType::TxnToken,
        _ => {
            return Err(ApiError::InvalidRequest(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}, {JWT_TOKEN_TYPE} or {TXN_TOKEN_TYPE}"
        )))
        }
    };
    let scope = form_scope(form)?;
    if scope.is_none() && subject_type != SubjectType::TxnToken {
        return Err(ApiError::InvalidRequest("missing parameter `scope`".into()));
    }
    let request = TxnRequest {
        subject_token,
        subject_type,
        audience: target(form)?,
        scope,
        request_context: json_object("request_context", form.request_context.as_deref())?,
        request_details: json_object("request_details", form.request_details.as_deref())?,
        authn: method,
    };
    Ok((state.tokens.txn_token(client, request).await?, subject_type))
}

fn target(form: &TokenForm) -> Result<Audience, ApiError> {
    let value = match (&form.audience, &form.resource) {
        (Some(a), Some(r)) if a != r => {
            return Err(ApiError::InvalidTarget(
                "audience and resource name different targets: one audience per token".into(),
            ))
        }
        (Some(a), _) => a,
        (None, Some(r)) => r,
        (None, None) => {
            return Err(ApiError::InvalidTarget(
                "name the target API with `audience` or `resource`".into(),
            ))
        }
    };
    Audience::parse(value).map_err(|e| ApiError::InvalidTarget(e.to_string()))
}

/// Applies the grant of a token request; rate limit first.
async fn grant_token(
    state: &AppState,
    client: &Client,
    form: &TokenForm,
    method: &'static str,
) -> Result<Granted, ApiError> {
    rate_limit(state, client).await?;
    match form.grant_type.as_str() {
        "client_credentials" => {
            let request = TokenRequest {
                audience: target(form)?,
                scope: form_scope(form)?.unwrap_or_default(),
                ttl: None,
                once: false,
                bind: None,
            };
            Ok(Granted::Token(
                state.tokens.issue(client, request).await?,
                None,
            ))
        }
        TOKEN_EXCHANGE => {
            let missing =
                |name: &str| ApiError::InvalidRequest(format!("missing parameter `{name}`"));
            let subject_token = form
                .subject_token
                .as_deref()
                .ok_or_else(|| missing("subject_token"))?;
            let subject_type = form
                .subject_token_type
                .as_deref()
                .ok_or_else(|| missing("subject_token_type"))?;
            if form.actor_token.is_some() {
                return Err(ApiError::InvalidRequest(
                    "actor_token is not supported: the authenticated client is the actor".into(),
                ));
            }
            match form.requested_token_type.as_deref() {
                Some(TXN_TOKEN_TYPE) => {
                    let (issued, subject) =
                        grant_txn_token(state, client, form, subject_token, subject_type, method)
                            .await?;
                    Ok(Granted::Txn(issued, subject))
                }
                None | Some(ACCESS_TOKEN_TYPE) => {
                    if subject_type != ACCESS_TOKEN_TYPE && subject_type != JWT_TOKEN_TYPE {
                        return Err(ApiError::InvalidRequest(format!(
                            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
                        )));
                    }
                    let issued = state
                        .tokens
                        .exchange(client, subject_token, target(form)?, form_scope(form)?)
                        .await?;
                    Ok(Granted::Token(issued, Some(ACCESS_TOKEN_TYPE)))
                }
                Some(_) => Err(ApiError::InvalidRequest(format!(
                    "requested_token_type can only be {ACCESS_TOKEN_TYPE} or {TXN_TOKEN_TYPE}"
                ))),
            }
        }
        _ => Err(ApiError::UnsupportedGrantType),
    }
}

/// What the token endpoint issued.
enum Granted {
    /// An access token, with its `issued_token_type` for an exchange.
    Token(crate::token::issue::IssuedToken, Option<&'static str>),
    /// A Transaction Token, and the kind of subject it came from.
    Txn(IssuedTxn, SubjectType),
}

/// Get a token: client credentials or token exchange.
///
/// Client authentication: `client_secret_basic`, `client_secret_post` or
/// `private_key_jwt` (RFC 7523), exactly one. Access tokens follow the same
/// policy as `POST /api/token`. Token exchange keeps the subject, records
/// the chain in `act`, only narrows scope and never outlives the subject
/// token. With `requested_token_type=urn:ietf:params:oauth:token-type:txn_token`
/// it issues a Transaction Token for a client registered with
/// `--txn-token`: the audience is the trust domain, the scope is bounded by
/// the subject token's (not the client's registered scopes), `token_type`
/// is `N_A`.
#[utoipa::path(
    post,
    path = "/oauth/token",
    tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("basicAuth" = [])),
    responses(
        (status = 200, description = "Token issued", body = OAuthTokenResponse,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "invalid_request, invalid_grant, invalid_scope, invalid_target, unauthorized_client or unsupported_grant_type", body = ErrorBody),
        (status = 401, description = "invalid_client", body = ErrorBody),
        (status = 429, description = "slow_down: rate limit, see Retry-After", body = ErrorBody),
        (status = 503, description = "Store unavailable, or a trusted issuer's keys cannot be fetched", body = ErrorBody),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    OAuthRequest {
        client,
        form,
        method,
    }: OAuthRequest<TokenForm>,
) -> Result<Response, ApiError> {
    let audience = form
        .audience
        .as_ref()
        .or(form.resource.as_ref())
        .filter(|a| Audience::parse(a).is_ok())
        .cloned();
    let grant = match (
        form.grant_type.as_str(),
        form.requested_token_type.as_deref(),
    ) {
        ("client_credentials", _) => "client_credentials",
        (TOKEN_EXCHANGE, Some(TXN_TOKEN_TYPE)) => "txn_token",
        (TOKEN_EXCHANGE, _) => "token_exchange",
        _ => "other",
    };
    let response = match grant_token(&state, &client, &form, method).await {
        Ok(Granted::Token(issued, issued_token_type)) => {
            audit::token_issued(&client, &issued.claims, grant);
            OAuthTokenResponse {
                token: TokenResponse::from(issued),
                issued_token_type,
            }
        }
        Ok(Granted::Txn(issued, subject)) => {
            audit::txn_token_issued(&client, &issued.claims, subject.as_str());
            OAuthTokenResponse {
                token: TokenResponse::from(issued),
                issued_token_type: Some(TXN_TOKEN_TYPE),
            }
        }
        Err(e) => {
            audit::token_denied(&client, audience.as_deref(), grant, &e);
            return Err(e);
        }
    };
    Ok(no_store(Json(response).into_response()))
}

/// An introspection answer: `{"active": false}` alone, or the claims.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Introspection {
    Active(Box<ActiveToken>),
    Inactive(InactiveToken),
}

/// An active token: `active: true`, `token_type` and its claims.
#[derive(Serialize, ToSchema)]
pub struct ActiveToken {
    /// Always true.
    pub active: bool,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    #[serde(flatten)]
    pub claims: AccessClaims,
}

/// Anything else (expired, revoked, used, malformed, foreign): nothing but
/// `active: false`.
#[derive(Serialize, ToSchema)]
pub struct InactiveToken {
    /// Always false.
    pub active: bool,
}

/// Introspect a token (RFC 7662).
///
/// The caller authenticates like at the token endpoint. Active tokens
/// addressed to an audience the caller receives come back with their
/// claims; anything else — expired, revoked, used, malformed, foreign, not
/// addressed to the caller — is `{"active": false}` and nothing more.
/// A single-use token is consumed by its first active introspection, as
/// by verification: RFC 7662 clients do not know the `once` claim, so
/// answering active twice would let it be replayed.
#[utoipa::path(
    post,
    path = "/oauth/introspect",
    tag = "oauth",
    request_body(content = TokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("basicAuth" = [])),
    responses(
        (status = 200, description = "Introspection result", body = Introspection),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_client", body = ErrorBody),
        (status = 503, description = "Store unavailable: nothing is reported active", body = ErrorBody),
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    OAuthRequest { client, form, .. }: OAuthRequest<TokenOnlyForm>,
) -> Result<Response, ApiError> {
    let token = form.token;
    let claims = state
        .tokens
        .introspect(&client, &token)
        .await
        .map_err(|e| {
            let error = ApiError::from(e);
            audit::verification(&client, "introspect", Err(&error));
            error
        })?;
    match &claims {
        Some(claims) => {
            audit::verification(&client, "introspect", Ok(audit::Checked::Access(claims)))
        }
        None => audit::verification(
            &client,
            "introspect",
            Err(&ApiError::InvalidToken("inactive".into())),
        ),
    }
    let answer = match claims {
        Some(claims) => Introspection::Active(Box::new(ActiveToken {
            active: true,
            token_type: "Bearer",
            claims,
        })),
        None => Introspection::Inactive(InactiveToken { active: false }),
    };
    Ok(no_store(Json(answer).into_response()))
}

/// Revoke a token (RFC 7009).
///
/// 200 whether or not the token was known or valid. Only the client that
/// obtained the token, or one that receives its audience, can revoke it.
#[utoipa::path(
    post,
    path = "/oauth/revoke",
    tag = "oauth",
    request_body(content = TokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("basicAuth" = [])),
    responses(
        (status = 200, description = "Done (or nothing to do)"),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "invalid_client", body = ErrorBody),
        (status = 429, description = "slow_down: rate limit, see Retry-After", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    OAuthRequest { client, form, .. }: OAuthRequest<TokenOnlyForm>,
) -> Result<Response, ApiError> {
    let token = form.token;
    rate_limit(&state, &client).await?;
    let applied = state
        .tokens
        .revoke(&client, RevokeTarget::Token(&token))
        .await?;
    audit::revocation(&client, "token", applied, None);
    Ok(no_store(axum::http::StatusCode::OK.into_response()))
}
