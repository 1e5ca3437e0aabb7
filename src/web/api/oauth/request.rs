//! [`OAuthRequest`]: an OAuth form request, read and authenticated in one
//! place, so the three endpoints cannot differ in how they do it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::FromRequest;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::form::{self, ClientParams};
use crate::services::clients::auth::AssertionContext;
use crate::services::clients::Client;
use crate::token::assertion;
use crate::web::api::error::ApiError;
use crate::web::api::extract::{auth_rejection, basic_credentials_from};
use crate::web::application::AppState;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An authenticated OAuth request: the caller and its parsed form `F`.
pub struct OAuthRequest<F> {
    pub client: Arc<Client>,
    pub form: F,
    /// How the client authenticated (its OAuth method name).
    pub method: &'static str,
}

impl<F: DeserializeOwned + Send> FromRequest<AppState> for OAuthRequest<F> {
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
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::InvalidRequest("could not read the request body".into()),
            })?;
        let (params, form) = form::parse::<F>(&headers, &body)?;
        let (client, method) = authenticate(state, &headers, peer, params).await?;
        Ok(Self {
            client,
            form,
            method,
        })
    }
}

/// Authenticates the caller by exactly one of `client_secret_basic`,
/// `client_secret_post` and `private_key_jwt`, through the one
/// authenticator (and its failure limit).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    params: ClientParams,
) -> Result<(Arc<Client>, &'static str), ApiError> {
    let basic = headers.contains_key(header::AUTHORIZATION);
    let post = params.client_secret.is_some();
    let jwt = params.client_assertion.is_some();
    if [basic, post, jwt].iter().filter(|m| **m).count() > 1 {
        return Err(ApiError::InvalidRequest(
            "use exactly one client authentication method".into(),
        ));
    }
    let now = state.tokens.now();
    let method = if basic {
        "client_secret_basic"
    } else if post {
        "client_secret_post"
    } else {
        "private_key_jwt"
    };
    let client = if basic {
        let Some(credentials) = basic_credentials_from(headers) else {
            let error = state.auth.malformed(peer, now).await;
            return Err(auth_rejection("client_secret_basic", None, error));
        };
        if params
            .client_id
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
    } else if let Some(secret) = params.client_secret {
        let id = params
            .client_id
            .ok_or_else(|| ApiError::InvalidRequest("missing parameter `client_id`".into()))?;
        state
            .auth
            .secret(&id, &secret, peer, now)
            .await
            .map_err(|e| auth_rejection("client_secret_post", Some(&id), e))?
    } else if let Some(jwt) = params.client_assertion {
        if params.client_assertion_type.as_deref() != Some(JWT_BEARER) {
            return Err(ApiError::InvalidRequest(format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
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
            .assertion(&jwt, params.client_id.as_deref(), &context, peer)
            .await
            .map_err(|e| auth_rejection("private_key_jwt", claimed.as_deref(), e))?
    } else {
        let error = state.auth.malformed(peer, now).await;
        return Err(auth_rejection("none", None, error));
    };
    tracing::Span::current().record("client_id", client.id.as_str());
    Ok((client, method))
}
