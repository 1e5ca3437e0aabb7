//! The standard OAuth 2.0 surface: `POST /oauth/token` (client credentials,
//! RFC 6749 §4.4, and token exchange, RFC 8693), `POST /oauth/introspect`
//! (RFC 7662), `POST /oauth/revoke` (RFC 7009) and the server metadata
//! (RFC 8414), so stock OAuth client libraries work unmodified.
//!
//! Requests are `application/x-www-form-urlencoded`. A parameter given
//! twice, or two client authentication methods at once, is refused
//! (RFC 6749 §3.2, §2.3).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit;
use super::error::{ApiError, ErrorBody};
use super::extract::{auth_rejection, basic_credentials_from};
use super::token::{no_store, TokenResponse};
use crate::services::clients::auth::AssertionContext;
use crate::services::clients::Client;
use crate::services::tokens::RevokeTarget;
use crate::token::assertion::{self, CLIENT_ALGS};
use crate::token::claims::AccessClaims;
use crate::token::policy::TokenRequest;
use crate::token::types::{Audience, Scope};
use crate::web::application::AppState;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A parsed form: each parameter at most once.
pub struct Form(BTreeMap<String, String>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form_type {
            return Err(ApiError::InvalidRequest(
                "expected Content-Type: application/x-www-form-urlencoded".into(),
            ));
        }
        let mut map = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            if !seen.insert(name.to_string()) {
                return Err(ApiError::InvalidRequest(format!(
                    "parameter `{}` is repeated",
                    name.chars().take(40).collect::<String>()
                )));
            }
            // RFC 6749 §3.1: parameters without a value are treated as omitted.
            if !value.is_empty() {
                map.insert(name.to_string(), value.to_string());
            }
        }
        Ok(Self(map))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    fn require(&mut self, name: &str) -> Result<String, ApiError> {
        self.take(name)
            .ok_or_else(|| ApiError::InvalidRequest(format!("missing parameter `{name}`")))
    }
}

/// Authenticates the caller by exactly one of `client_secret_basic`,
/// `client_secret_post` and `private_key_jwt`, through the one
/// authenticator (and its failure limit).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    form: &mut Form,
) -> Result<Arc<Client>, ApiError> {
    let basic = headers.contains_key(header::AUTHORIZATION);
    let post = form.0.contains_key("client_secret");
    let jwt = form.0.contains_key("client_assertion");
    if [basic, post, jwt].iter().filter(|m| **m).count() > 1 {
        return Err(ApiError::InvalidRequest(
            "use exactly one client authentication method".into(),
        ));
    }
    let now = state.tokens.now();
    let form_client_id = form.take("client_id");
    let client = if basic {
        let Some(credentials) = basic_credentials_from(headers) else {
            let error = state.auth.malformed(peer, now).await;
            return Err(auth_rejection("client_secret_basic", None, error));
        };
        if form_client_id
            .as_ref()
            .is_some_and(|id| *id != credentials.client_id)
        {
            return Err(ApiError::InvalidRequest(
                "client_id does not match the Basic credentials".into(),
            ));
        }
        state
            .auth
            .secret(&credentials.client_id, &credentials.secret, peer, now)
            .await
            .map_err(|e| auth_rejection("client_secret_basic", Some(&credentials.client_id), e))?
    } else if post {
        let secret = form.require("client_secret")?;
        let id = form_client_id
            .ok_or_else(|| ApiError::InvalidRequest("missing parameter `client_id`".into()))?;
        state
            .auth
            .secret(&id, &secret, peer, now)
            .await
            .map_err(|e| auth_rejection("client_secret_post", Some(&id), e))?
    } else if jwt {
        let assertion_type = form.require("client_assertion_type")?;
        if assertion_type != JWT_BEARER {
            return Err(ApiError::InvalidRequest(format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
        let jwt = form.require("client_assertion")?;
        let issuer = state.tokens.issuer().trim_end_matches('/');
        let audiences: Vec<String> = [
            state.tokens.issuer().to_owned(),
            issuer.to_owned(),
            format!("{issuer}/oauth/token"),
            format!("{issuer}/oauth/introspect"),
            format!("{issuer}/oauth/revoke"),
        ]
        .into();
        let context = AssertionContext {
            audiences: &audiences,
            leeway: state.tokens.leeway(),
            now,
        };
        let claimed = assertion::claimed_client(&jwt);
        state
            .auth
            .assertion(&jwt, form_client_id.as_deref(), &context, peer)
            .await
            .map_err(|e| auth_rejection("private_key_jwt", claimed.as_deref(), e))?
    } else {
        let error = state.auth.malformed(peer, now).await;
        return Err(auth_rejection("none", None, error));
    };
    tracing::Span::current().record("client_id", client.id.as_str());
    Ok(client)
}

/// An authenticated OAuth request: the caller and the rest of its form.
/// Reading the body and authenticating live here so the three endpoints
/// cannot differ in how they do it.
pub struct OAuthRequest {
    client: Arc<Client>,
    form: Form,
}

impl axum::extract::FromRequest<AppState> for OAuthRequest {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let headers = request.headers().clone();
        let peer = crate::web::server::peer(request.extensions()).map(|a| a.ip());
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| match e.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::InvalidRequest("could not read the request body".into()),
            })?;
        let mut form = Form::parse(&headers, &body)?;
        let client = authenticate(state, &headers, peer, &mut form).await?;
        Ok(Self { client, form })
    }
}

/// The form of `POST /oauth/token` (documentation; parsed by hand so that
/// repeated parameters are refused).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// `client_credentials` or `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(example = "client_credentials")]
    grant_type: String,
    /// Target API (RFC 8693); or use `resource` (RFC 8707).
    #[schema(example = "ledger")]
    audience: Option<String>,
    /// Target API as a resource indicator (RFC 8707).
    resource: Option<String>,
    /// Space-separated scopes.
    scope: Option<String>,
    /// `client_secret_post`: the client id.
    client_id: Option<String>,
    /// `client_secret_post`: the secret.
    client_secret: Option<String>,
    /// `private_key_jwt`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    client_assertion_type: Option<String>,
    /// `private_key_jwt`: the signed assertion (RFC 7523).
    client_assertion: Option<String>,
    /// Token exchange: the token to exchange, addressed to the caller.
    subject_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token` (or `...:jwt`).
    subject_token_type: Option<String>,
    /// Token exchange: only `urn:ietf:params:oauth:token-type:access_token`.
    requested_token_type: Option<String>,
}

/// A token from the OAuth token endpoint.
#[derive(Serialize, ToSchema)]
pub struct OAuthTokenResponse {
    #[serde(flatten)]
    pub token: TokenResponse,
    /// Token exchange only: `urn:ietf:params:oauth:token-type:access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

fn target(form: &mut Form) -> Result<Audience, ApiError> {
    let audience = form.take("audience");
    let resource = form.take("resource");
    let value = match (audience, resource) {
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
    Audience::parse(&value).map_err(|e| ApiError::InvalidTarget(e.to_string()))
}

/// Applies the grant of a token request; rate limit first.
async fn grant_token(
    state: &AppState,
    client: &Client,
    form: &mut Form,
) -> Result<(crate::token::issue::IssuedToken, Option<&'static str>), ApiError> {
    state
        .rate_limits
        .check_shared(client.id.as_str(), client.rate_limit)
        .await
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let grant_type = form.require("grant_type")?;
    let scope = form
        .take("scope")
        .map(|s| Scope::parse(&s))
        .transpose()
        .map_err(|e| ApiError::InvalidScope(e.to_string()))?;
    match grant_type.as_str() {
        "client_credentials" => {
            let audience = target(form)?;
            let request = TokenRequest {
                audience,
                scope: scope.unwrap_or_default(),
                ttl: None,
                once: false,
                bind: None,
            };
            Ok((state.tokens.issue(client, request).await?, None))
        }
        TOKEN_EXCHANGE => {
            let subject_token = form.require("subject_token")?;
            let subject_type = form.require("subject_token_type")?;
            if subject_type != ACCESS_TOKEN_TYPE && subject_type != JWT_TOKEN_TYPE {
                return Err(ApiError::InvalidRequest(format!(
                    "subject_token_type must be {ACCESS_TOKEN_TYPE}"
                )));
            }
            if form
                .take("requested_token_type")
                .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
            {
                return Err(ApiError::InvalidRequest(format!(
                    "requested_token_type can only be {ACCESS_TOKEN_TYPE}"
                )));
            }
            if form.0.contains_key("actor_token") {
                return Err(ApiError::InvalidRequest(
                    "actor_token is not supported: the authenticated client is the actor".into(),
                ));
            }
            let audience = target(form)?;
            let issued = state
                .tokens
                .exchange(client, &subject_token, audience, scope)
                .await?;
            Ok((issued, Some(ACCESS_TOKEN_TYPE)))
        }
        _ => Err(ApiError::UnsupportedGrantType),
    }
}

/// Get a token: client credentials or token exchange.
///
/// Client authentication: `client_secret_basic`, `client_secret_post` or
/// `private_key_jwt` (RFC 7523), exactly one. The same policy as
/// `POST /api/token` applies. Token exchange keeps the subject, records the
/// chain in `act`, only narrows scope and never outlives the subject token.
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
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    OAuthRequest { client, mut form }: OAuthRequest,
) -> Result<Response, ApiError> {
    let audience = form
        .0
        .get("audience")
        .or_else(|| form.0.get("resource"))
        .filter(|a| Audience::parse(a).is_ok())
        .cloned();
    let grant = match form.0.get("grant_type").map(String::as_str) {
        Some("client_credentials") => "client_credentials",
        Some(TOKEN_EXCHANGE) => "token_exchange",
        _ => "other",
    };
    let (issued, issued_token_type) = match grant_token(&state, &client, &mut form).await {
        Ok(done) => done,
        Err(e) => {
            audit::token_denied(&client, audience.as_deref(), grant, &e);
            return Err(e);
        }
    };
    audit::token_issued(&client, &issued.claims, grant);
    let response = OAuthTokenResponse {
        token: TokenResponse {
            expires_in: issued.claims.exp.saturating_sub(issued.claims.iat),
            scope: issued.claims.scope.clone().unwrap_or_default(),
            access_token: issued.token,
            token_type: "Bearer",
        },
        issued_token_type,
    };
    Ok(no_store(Json(response).into_response()))
}

/// The form of introspection and revocation requests.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenOnlyForm {
    /// The token.
    token: String,
    /// Ignored: only access tokens exist here.
    token_type_hint: Option<String>,
}

/// An introspection answer: `{"active": false}` alone, or the claims.
#[derive(Serialize, ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<AccessClaims>,
}

/// Introspect a token (RFC 7662).
///
/// The caller authenticates like at the token endpoint. Active tokens
/// addressed to an audience the caller receives come back with their
/// claims; anything else — expired, revoked, used, malformed, foreign, not
/// addressed to the caller — is `{"active": false}` and nothing more.
/// Introspection never consumes a single-use token.
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
    OAuthRequest { client, mut form }: OAuthRequest,
) -> Result<Response, ApiError> {
    let token = form.require("token")?;
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
        Some(claims) => audit::verification(&client, "introspect", Ok(claims)),
        None => audit::verification(
            &client,
            "introspect",
            Err(&ApiError::InvalidToken("inactive".into())),
        ),
    }
    let answer = Introspection {
        active: claims.is_some(),
        token_type: claims.as_ref().map(|_| "Bearer"),
        claims,
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
    OAuthRequest { client, mut form }: OAuthRequest,
) -> Result<Response, ApiError> {
    let token = form.require("token")?;
    state
        .rate_limits
        .check_shared(client.id.as_str(), client.rate_limit)
        .await
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let applied = state
        .tokens
        .revoke(&client, RevokeTarget::Token(&token))
        .await?;
    audit::revocation(&client, "token", applied, None);
    Ok(no_store(axum::http::StatusCode::OK.into_response()))
}

/// Authorization server metadata (RFC 8414).
#[derive(Serialize, ToSchema)]
pub struct Metadata {
    issuer: String,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    jwks_uri: String,
    service_documentation: String,
    grant_types_supported: Vec<&'static str>,
    response_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    /// Algorithms of the tokens we sign (all keys in the JWKS).
    access_token_signing_alg_values_supported: Vec<&'static str>,
}

/// OAuth 2.0 authorization server metadata (RFC 8414).
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "oauth",
    responses((status = 200, description = "Server metadata", body = Metadata))
)]
pub async fn metadata(State(state): State<AppState>) -> Json<Metadata> {
    let issuer = state.tokens.issuer().trim_end_matches('/');
    let methods = vec![
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];
    let mut signing: Vec<&'static str> = state
        .tokens
        .keys()
        .info()
        .iter()
        .filter(|k| k.state.is_published())
        .map(|k| k.alg.as_str())
        .collect();
    signing.sort_unstable();
    signing.dedup();
    Json(Metadata {
        issuer: state.tokens.issuer().to_owned(),
        token_endpoint: format!("{issuer}/oauth/token"),
        introspection_endpoint: format!("{issuer}/oauth/introspect"),
        revocation_endpoint: format!("{issuer}/oauth/revoke"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        service_documentation: format!("{issuer}/api/docs"),
        grant_types_supported: vec!["client_credentials", TOKEN_EXCHANGE],
        response_types_supported: vec![],
        token_endpoint_auth_methods_supported: methods.clone(),
        token_endpoint_auth_signing_alg_values_supported: CLIENT_ALGS
            .iter()
            .map(|a| a.as_str())
            .collect(),
        introspection_endpoint_auth_methods_supported: methods.clone(),
        introspection_endpoint_auth_signing_alg_values_supported: CLIENT_ALGS
            .iter()
            .map(|a| a.as_str())
            .collect(),
        revocation_endpoint_auth_methods_supported: methods,
        revocation_endpoint_auth_signing_alg_values_supported: CLIENT_ALGS
            .iter()
            .map(|a| a.as_str())
            .collect(),
        access_token_signing_alg_values_supported: signing,
    })
}
