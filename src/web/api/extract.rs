//! Extractors: a JSON body that fails in our error shape, and client
//! authentication by HTTP Basic (RFC 6749 §2.3.1).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;

use super::audit;
use super::error::{scrub, ApiError};
use crate::services::clients::auth::AuthError;
use crate::services::clients::Client;
use crate::web::application::AppState;

/// `Json<T>` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text().replace(
                "Failed to deserialize the JSON body into the target type: ",
                "",
            );
            // The path before ": " names the field; for an unknown field
            // that is the caller's own text.
            let text = match text.split_once(": ") {
                Some((_, rest)) if rest.starts_with("unknown field") => rest.to_owned(),
                _ => text,
            };
            ApiError::InvalidRequest(scrub(&text))
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::InvalidRequest("the body is not valid JSON".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::InvalidRequest("could not read the request body".into()),
    }
}

/// Client credentials as presented; holds a secret, so no `Debug`.
pub struct Credentials {
    pub client_id: String,
    pub secret: String,
}

/// Parses `Authorization: Basic ...`. Id and secret are form-urlencoded
/// before base64, as RFC 6749 §2.3.1 says; stock OAuth clients do so.
pub fn basic_credentials(parts: &Parts) -> Option<Credentials> {
    basic_credentials_from(&parts.headers)
}

/// As [`basic_credentials`], from a header map.
pub fn basic_credentials_from(headers: &axum::http::HeaderMap) -> Option<Credentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some(Credentials {
        client_id: unescape(id)?,
        secret: unescape(secret)?,
    })
}

/// A client that proved its identity with HTTP Basic.
#[derive(Debug, Clone)]
pub struct BasicClient(pub Arc<Client>);

impl FromRequestParts<AppState> for BasicClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = crate::web::server::peer(&parts.extensions).map(|a| a.ip());
        let now = state.tokens.now();
        let Some(credentials) = basic_credentials(parts) else {
            let error = state.auth.malformed(peer, now).await;
            return Err(auth_rejection("client_secret_basic", None, error));
        };
        let client = state
            .auth
            .secret(&credentials.client_id, &credentials.secret, peer, now)
            .await
            .map_err(|e| auth_rejection("client_secret_basic", Some(&credentials.client_id), e))?;
        tracing::Span::current().record("client_id", client.id.as_str());
        Ok(Self(client))
    }
}

/// The API error (and audit event) of a failed authentication.
pub fn auth_rejection(method: &'static str, claimed: Option<&str>, error: AuthError) -> ApiError {
    match error {
        AuthError::Failed { reason, known } => {
            audit::client_auth_failed(method, claimed, known, &reason);
            ApiError::InvalidClient
        }
        AuthError::Throttled(retry_after) => {
            audit::client_auth_failed(method, claimed, false, "throttled: too many failures");
            ApiError::TooManyRequests { retry_after }
        }
        AuthError::Unavailable => {
            ApiError::Unavailable("the token state store is unavailable; try again".into())
        }
    }
}
