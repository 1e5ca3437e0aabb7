//! `GET /.well-known/jwks.json`: our public signing keys (RFC 7517).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::web::application::AppState;

/// The public keys that verify our tokens.
///
/// Each key has `kid` (its RFC 7638 thumbprint), `alg` and `use: sig`. Keep
/// a cached copy for at most the `Cache-Control` max-age.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "keys",
    responses(
        (status = 200, description = "JWK Set", body = Object, content_type = "application/json",
            example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "...", "kid": "...", "alg": "EdDSA", "use": "sig"}]})),
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.tokens.keys().jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
