//! `GET /.well-known/oauth-authorization-server` (RFC 8414).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::TOKEN_EXCHANGE;
use crate::token::assertion::CLIENT_ALGS;
use crate::web::application::AppState;

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
    let client_algs = || CLIENT_ALGS.iter().map(|a| a.as_str()).collect::<Vec<_>>();
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
        token_endpoint_auth_signing_alg_values_supported: client_algs(),
        introspection_endpoint_auth_methods_supported: methods.clone(),
        introspection_endpoint_auth_signing_alg_values_supported: client_algs(),
        revocation_endpoint_auth_methods_supported: methods,
        revocation_endpoint_auth_signing_alg_values_supported: client_algs(),
        access_token_signing_alg_values_supported: signing,
    })
}
